"""Robust statistics shared by the detectors: log scale, rolling medians, MAD noise scales.

Losses are compared on a log scale when they are positive: a spike or a swing is a ratio to
the local level, minibatch noise grows with the level, and the steep exponential fall at the
start of training is close to a straight line there. Medians and MADs rather than means and
standard deviations, so that the very outliers being looked for do not hide themselves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MAD_TO_SIGMA = 1.4826  # MAD of a normal sample times this estimates its standard deviation


def log_scale(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """log(values) when all are positive, else the values themselves; and which it was."""
    if values.size and (values > 0).all():
        return np.log(values), True
    return values.astype(np.float64), False


def rolling_median(values: np.ndarray, window: int, center: bool = True) -> np.ndarray:
    return pd.Series(values).rolling(window, center=center, min_periods=1).median().to_numpy()


def side_medians(values: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of the `half` points before each point, and of the `half` points after it (NaN at the ends)."""
    series = pd.Series(values)
    before = series.rolling(half, min_periods=half).median().shift(1).to_numpy()
    after = series[::-1].rolling(half, min_periods=half).median().shift(1).to_numpy()[::-1]
    return before, after


def noise_scale(values: np.ndarray, window: int) -> np.ndarray:
    """Local noise sigma per point: rolling MAD of the residual around a short rolling median.

    Floored at a fifth of the whole series' scale, so that a locally flat stretch (a logger
    that repeats values, a plateau) does not turn every later wiggle into a huge z-score."""
    residual = values - rolling_median(values, 5)
    absolute = pd.Series(np.abs(residual))
    local = MAD_TO_SIGMA * absolute.rolling(window, center=True, min_periods=1).median().to_numpy()
    overall = MAD_TO_SIGMA * float(np.median(np.abs(residual))) if residual.size else 0.0
    return np.maximum(local, 0.2 * overall)


def runs_of(mask: np.ndarray, gap: int = 0) -> list[tuple[int, int]]:
    """(first, last) index pairs of True stretches, joining stretches separated by <= gap Falses."""
    index = np.flatnonzero(mask)
    if index.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(index) > gap + 1)
    firsts = np.concatenate([[index[0]], index[breaks + 1]])
    lasts = np.concatenate([index[breaks], [index[-1]]])
    return list(zip(firsts.tolist(), lasts.tolist()))


def level(values: np.ndarray, is_log: bool) -> float:
    """Back from the log scale to the metric's own units."""
    return float(np.exp(values)) if is_log else float(values)
