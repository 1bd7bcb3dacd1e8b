"""Robust statistics shared by the detectors: log scale, rolling medians, MAD noise scales.

Losses are compared on a log scale when they are positive: a spike or a swing is a ratio to
the local level, minibatch noise grows with the level, and the steep exponential fall at the
start of training is close to a straight line there. Medians and MADs rather than means and
standard deviations, so that the very outliers being looked for do not hide themselves.
"""

from __future__ import annotations

import sys

import functools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MAD_TO_SIGMA = 1.4826  # MAD of a normal sample times this estimates its standard deviation


def log_scale(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """log(values) when all are positive, else the values themselves; and which it was."""
    if values.size and (values > 0).all():
        return np.log(values), True
    return values.astype(np.float64), False


_FILTER_UP_TO = 256  # the median filter is O(n * window): exact for short windows, blocks beyond


def rolling_median(values: np.ndarray, window: int) -> np.ndarray:
    """Centered rolling median; the ends mirror the series (an even window takes the upper
    middle value, so that a period-2 zigzag keeps one phase instead of flipping)."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or values.size == 0:
        return values.copy()
    if window in (3, 5) and values.size >= window:
        return _median_network(np.pad(values, window // 2, mode="symmetric"), window)
    if window <= _FILTER_UP_TO or values.size <= 2 * _FILTER_UP_TO:
        return median_filter(values, window)
    # Wide windows smooth over trends, not points: a median of block medians, each block a
    # 64th of the window, keeps the cost at O(n) and follows the curve to within a block.
    block = window // 64
    usable = values.size // block * block
    medians = np.median(values[:usable].reshape(-1, block), axis=1)
    if usable < values.size:
        medians = np.r_[medians, np.median(values[usable:])]
    smoothed = median_filter(medians, 65)
    centers = np.r_[np.arange(medians.size - (usable < values.size)) * block + (block - 1) / 2,
                    [(usable + values.size - 1) / 2] if usable < values.size else []]
    return np.interp(np.arange(values.size), centers, smoothed)


# numpy's partition over sliding windows costs ~5 ns a point x window, scipy's filter ~1.2 ns once
# imported, and importing scipy.ndimage 0.2-0.4 s of CPU. So numpy's path, a call at a time, up to
# a copy of windows of 16 MB (2M points x window: a 30,000-point CSV run's 41-point noise filter, 6 ms),
# and until a process has spent on it about what the import costs (50M: ~0.25 s, the rent-or-buy
# rule: never more than twice the better choice made in hindsight); then scipy's. A small run's
# analysis never pays the import; a batch of big runs pays it once.
_NUMPY_UP_TO = 2_000_000
_NUMPY_BUDGET = 50_000_000
_numpy_spent = 0


def _scipy_imported() -> bool:
    return "scipy.ndimage" in sys.modules


# scipy.ndimage's edge modes and numpy.pad's names for the same padding.
_NUMPY_PAD = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge"}


def median_filter(values: np.ndarray, size: int, mode: str = "reflect") -> np.ndarray:
    """scipy.ndimage.median_filter(values, size, mode=mode), exactly (an even size takes the
    upper middle value). Small inputs, the usual case, by numpy's partition over sliding windows;
    large ones, any once the process has spent its budget on numpy's path, or any once scipy is
    imported, by scipy's filter (several times faster): a short run's analysis need not pay
    scipy's import, which costs more than judging it."""
    global _numpy_spent
    values = np.asarray(values, dtype=np.float64)
    size = min(size, values.size)
    work = values.size * size
    if work > _NUMPY_UP_TO or _numpy_spent + work > _NUMPY_BUDGET or _scipy_imported():
        from scipy.ndimage import median_filter as scipy_median_filter
        return scipy_median_filter(values, size=size, mode=mode)
    _numpy_spent += work
    windows = sliding_window_view(np.pad(values, (size // 2, size - 1 - size // 2), mode=_NUMPY_PAD[mode]), size)
    return np.partition(windows, size // 2, axis=1)[:, size // 2]


def _median_network(padded: np.ndarray, window: int) -> np.ndarray:
    """Median of 3 or 5 neighbours by min/max comparisons: several times faster than a filter."""
    size = padded.size - window + 1
    a, b, c = padded[:size], padded[1:size + 1], padded[2:size + 2]
    if window == 3:
        return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
    d, e = padded[3:size + 3], padded[4:size + 4]
    low = np.maximum(np.minimum(a, b), np.minimum(d, e))  # the larger of the two pair minima
    high = np.minimum(np.maximum(a, b), np.maximum(d, e))  # the smaller of the two pair maxima
    return np.maximum(np.minimum(c, low), np.minimum(np.maximum(c, low), high))


def trailing_median(values: np.ndarray, count: int, min_periods: int = 1) -> np.ndarray:
    """Median of the `count` points before each point (of fewer near the start, down to
    `min_periods`; NaN below that)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.size, np.nan)
    if values.size <= 1:
        return out
    centered = rolling_median(values, count) if count % 2 else median_filter(values, count)
    # The window [i - count, i - 1] is centred on i - 1 - count // 2 (upper middle for even counts).
    shift = 1 + count // 2 - (1 if count % 2 == 0 else 0)
    out[count:] = centered[count - shift: values.size - shift]
    for i in range(max(min_periods, 1), min(count, values.size)):  # the first few: fewer points before
        out[i] = np.median(values[:i])
    return out


def side_medians(values: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of the `half` points before each point, and of the `half` points after it (NaN at the ends)."""
    before = trailing_median(values, half, min_periods=half)
    after = trailing_median(np.asarray(values)[::-1], half, min_periods=half)[::-1]
    return before, after


def noise_scale(values: np.ndarray, window: int) -> np.ndarray:
    """Local noise sigma per point: rolling MAD of the residual around a short rolling median.

    Floored at 0.7 of the same estimate over a stretch eight times as long: a MAD over a few
    dozen points of heavy noise swings widely (a fifth of the residuals around a 5-point median
    are exactly 0; on white noise 1 % of 41-point windows read under 0.43 of the typical value),
    and on such a calm-looking stretch ordinary noise would pass for spikes. The noise of a run
    changes over hundreds of points, and the longer estimate swings by only a few %.
    And floored at a fifth of the whole series' scale, so that a locally flat stretch (a logger
    that repeats values, a plateau) does not turn every later wiggle into a huge z-score."""
    residual = np.abs(values - rolling_median(values, 5))
    local = MAD_TO_SIGMA * rolling_median(residual, window)
    regional = MAD_TO_SIGMA * rolling_median(residual, 8 * window + 1)
    overall = MAD_TO_SIGMA * float(np.median(residual)) if residual.size else 0.0
    return np.maximum(local, np.maximum(0.7 * regional, 0.2 * overall))


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


def block_medians(steps: np.ndarray, values: np.ndarray, blocks: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Median step and median value of `blocks` consecutive, equal blocks of points: a long
    series shrunk for the O(n^2) trend statistics below. Up to twice `blocks` points stay as
    they are; beyond, the few points (under a block) that do not fill a block are left out at
    the start."""
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if values.size <= 2 * blocks:
        return steps, values
    size = values.size // blocks
    tail = slice(values.size - size * blocks, None)
    return (np.median(steps[tail].reshape(blocks, size), axis=1),
            np.median(values[tail].reshape(blocks, size), axis=1))


def theil_sen_slope(x: np.ndarray, v: np.ndarray) -> float:
    """Median of the slopes between every pair of points: a trend line that outliers cannot tilt."""
    first, second = np.triu_indices(x.size, 1)
    dx = x[second] - x[first]
    slopes = (v[second] - v[first])[dx > 0] / dx[dx > 0]
    return float(np.median(slopes)) if slopes.size else 0.0


def kendall_falling_p(v: np.ndarray) -> float:
    """The chance, under no trend, that values in this order would fall as consistently as they do:
    the one-sided p-value of the Mann-Kendall score (later points below earlier ones, ties ignored).
    Exact up to 40 values, from the number of orderings with each count of inversions (Mahonian
    numbers), where the normal approximation undersells a short steady run: 8 values falling but
    for 2 of their 28 pairs read z -2.97 (0.15 %), while 35 of the 8! orderings do as well (0.087 %).
    Beyond 40 values, the normal approximation of kendall_z."""
    n = v.size
    if n < 3:
        return 1.0
    if n > 40:
        return float(0.5 * math.erfc(-kendall_z(v) / math.sqrt(2)))
    first, second = np.triu_indices(n, 1)
    score = float(np.sign(v[second] - v[first]).sum())
    pairs = n * (n - 1) // 2
    falling_pairs = math.ceil((pairs - score) / 2 - 1e-9)  # at least this many pairs fall
    return float(_inversions(n)[falling_pairs:].sum())


@functools.lru_cache(maxsize=64)
def _inversions(n: int) -> np.ndarray:
    """The distribution of the number of inversions of a random ordering of n values."""
    chances = np.ones(1)
    for size in range(2, n + 1):
        chances = np.convolve(chances, np.full(size, 1.0 / size))
    return chances


def kendall_z(v: np.ndarray) -> float:
    """Mann-Kendall trend statistic of values in order, in standard deviations under no trend
    (ties ignored): how consistently later points lie above earlier ones. Pure noise is N(0, 1)."""
    n = v.size
    if n < 3:
        return 0.0
    first, second = np.triu_indices(n, 1)
    score = float(np.sign(v[second] - v[first]).sum())
    return score / float(np.sqrt(n * (n - 1) * (2 * n + 5) / 18))
