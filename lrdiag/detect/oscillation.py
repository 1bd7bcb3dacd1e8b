"""Oscillation: the loss swings up and down persistently, far more than its noise.

Too high a learning rate, momentum ringing or a cyclic schedule with too large an amplitude
make the loss swing with a period; minibatch noise does not. Windows of 2 x `min_points`
points, overlapping by half, slide over the series and over its block means of 2, 4, 8, ...
points (longer periods at coarser levels, at a linear cost); each is detrended (on the log
scale, a rolling median a quarter of the window wide, then a quadratic) and winsorized at 4 robust
sigmas (so that a lone spike cannot pass for a swing), and its periodogram is taken. A window oscillates
when one frequency with at least `min_cycles` cycles in it:
- towers over the spectrum around it: `peak_ratio` times the median power of the frequencies
  from half to twice its own. For white or red noise the power over its median exceeds T
  with chance 2^-T, so the ratio needed grows with log2 of the number of (window, frequency)
  pairs tested, keeping the chance that a run of pure noise shows any oscillation at 1e-3.
  Where fewer than 16 frequencies lie there (a slow swing in its window, a short log), the 16
  nearest on a log scale are the background, at the higher bar that so few powers' median asks
  for the same chance (_background_bar): never the whole spectrum, whose median lies far below
  the hump of red noise;
- carries at least `min_fraction` of the detrended variance (the swing dominates the noise);
- swings by at least `min_amplitude` (log units: 0.25 is x/÷1.28 around the trend): the ripple
  that epoch boundaries and data order leave in healthy runs reaches about +-20 % in real logs
  (a Lightning HMER run, an mmdetection YOLOv3 run), the swings of an LR too high or of a
  cyclic schedule too wide are larger.
- repeats: in the band-passed signal the typical cycle is at least half as tall as the tallest,
  so that one hump (a spike's slow recovery) does not count.
A second test finds ringing with a period of 3 to 16 points (heavy momentum, full-batch
training at too high an LR), which the spectral test misses: a ring driven by the noise at every
step is a broad bump, no single frequency towers over it, and a noise level read from a series it
fills absorbs it. Its autocorrelation still swings with its period (see _ringing). It looks at
windows of 2 x `min_points` and of `min_points` points (a ring of 16 points or less has four
cycles in 64): a heavy ball rings hardest in the first hundred steps and then dies down, and in
a long window the quiet rest dilutes it below the test.
A short log, 32 to `min_points` - 1 points (a Keras 3 CSV of 40 epochs, whose
LearningRateScheduler logs no LR for the cyclic-LR rule to fold on), is one window, the whole log, for
the spectral test alone, with a higher bar: its background is the median of a dozen powers, not of
dozens (_background_bar).
Oscillating windows that overlap or lie less than a window apart are reported as one stretch,
with the strongest window's period and amplitude; a stretch seen in one window only, when the
series has several, is a transient and is dropped (windows overlap by half: a swing that lasts
shows in two).
"""

from __future__ import annotations

import functools

import numpy as np

from lrdiag.detect.base import Context, Hit, clean
from lrdiag.detect.robust import log_scale, rolling_median, runs_of
from lrdiag.series.model import Series

_FAMILY_ALPHA = 1e-3  # chance that a run of pure noise shows any oscillating window
# Points: a short log's one window has 16 frequencies, the fewest whose median _windows takes for the
# background around a peak (below, the median of 8 or 9 powers is so unsteady that a 16-point log of a
# single batch's loss every 20 steps shows a "swing" in its noise: a healthy run of the detection
# benchmark did at 18 points, an overfitting one at 16; none of the 130 series of 24 to 63 points of
# its healthy runs did).
_SHORTEST = 32
_CALM = 0.99  # a window's variance under this share of what its smallest reported swing needs: not tested


def detect(series: Series, ctx: Context, min_cycles: int = 4, peak_ratio: float = 12.0,
           min_fraction: float = 0.3, min_amplitude: float = 0.25, min_ring_amplitude: float = 0.15,
           min_points: int = 64) -> list[Hit]:
    steps, values = clean(series, ctx)
    # A short log (a per-epoch Keras CSV, a few dozen evaluations) is one window, the whole of it,
    # for the spectral test alone (the ringing test's figures hold for 64 points and more).
    few_points = values.size < min_points
    if values.size < _SHORTEST:
        return []
    y, is_log = log_scale(values)
    if not is_log:
        y = y / max(float(np.median(np.abs(y))), 1e-12)  # amplitudes relative to the level
    flagged = np.zeros(y.size, bool)
    windows: list[dict] = []
    levels = [factor for factor in (2**k for k in range(32)) if y.size // factor >= min_points] or [1]
    size = 2 * min_points
    # Every window tests every frequency a peak may take (min_cycles cycles a window or more):
    # the power ratio of noise exceeds T with chance 2^-T (exponential power over its median
    # ln 2), so T grows with log2 of the number of tests (a background of few powers asks more:
    # _background_bar).
    widths = [min(size, y.size // factor) for factor in levels]
    tests = sum(_starts(y.size // factor, width).size * (width // 2 + 1 - min_cycles)
                for factor, width in zip(levels, widths))
    needed = max(peak_ratio, float(np.log2(tests / _FAMILY_ALPHA)))
    for factor, width in zip(levels, widths):
        # Longer periods are looked for in block means of 2, 4, 8... points: the same window
        # length at every level keeps the cost linear, and averaging filters out what the
        # finer levels already examined.
        blocks = y[: y.size // factor * factor].reshape(-1, factor).mean(axis=1)
        # Remove what varies slower than `min_cycles` cycles a window: the training trend,
        # whatever its shape (a quadratic alone cannot follow an exponential fall).
        # An even width: over an odd one, a period-2 zigzag flips the median at every step.
        detrended = blocks - rolling_median(blocks, max(4, width // min_cycles) & ~1)
        starts = _starts(blocks.size, width)
        segments = np.lib.stride_tricks.sliding_window_view(detrended, width)[starts]
        # A window's swing cannot carry more variance than the window has (the quadratic fit
        # and the winsorizing only take some away): a window calmer than the smallest swing
        # reported is passed over untested, as most of a healthy run's are.
        loud = segments.var(axis=1) >= _CALM * min_amplitude**2 / 2
        starts, segments = starts[loud], segments[loud]
        for start, found in zip(starts.tolist(), _windows(segments, min_cycles, needed, min_fraction, min_amplitude)):
            if found:
                first, last = start * factor, min((start + width) * factor, y.size) - 1
                flagged[first:last + 1] = True
                found.update(first=first, last=last, period_points=found["period_points"] * factor)
                windows.append(found)
    # The ring's trend: a rolling median two of the slowest cycles fitted wide (see _ringing).
    detrended = y - rolling_median(y, 2 * int(_RING_PERIODS[-1]) + 1)
    rings = [] if few_points else (_ringing(detrended, 2 * min_points, min_fraction, min_ring_amplitude)
                              + _ringing(detrended, min_points, min_fraction, min_ring_amplitude, short=True))
    for found in rings:
        flagged[found["first"]:found["last"] + 1] = True
        windows.append(found)
    hits = []
    # Calmer spells shorter than a window do not split one oscillation: a ring driven by noise
    # waxes and wanes, and a window that straddles a quiet spell may fall short of the tests.
    for first, last in runs_of(flagged, gap=2 * min_points):
        inside = [w for w in windows if first <= w["first"] <= last]
        # Seen in one window only, among several: a transient (the overshoot of a heavy ball's
        # first descent, a spike's recovery), not a persistent swing; windows overlap by half,
        # so an oscillation that lasts shows in two at least: two of one width (a short window
        # inside a long one is the same look twice).
        if (max(len({(w["first"], w["last"]) for w in inside if w.get("short", False) == short}) for short in (False, True)) < 2
                and not (first == 0 and last == y.size - 1)):
            continue
        strongest = max(inside, key=lambda w: w["fraction"] * w["amplitude"])
        spacing = float(np.median(np.diff(steps[strongest["first"]:strongest["last"] + 1])))
        period_steps = spacing * strongest["period_points"]
        hits.append(Hit(int(steps[first]), int(steps[last]), {
            "period_steps": period_steps, "period_points": strongest["period_points"],
            "amplitude_pct": float(100 * np.expm1(strongest["amplitude"])),
            "variance_fraction": strongest["fraction"], "peak_ratio": strongest.get("ratio"),
            "autocorrelation_at_half_period": strongest.get("half_period_acf"),
            "cycles": float((steps[last] - steps[first]) / period_steps) if period_steps else None}))
    return hits


def _starts(length: int, width: int) -> np.ndarray:
    """Where the windows of `width` points start over `length` points: overlapping by half, the
    last one flush with the end."""
    return np.unique(np.r_[np.arange(0, length - width + 1, max(1, width // 2)), length - width])


@functools.lru_cache(maxsize=4096)
def _background_bar(k: int, needed: float) -> float:
    """The power ratio a peak needs over a background that is the median of only k powers, for the
    chance 2^-needed that `needed` has over the median of many. For noise each power is
    exponential, and the chance that one exceeds T times the j-th smallest of k others is exactly
    the product over i = 1..j of (k - i + 1) / (k - i + 1 + T) (Renyi's representation of the
    order statistics); j: the lower middle one (an even count's median is the mean of two: the
    lower makes the bar higher, never lower). 57 for 16 powers where `needed` is 20, 33 for the 11
    of a 32-point log's one window (needed 14)."""
    if k < 1:
        return np.inf
    chance, counts = 2.0 ** -needed, k - np.arange((k + 1) // 2)
    low, high = 1.0, 1e12
    for _ in range(100):  # bisection on the log scale: the chance falls as the ratio grows
        middle = float(np.sqrt(low * high))
        low, high = (middle, high) if float(np.prod(counts / (counts + middle))) > chance else (low, middle)
    return max(needed, high)


# Periods (points) fitted, and the lags they are fitted over. Only a best fit of 16 points or
# less counts: fitted up to 21 so that a slower wander, whose best fit would sit at the edge
# of a range ending at 16, shows as what it is. 16: a heavy ball (momentum 0.97-0.99 on a
# well-conditioned problem) rings with a period of 9 to 15 steps in the benchmark's runs.
_RING_PERIODS = np.arange(3.0, 21.01, 0.25)
_RING_MAX_PERIOD = 16.0
_RING_LAGS = np.arange(1, 22)
_RING_COSINES = np.cos(2 * np.pi * _RING_LAGS[None, :] / _RING_PERIODS[:, None])
# The largest weight a fitted cosine can take when every autocorrelation lies within +-1.
_RING_MAX_WEIGHT = float((np.abs(_RING_COSINES).sum(axis=1) / (_RING_COSINES**2).sum(axis=1)).max())


def _ringing(detrended: np.ndarray, size: int, min_fraction: float, min_amplitude: float,
             short: bool = False) -> list[dict]:
    """Windows where the loss rings: its detrended autocorrelation over lags 1..21 follows a
    cosine of period 3 to 16 points with weight `min_fraction` or more, and is negative at half
    that period (red noise, a smoothing logger's, is positive there). Why the autocorrelation:
    momentum ringing is a resonance excited by the noise at every step, a broad bump in the
    spectrum that no single frequency towers over, and when it fills the run a noise level taken
    from the same series absorbs it; its autocorrelation still swings with the ring's period.
    Batch noise is white: every lag's autocorrelation is N(0, 1/n), and their cosine-weighted
    mean over 21 lags has a standard deviation of 1/sqrt(10.5 n), 0.027 over a 128-point window,
    so that 0.3 stands 11 of them above noise whatever the number of windows tested (8 over a
    64-point window). The trend is a rolling median two of the slowest cycles fitted wide:
    it keeps them whole and follows the steep fall of a run's first steps, which a wider one
    leaves in the residual to drown the ring's autocorrelation."""
    if detrended.size < size // 2:
        return []
    width = min(size, detrended.size)
    starts = _starts(detrended.size, width)
    rows = np.lib.stride_tricks.sliding_window_view(detrended, width)[starts]
    # The fitted cosine's weight is at most _RING_MAX_WEIGHT (every autocorrelation is within
    # +-1), so a window whose variance is below what the smallest ring needs at that weight is
    # calm: passed over untested.
    loud = 2 * _RING_MAX_WEIGHT * rows.var(axis=1) >= _CALM * min_amplitude**2
    starts, rows = starts[loud], rows[loud]
    if starts.size == 0:
        return []
    rows = rows - rows.mean(axis=1, keepdims=True)
    sigma = 1.4826 * np.median(np.abs(rows), axis=1, keepdims=True)
    rows = np.clip(rows, -4 * sigma, 4 * sigma)  # a lone spike must not write its own autocorrelation
    power = (rows * rows).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        acf = np.stack([(rows[:, :-lag] * rows[:, lag:]).sum(axis=1) for lag in _RING_LAGS], axis=1) / power[:, None]
    acf = np.nan_to_num(acf)
    cosines = _RING_COSINES
    # Per window and period. einsum, not a matrix product: a product this size (600+ windows)
    # wakes OpenBLAS's threads, whose spinning costs more CPU than the product itself.
    weights = np.einsum("wl,pl->wp", acf, cosines) / (cosines**2).sum(axis=1)
    best = np.argmax(weights, axis=1)
    fraction = weights[np.arange(starts.size), best]
    period = _RING_PERIODS[best]
    # The lag nearest half the period: a ring is there as negative as the fitted cosine says
    # (-1, or -0.5 at lags 1 and 2 of a period of 3); red noise after detrending is not.
    half_lag = np.floor(period / 2 + 0.5).astype(int)
    rows_index = np.arange(starts.size)
    half = acf[rows_index, half_lag - 1]
    expected = np.cos(2 * np.pi * half_lag / period)
    below = np.floor(period).astype(int)  # the autocorrelation a full period on, interpolated
    weight_above = period - below
    full = ((1 - weight_above) * acf[rows_index, below - 1]
            + weight_above * acf[rows_index, np.minimum(below, _RING_LAGS[-1] - 1)])
    amplitude = np.sqrt(2 * np.maximum(fraction, 0) * power / width)
    hit = ((fraction >= min_fraction) & (half <= 0.75 * fraction * expected) & (full > 0) & (amplitude >= min_amplitude)
           & (period <= _RING_MAX_PERIOD))
    return [{"first": int(start), "last": int(start + width - 1), "period_points": float(period[row]),
             "amplitude": float(amplitude[row]), "fraction": float(fraction[row]),
             "half_period_acf": float(half[row]), "short": short}
            for row, start in enumerate(starts.tolist()) if hit[row]]


def _persistent(coefficients: np.ndarray, band: np.ndarray, size: int, peaks: np.ndarray,
                residual: np.ndarray) -> np.ndarray:
    """A swing repeats: in the band-passed signal and in the detrended one itself, the typical
    cycle's height is at least half the tallest one's, and three cycles at least are that tall.
    One hump (a spike's slow recovery, the
    overshoot of a heavy ball's first descent) is a single tall cycle among flat ones; a narrow
    band-pass alone rings on after it and spreads it over its neighbours, the signal does not.
    One row per window; the band-passing is done for all rows at once."""
    swings = np.fft.irfft(np.where(band, coefficients, 0), n=size, axis=1)
    periods = np.maximum(2, np.rint(size / peaks).astype(int))
    repeats = np.zeros(peaks.size, bool)
    for period in np.unique(periods).tolist():  # rows of one period reshape into cycles together
        rows = periods == period
        for signal in (swings, residual):
            cycles = signal[rows, : size // period * period].reshape(int(rows.sum()), -1, period)
            heights = cycles.max(axis=2) - cycles.min(axis=2)
            tall = heights >= 0.5 * heights.max(axis=1, keepdims=True)
            # Three tall cycles at least: one hump straddles two at most.
            repeats[rows] = ((np.median(heights, axis=1) >= 0.5 * heights.max(axis=1)) & (tall.sum(axis=1) >= 3)
                             & (repeats[rows] if signal is residual else True))
    return repeats


@functools.lru_cache(maxsize=64)
def _quadratic_basis(size: int) -> np.ndarray:
    """Orthonormal basis of quadratics over `size` points: projecting on it fits the trend."""
    index = np.linspace(-1.0, 1.0, size)
    basis, _ = np.linalg.qr(np.vander(index, 3))
    return basis


def _windows(segments: np.ndarray, min_cycles: int, peak_ratio: float, min_fraction: float,
             min_amplitude: float) -> list[dict | None]:
    """Test equal-sized windows (rows) at once; a dict of the oscillation's figures per hit."""
    count, size = segments.shape
    basis = _quadratic_basis(size)
    residual = segments - (segments @ basis) @ basis.T
    # Winsorized at 4 robust sigmas: a lone spike would otherwise fill the whole spectrum and
    # pass for a swing; a real swing's values all lie within that band.
    sigma = 1.4826 * np.median(np.abs(residual), axis=1, keepdims=True)
    residual = np.clip(residual, -4 * sigma, 4 * sigma)
    coefficients = np.fft.rfft(residual, axis=1)
    spectrum = np.abs(coefficients) ** 2
    spectrum[:, 0] = 0.0
    bins = spectrum.shape[1]
    if bins <= min_cycles + 1:
        return [None] * count
    peak = min_cycles + np.argmax(spectrum[:, min_cycles:], axis=1)
    frequency = np.arange(bins)[None, :]
    lo, hi = peak[:, None], peak[:, None]
    band = (frequency >= lo - 1) & (frequency <= hi + 1) & (frequency >= 1)
    others = (frequency >= 1) & ~((frequency >= lo - 2) & (frequency <= hi + 2))
    local = (frequency >= np.maximum(1, lo // 2)) & (frequency <= 2 * hi) & others
    # Fewer than 16 neighbours there: the 16 frequencies nearest the peak's (on a log scale). Not
    # the whole spectrum: a loss's noise is seldom white (a smoothing logger's is red, and
    # detrending bends it), and the median of all the frequencies, far below a red hump, let noise
    # pass for a swing in 68 % of 500-point logs of AR(0.7) noise of +-30 % a step (27 % now).
    few = local.sum(axis=1) < 16
    distance = np.where(others, np.abs(np.log(np.maximum(frequency, 1) / peak[:, None])), np.inf)
    nearest = distance <= np.partition(distance, min(15, bins - 1), axis=1)[:, min(15, bins - 1), None]
    around = np.where(few[:, None], nearest & others, local)
    # Row-wise median over a varying set of frequencies: push the others to +inf and sort.
    ranked = np.sort(np.where(around, spectrum, np.inf), axis=1)
    counts = around.sum(axis=1)
    rows = np.arange(count)
    low, high = np.maximum(counts - 1, 0) // 2, np.maximum(counts, 1) // 2
    background = np.where(counts > 0, (ranked[rows, low] + ranked[rows, np.minimum(high, bins - 1)]) / 2, 0.0)
    peak_power = spectrum[np.arange(count), peak]
    total = spectrum.sum(axis=1)
    band_power = np.where(band, spectrum, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(background > 0, peak_power / background, np.inf)
        fraction = np.where(total > 0, band_power / total, 0.0)
    # Parseval: a bin below Nyquist holds 2|X|^2/N^2 of the variance; a sine's amplitude is sqrt(2) std.
    weight = np.where((frequency == size / 2), 1.0, 2.0)
    variance = np.where(band, weight * spectrum, 0.0).sum(axis=1) / size**2
    amplitude = np.sqrt(2 * variance)
    # 16 powers or more: the plain bar; fewer (a short log's one window has 11 to 15): higher.
    bar = np.array([peak_ratio if k >= 16 else _background_bar(int(k), peak_ratio) for k in counts.tolist()])
    hit = (ratio >= bar) & (fraction >= min_fraction) & (amplitude >= min_amplitude)
    rows = np.flatnonzero(hit)
    hit[rows] = _persistent(coefficients[rows], band[rows], size, peak[rows], residual[rows])
    return [{"period_points": float(size / peak[row]), "amplitude": float(amplitude[row]),
             "fraction": float(fraction[row]), "ratio": float(min(ratio[row], 1e6))} if hit[row] else None
            for row in range(count)]
