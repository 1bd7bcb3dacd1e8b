"""Non-finite values: NaN or Inf in a loss; the first step is where the run broke."""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import Context, Hit
from lrdiag.series.model import Series


def detect(series: Series, ctx: Context) -> list[Hit]:
    bad = ~np.isfinite(series.values)
    if not bad.any():
        return []
    first = int(np.argmax(bad))
    kinds = sorted({"NaN" if np.isnan(v) else ("+Inf" if v > 0 else "-Inf") for v in series.values[bad][:1000]})
    finite_after = bool(np.isfinite(series.values[first:]).any())
    return [Hit(int(series.steps[first]), int(series.steps[bad][-1]),
                {"step": int(series.steps[first]), "count": int(bad.sum()), "kinds": "/".join(kinds),
                 "last_finite": float(series.values[:first][np.isfinite(series.values[:first])][-1])
                 if np.isfinite(series.values[:first]).any() else None,
                 "finite_after": finite_after})]
