"""Oscillation: the loss swings up and down persistently, far more than its noise.

Too high a learning rate, momentum ringing or a cyclic schedule with too large an amplitude
make the loss swing with a period; minibatch noise does not. Windows of several sizes (the
whole run, halves, quarters, ... down to `min_points` points, overlapping by half) are
detrended (on the log scale, a rolling median a quarter of the window wide, then a quadratic)
and their periodogram is taken. A window oscillates
when one frequency with at least `min_cycles` cycles in it:
- towers over the spectrum around it: `peak_ratio` times the median power of the frequencies
  from half to twice its own. For white or red noise the power over its median exceeds T
  with chance 2^-T, so the ratio needed grows with log2 of the number of (window, frequency)
  pairs tested, keeping the chance that a run of pure noise shows any oscillation at 1e-3;
- carries at least `min_fraction` of the detrended variance (the swing dominates the noise);
- swings by at least `min_amplitude` (log units: 0.1 is +-10 % around the trend), so that a
  faint periodic ripple such as the epoch boundary of a healthy run stays quiet.
Overlapping oscillating windows are reported as one stretch, with the strongest window's
period and amplitude.
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import Context, Hit, clean
from lrdiag.detect.robust import log_scale, rolling_median, runs_of
from lrdiag.series.model import Series

_FAMILY_ALPHA = 1e-3  # chance that a run of pure noise shows any oscillating window


def detect(series: Series, ctx: Context, min_cycles: int = 4, peak_ratio: float = 12.0,
           min_fraction: float = 0.3, min_amplitude: float = 0.1, min_points: int = 64) -> list[Hit]:
    steps, values = clean(series)
    if values.size < min_points:
        return []
    y, is_log = log_scale(values)
    if not is_log:
        y = y / max(float(np.median(np.abs(y))), 1e-12)  # amplitudes relative to the level
    flagged = np.zeros(y.size, bool)
    windows: list[dict] = []
    sizes = [y.size >> level for level in range(32) if (y.size >> level) >= min_points]
    tests = sum((y.size - size) // max(1, size // 2) + 1 for size in sizes) * y.size // 2
    # Every window tests every frequency: the power ratio of noise exceeds T with chance 2^-T
    # (exponential power over its median ln 2), so T grows with log2 of the number of tests.
    needed = max(peak_ratio, float(np.log2(tests / _FAMILY_ALPHA)))
    for size in sizes:
        # Remove what varies slower than `min_cycles` cycles a window: the training trend,
        # whatever its shape (a quadratic cannot follow an exponential fall).
        detrended = y - rolling_median(y, max(3, size // min_cycles) | 1)
        for start in range(0, y.size - size + 1, max(1, size // 2)):
            found = _window(detrended[start:start + size], min_cycles, needed, min_fraction, min_amplitude)
            if found:
                flagged[start:start + size] = True
                found["first"], found["last"] = start, start + size - 1
                windows.append(found)
    hits = []
    for first, last in runs_of(flagged):
        inside = [w for w in windows if first <= w["first"] <= last]
        strongest = max(inside, key=lambda w: w["fraction"] * w["amplitude"])
        spacing = float(np.median(np.diff(steps[strongest["first"]:strongest["last"] + 1])))
        period_steps = spacing * strongest["period_points"]
        hits.append(Hit(int(steps[first]), int(steps[last]), {
            "period_steps": period_steps, "period_points": strongest["period_points"],
            "amplitude_pct": float(100 * np.expm1(strongest["amplitude"])),
            "variance_fraction": strongest["fraction"], "peak_ratio": strongest["ratio"],
            "cycles": float((steps[last] - steps[first]) / period_steps) if period_steps else None}))
    return hits


def _window(segment: np.ndarray, min_cycles: int, peak_ratio: float, min_fraction: float,
            min_amplitude: float) -> dict | None:
    index = np.arange(segment.size, dtype=np.float64)
    residual = segment - np.polyval(np.polyfit(index, segment, 2), index)
    spectrum = np.abs(np.fft.rfft(residual)) ** 2
    spectrum[0] = 0.0
    total = spectrum.sum()
    if total <= 0 or spectrum.size <= min_cycles + 1:
        return None
    peak = min_cycles + int(np.argmax(spectrum[min_cycles:]))
    around = np.r_[spectrum[max(1, peak // 2):max(1, peak - 2)], spectrum[peak + 3:min(spectrum.size, 2 * peak + 1)]]
    if around.size < 16:  # too few neighbours for a stable median: use the whole spectrum's
        around = np.r_[spectrum[1:max(1, peak - 2)], spectrum[peak + 3:]]
    background = float(np.median(around)) if around.size else 0.0
    ratio = spectrum[peak] / background if background > 0 else np.inf
    band = spectrum[max(1, peak - 1):peak + 2].sum()
    fraction = float(band / total)
    if ratio < peak_ratio or fraction < min_fraction:
        return None
    # The swing itself: the band around the peak, back in the time domain.
    kept = np.zeros_like(spectrum, dtype=complex)
    full = np.fft.rfft(residual)
    kept[max(1, peak - 1):peak + 2] = full[max(1, peak - 1):peak + 2]
    component = np.fft.irfft(kept, n=segment.size)
    amplitude = float(np.sqrt(2) * component.std())
    if amplitude < min_amplitude:
        return None
    return {"period_points": float(segment.size / peak), "amplitude": amplitude,
            "fraction": fraction, "ratio": float(min(ratio, 1e6))}
