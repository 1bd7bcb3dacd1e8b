"""Train/val divergence: validation loss turns upward after its best step while training loss
keeps falling (overfitting); the best step is where early stopping would have stopped.

Validation is often logged once an epoch, and a fine-tuning run evaluates only 3 to 8 times, so
the series may have a handful of points. A short one (under 30 points) is taken as logged: its
best is its lowest evaluation, the checkpoint early stopping keeps; a longer one is smoothed by a
rolling median first. A rise after the best counts in either of two ways:
- **a level rise**: the end (the median of the last third of the points after the best; of at
  least `min_after` points on a long series) sits above the best by `min_rise` (relative) and by
  `z` noise sigmas, with at least `min_after` points after the best, and on a short series the
  median of all the points after the best is half that far above it (one bad evaluation is not a
  trend). The noise comes from the second differences (MAD / sqrt 6): a steady rise has none, so
  it cannot pass for noise, as it did when the noise was read off the first differences;
- **a steady trend**: over eight points or more after the best, a Mann-Kendall trend statistic
  of `z` or more (later points lie above earlier ones far more often than noise allows) and a
  Theil-Sen line rising by three quarters of `min_rise` or more (a line through every point is
  surer than a median of the last few, not twice as sure: a healthy run may drift up 5 % at its
  end): a slow rise without a break (10 % over
  two thirds of a long Keras run) whose end median has not yet cleared `min_rise`.
Training loss over the same stretch must have fallen, or the run is not overfitting but getting
worse everywhere (left to the other rules): its median over the training between evaluations
around the best one against the same around the last one.
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import Context, Hit, clean
from lrdiag.detect.robust import MAD_TO_SIGMA, block_medians, kendall_z, log_scale, rolling_median, theil_sen_slope
from lrdiag.series.model import Series
from lrdiag.series.roles import component

_TREND_POINTS = 8  # a trend statistic over fewer points cannot reach z 3 however steady the rise
_SHORT = 30  # fewer points: evaluations, taken as logged


def _training_loss(series: Series, ctx: Context) -> Series | None:
    """The training loss a validation loss is judged against: the same component (YOLO's
    `val/obj_loss` against `train/obj_loss`, not against the main `train/box_loss`), else the main one."""
    same = [s for s in ctx.run.by_role("train_loss") if component(s.tag) == component(series.tag)]
    return same[0] if same else ctx.train_loss


def detect(series: Series, ctx: Context, min_rise: float = 0.1, z: float = 3.0, min_after: int = 2) -> list[Hit]:
    train = _training_loss(series, ctx)
    if train is None:
        return []
    steps, values = clean(series)
    if values.size < min_after + 1:
        return []
    y, is_log = log_scale(values)
    short = values.size < _SHORT
    # A short series (evaluations) is taken as logged: its best is the best checkpoint, the one
    # early stopping keeps; a long one is smoothed first, its minimum would be a lucky dip.
    smooth = y if short else rolling_median(y, max(3, values.size // 20) | 1)
    best = int(np.argmin(smooth))
    after = values.size - 1 - best
    if after < min_after:
        return []
    tail = max(1, after // 3) if short else max(min_after, after // 3)
    end_level = float(np.median(y[-tail:]))
    # Fewer than five second differences are no noise estimate (of 3 points, the one there is
    # the curvature of the rise): the relative criteria alone judge such a series.
    noise = MAD_TO_SIGMA * float(np.median(np.abs(np.diff(y, 2)))) / np.sqrt(6) if values.size >= 7 else 0.0
    unit = 1.0 if is_log else max(abs(float(smooth[best])), 1e-12)
    needed = np.log1p(min_rise) if is_log else min_rise

    def risen(level: float, share: float = 1.0) -> bool:
        return (level - smooth[best]) / unit >= share * needed

    rise = end_level - smooth[best]
    level_rise = risen(end_level) and rise >= z * noise
    # On a short series the end may be a single evaluation: the points after the best must
    # have risen too, by their median (half of min_rise): one bad epoch is not a trend.
    level_rise &= not short or risen(float(np.median(y[best + 1:])), 0.5)
    trend_rise = 0.0
    if after >= _TREND_POINTS:
        x, v = block_medians(steps[best:], y[best:])
        if kendall_z(v) >= z:
            trend_rise = theil_sen_slope(x, v) * float(steps[-1] - steps[best]) / unit
    steady = trend_rise >= (np.log1p(0.75 * min_rise) if is_log else 0.75 * min_rise)
    if not (level_rise or steady):
        return []
    train_steps, train_values = clean(train, ctx)
    spacing = float(np.median(np.diff(steps)))  # between evaluations
    train_before, train_end = _train_levels(train_steps, train_values, int(steps[best]), int(steps[-1]), spacing)
    if train_before is None or train_end is None or not train_end < train_before:
        return []
    best_value, end_value = float(values[best]), float(np.exp(end_level)) if is_log else end_level
    if level_rise:
        rise_pct = 100 * (end_value / best_value - 1) if best_value > 0 else 100 * rise / unit
        how = (f"to {values[-1]:.4g} at step {steps[-1]}" if tail == 1
               else f"to a median of {end_value:.4g} over its last {tail} points")
    else:
        rise_pct = 100 * (float(np.expm1(trend_rise)) if is_log else trend_rise)
        how = f"along a steady trend (Theil-Sen line, Mann-Kendall z {kendall_z(v):.1f}) to {values[-1]:.4g} at step {steps[-1]}"
    return [Hit(int(steps[best]), int(steps[-1]),
                {"best_step": int(steps[best]), "best": best_value, "end": end_value, "end_points": int(tail),
                 "last": float(values[-1]), "last_step": int(steps[-1]), "rise_pct": float(rise_pct), "how": how,
                 "kind": "level" if level_rise else "trend", "train_loss": train.tag,
                 "train_at_best": train_before, "train_end": train_end,
                 "train_change_pct": float(100 * (train_end / train_before - 1)) if train_before > 0 else None,
                 "points_after_best": int(after)})]


def _train_levels(steps: np.ndarray, values: np.ndarray, first: int, last: int,
                  spacing: float) -> tuple[float, float] | tuple[None, None]:
    """The training loss at two steps, each the median of its points within half the validation's
    spacing of it (the training between two evaluations) when there are enough of them, else of
    the few logged points nearest it. A per-step loss is too noisy to read off a few points: +-40 %
    single batches put the 7 points around an early evaluation level with the last 7 of a run
    whose loss fell 35 %. Where the nearest few are the same points for both steps (a 3-epoch
    Keras log), each step's own nearest point."""
    if values.size == 0:
        return None, None
    count = max(3, values.size // 50)

    def window(step: int) -> np.ndarray:
        near = np.flatnonzero(np.abs(steps - step) <= spacing / 2)
        if near.size >= count:
            return near
        at = int(np.searchsorted(steps, step))
        lo = max(0, min(at - count // 2, values.size - count))
        return np.arange(lo, min(lo + count, values.size))

    before, end = window(first), window(last)
    if np.intersect1d(before, end).size:
        before, end = (np.array([int(np.argmin(np.abs(steps - step)))]) for step in (first, last))
    return float(np.median(values[before])), float(np.median(values[end]))
