"""Train/val divergence: validation loss turns upward after its best step while training loss
keeps falling (overfitting); the best step is where early stopping would have stopped.

Validation is often logged once an epoch, so the series may have a dozen points; its noise is
measured from its own point-to-point differences (MAD). The rise counts when the level at the
end (median of the last points) sits above the best value by `min_rise` (relative) and by
`z` noise sigmas, and at least `min_after` points after the best all stay above it; training
loss over the same stretch must have fallen, or the run is not overfitting but getting worse
everywhere (left to the other rules).
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import Context, Hit, clean
from lrdiag.detect.robust import MAD_TO_SIGMA, log_scale, rolling_median
from lrdiag.series.model import Series


def detect(series: Series, ctx: Context, min_rise: float = 0.1, z: float = 3.0, min_after: int = 3) -> list[Hit]:
    train = ctx.train_loss
    if train is None:
        return []
    steps, values = clean(series)
    if values.size < min_after + 3:
        return []
    y, is_log = log_scale(values)
    smooth = rolling_median(y, 3) if values.size < 30 else rolling_median(y, max(3, values.size // 20) | 1)
    best = int(np.argmin(smooth))
    after = values.size - 1 - best
    if after < min_after:
        return []
    tail = max(min_after, after // 3)
    end_level = float(np.median(y[-tail:]))
    noise = MAD_TO_SIGMA * float(np.median(np.abs(np.diff(y)))) / np.sqrt(2)
    rise = end_level - smooth[best]
    relative_rise = float(np.expm1(rise)) if is_log else rise / max(abs(float(smooth[best])), 1e-12)
    if relative_rise < min_rise or rise < z * noise:
        return []
    train_steps, train_values = clean(train)
    train_before = _level_near(train_steps, train_values, steps[best])
    train_end = _level_near(train_steps, train_values, steps[-1])
    if train_before is None or train_end is None or not train_end < train_before:
        return []
    best_value = float(values[best]) if not is_log else float(np.exp(smooth[best]))
    end_value = float(np.exp(end_level)) if is_log else end_level
    return [Hit(int(steps[best]), int(steps[-1]),
                {"best_step": int(steps[best]), "best": best_value, "end": end_value,
                 "rise_pct": float(100 * relative_rise), "train_loss": train.tag,
                 "train_at_best": train_before, "train_end": train_end,
                 "train_change_pct": float(100 * (train_end / train_before - 1)) if train_before > 0 else None,
                 "points_after_best": int(after)})]


def _level_near(steps: np.ndarray, values: np.ndarray, step: int) -> float | None:
    """Median of the training loss over the few logged points nearest a step (it is noisier)."""
    if values.size == 0:
        return None
    count = max(3, values.size // 50)
    at = int(np.searchsorted(steps, step))
    lo = max(0, min(at - count // 2, values.size - count))
    return float(np.median(values[lo:lo + count]))
