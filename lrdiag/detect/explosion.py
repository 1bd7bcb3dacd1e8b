"""Explosion: a run's main training or validation loss climbs to many times its starting level.

The starting level is the median of the first three points, the climb is judged on a 5-point rolling
median (one bad batch is a spike, not an explosion) and must hold for `min_points` points,
unless it ends the series in NaN/Inf, the usual end of an explosion. A climb the loss comes back
from for good, staying back to the end of the run for twice as long as it lasted, is a
transient, left to the spike rule (a x100 excursion that is over within tens of steps). The
starting level is the loss of the untrained model; the ordinary rises of a healthy run
(warmup bumps, an LR restart, a harder curriculum stage) stay below it, so five times above it
is a run that has lost everything it learned and more. The finding
starts where the climb began: the last point at most twice the lowest level before it.
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import Context, Hit, clean
from lrdiag.detect.robust import rolling_median, runs_of
from lrdiag.series.model import Series


def detect(series: Series, ctx: Context, factor: float = 5.0, min_points: int = 3) -> list[Hit]:
    if series is not ctx.train_loss and series is not ctx.val_loss:
        return []  # a component (a PINN's boundary term, a detector's box loss) may rise by design
    steps, values = clean(series)
    # A climb cut short by NaN/Inf (the usual end of one) counts however few points it has.
    ends_nonfinite = bool(series.values.size and not np.isfinite(series.values[-1]))
    if values.size < (2 if ends_nonfinite else 2 * min_points) or (values <= 0).any():
        return []  # a ratio to the start means nothing for a loss that can be zero or negative
    head = min(3, values.size - 1)  # the untrained model's loss: the first logged points
    start = float(np.median(values[:head]))
    smooth = rolling_median(values, 5)
    above = smooth >= factor * start
    above[:head] = False  # the start itself cannot be above the start
    if ends_nonfinite and values[-1] >= factor * start:
        above[-1] = True  # the last finite point, raw: a rolling median lags behind the blow-up
    stretches = [(a, b) for a, b in runs_of(above)
                 if b - a + 1 >= min_points or (ends_nonfinite and b == values.size - 1)]
    # An excursion the loss comes back from, and stays back from to the end of the run for twice
    # as long as it lasted, is a transient in the run's history: a spike (LRD101), however tall;
    # whatever follows it (a stall back at the starting level, say) is for the other rules.
    stretches = [(a, b) for i, (a, b) in enumerate(stretches)
                 if i < len(stretches) - 1 or values.size - 1 - b < 2 * (b - a + 1) or ends_nonfinite]
    if not stretches:
        return []
    first, last = stretches[0][0], stretches[-1][1]
    peak = first + int(np.argmax(values[first:last + 1]))
    # The climb began where the loss last sat near its lowest level before crossing the factor.
    low = float(smooth[: first + 1].min())
    climb = int(np.flatnonzero(smooth[: first + 1] <= 2 * low)[-1])
    return [Hit(int(steps[climb]), int(steps[last]),
                {"step": int(steps[climb]), "crossed_step": int(steps[first]), "start_level": start, "start_points": head,
                 "start_how": f"the median of its first {head} points" if head > 1 else "its first logged value",
                 "peak": float(values[peak]),
                 "peak_step": int(steps[peak]), "ratio": float(values[peak] / start)})]
