"""A loss locked to a cyclic LR: it rises every time a triangular / CyclicLR / SGDR schedule
nears its top, and falls back as the LR comes down.

The LR's cycles are found from the LR itself: a cycle starts where the LR, scaled to [0, 1]
between its lowest and highest logged values, crosses 0.5 upward (once a cycle for a triangle,
at the restart for SGDR; a warmup or a one-cycle schedule crosses once and is no cycle), or at
the first step when the LR starts in its upper half (SGDR starts at its top); a last stretch at
least three quarters of a period long counts as a cycle too. The loss,
detrended by a rolling median one cycle wide (which follows the run's progress but not the swing
that repeats every cycle), is folded on the cycle's phase: up to 8 equal phase bins, the median
of each over all the cycles judged (those with `min_points_per_cycle` points or more).

The loss is locked when, over `min_cycles` cycles or more, the folded profile swings by
`min_swing` or more from its lowest bin to its highest, `min_sureness` standard errors or more,
highest where the LR is higher, and in all but a quarter of the cycles the highest bin's phase
stands above the lowest's. Folding averages the noise away over the cycles and sees a jump that
fills a few steps after each restart; the vote cycle by cycle keeps one wild cycle from making
the profile. The finding names
the cycle (its period, the LR's lowest and highest logged values at their steps) and the
correlation between the detrended loss and the LR. It is an oscillation (category), and the
spikes at the LR's peaks, the stall and the spectral oscillation it explains are dropped
(explain.py): one finding that names the cause instead of five spikes or a stall. It covers
the loss from a period before the LR's first upward crossing to a period after its last.
A loss rule (LRD107), not an LR one, so that it runs before the LR rules (LRD2xx) that read
the instability findings. The evidence lists the stretches where the LR stood in the top half
of its range (lr_tops): a spike of the run's other loss (an evaluation made at an LR top)
inside one of them is explained too.
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import Context, Hit, clean
from lrdiag.detect.robust import log_scale, rolling_median, runs_of
from lrdiag.series.model import Series


def detect(series: Series, ctx: Context, min_cycles: int = 3, min_swing: float = 0.26, min_sureness: float = 3.0,
           min_points_per_cycle: int = 4) -> list[Hit]:
    if ctx.lr is None:
        return []
    steps, values = clean(series, ctx)
    lr_steps, lr_values = clean(ctx.lr)
    if values.size < min_cycles * min_points_per_cycle or lr_values.size < 2 * min_cycles:
        return []
    low, high = float(lr_values.min()), float(lr_values.max())
    if not high > low:
        return []
    scaled = (lr_values - low) / (high - low)
    rising = np.flatnonzero((scaled[:-1] < 0.5) & (scaled[1:] >= 0.5)) + 1
    bounds = lr_steps[rising]  # where each cycle's upswing crosses the middle
    if scaled[0] >= 0.5 and bounds.size:
        bounds = np.r_[lr_steps[0], bounds]  # it starts at a top (SGDR): that first stretch is a cycle too
    if bounds.size >= 2 and lr_steps[-1] - bounds[-1] >= 0.75 * np.median(np.diff(bounds)):
        bounds = np.r_[bounds, lr_steps[-1] + 1]  # and so is a last stretch nearly a period long
    if bounds.size < min_cycles + 1:
        return []
    # The loss logged between two upward crossings is one cycle: enough points in each?
    cycle_of = np.searchsorted(bounds, steps, side="right") - 1
    inside = (cycle_of >= 0) & (cycle_of < bounds.size - 1)
    counts = np.bincount(cycle_of[inside], minlength=bounds.size - 1)
    if (counts >= min_points_per_cycle).sum() < min_cycles:
        return []
    y, is_log = log_scale(values)
    if not is_log:
        y = y / max(float(np.median(np.abs(y))), 1e-12)  # swings relative to the level
    period_points = max(3, int(np.median(counts[counts > 0])))
    detrended = y - rolling_median(y, period_points | 1)
    lr_at = np.interp(steps, lr_steps, scaled)  # the LR at each loss point, in [0, 1]
    # Fold the cycles judged on their phase: the median detrended loss per phase bin.
    judged = inside & (counts[np.clip(cycle_of, 0, counts.size - 1)] >= min_points_per_cycle)
    cycles = np.unique(cycle_of[judged])
    if cycles.size < min_cycles:
        return []
    start_of, end_of = bounds[cycle_of[judged]], bounds[cycle_of[judged] + 1]
    bins = int(min(8, period_points))
    bin_of = np.minimum(((steps[judged] - start_of) / (end_of - start_of) * bins).astype(int), bins - 1)
    values_in, lr_judged = detrended[judged], lr_at[judged]
    filled = np.bincount(bin_of, minlength=bins)
    if (filled == 0).any():
        return []
    profile = np.array([np.median(values_in[bin_of == b]) for b in range(bins)])
    peak, trough = int(np.argmax(profile)), int(np.argmin(profile))
    swing = float(profile[peak] - profile[trough])
    if not np.median(lr_judged[bin_of == peak]) > np.median(lr_judged[bin_of == trough]):
        return []  # highest where the LR is lower: not the LR's doing
    spread = 1.4826 * float(np.median(np.abs(values_in - profile[bin_of])))
    sureness = swing * np.sqrt(filled.min()) / (1.25 * spread) if spread > 0 else np.inf
    cycle_in = cycle_of[judged]
    votes = [np.median(values_in[(cycle_in == c) & (bin_of == peak)]) > np.median(values_in[(cycle_in == c) & (bin_of == trough)])
             for c in cycles.tolist() if ((cycle_in == c) & (bin_of == peak)).any() and ((cycle_in == c) & (bin_of == trough)).any()]
    agree = float(np.mean(votes)) if votes else 0.0  # cycle by cycle: the peak's phase above the trough's
    if swing < min_swing or sureness < min_sureness or agree < 0.75 or len(votes) < min_cycles:
        return []
    members = np.flatnonzero(judged)
    period_steps = float(np.median(np.diff(bounds)))
    span = slice(int(members[0]), int(members[-1]) + 1)  # the cycles judged
    # The finding covers the loss wherever the LR cycles: from a period before its first upward
    # crossing to a period after its last (the partial cycles at the ends swing too).
    first = int(np.searchsorted(steps, bounds[0] - period_steps))
    last = int(np.searchsorted(steps, bounds[-1] + period_steps, side="right")) - 1
    correlation = float(np.corrcoef(detrended[span], lr_at[span])[0, 1])
    lr_span = (lr_steps >= steps[first]) & (lr_steps <= steps[last])
    lr_in, lr_steps_in = lr_values[lr_span], lr_steps[lr_span]
    # The lowest LR, and the highest after it: a trough and the top the LR climbs to from it.
    bottom = int(np.argmin(lr_in))
    top = bottom + int(np.argmax(lr_in[bottom:])) if bottom < lr_in.size - 1 else int(np.argmax(lr_in))
    # The stretches where the LR stood in the top half of its range: another loss of the run
    # (an evaluation) that jumps there is this finding's symptom too (explain.py).
    tops = [[int(lr_steps[a]), int(lr_steps[b])] for a, b in runs_of(scaled >= 0.5)
            if lr_steps[b] >= steps[first] and lr_steps[a] <= steps[last]]
    return [Hit(int(steps[first]), int(steps[last]), {
        "period_steps": period_steps, "cycles": len(votes), "sureness": float(min(sureness, 1e6)),
        "lr_max": float(lr_in[top]), "lr_max_step": int(lr_steps_in[top]),
        "lr_min": float(lr_in[bottom]), "lr_min_step": int(lr_steps_in[bottom]),
        "swing_pct": float(100 * np.expm1(swing)) if is_log else float(100 * swing),
        "cycles_agreeing": float(agree), "correlation": correlation, "lr_series": ctx.lr.tag, "lr_tops": tops})]
