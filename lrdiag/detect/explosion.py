"""Explosion: a loss that climbs to many times its starting level and stays there.

The starting level is the median of the first points, the climb is judged on a 5-point rolling
median (one bad batch is a spike, not an explosion) and must hold for `min_points` points. A
factor of 10 is far beyond the ordinary rise of a loss (warmup bumps, an LR restart, a
harder curriculum stage rarely double it), so a healthy run never reaches it.
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import Context, Hit, clean
from lrdiag.detect.robust import rolling_median, runs_of
from lrdiag.series.model import Series


def detect(series: Series, ctx: Context, factor: float = 10.0, min_points: int = 3) -> list[Hit]:
    steps, values = clean(series)
    if values.size < 2 * min_points or (values <= 0).any():
        return []  # a ratio to the start means nothing for a loss that can be zero or negative
    start = float(np.median(values[: max(3, values.size // 50)]))
    smooth = rolling_median(values, 5)
    above = smooth >= factor * start
    stretches = [(a, b) for a, b in runs_of(above) if b - a + 1 >= min_points]
    if not stretches:
        return []
    first, last = stretches[0][0], stretches[-1][1]
    peak = first + int(np.argmax(values[first:last + 1]))
    return [Hit(int(steps[first]), int(steps[last]),
                {"step": int(steps[first]), "start_level": start, "peak": float(values[peak]),
                 "peak_step": int(steps[peak]), "ratio": float(values[peak] / start)})]
