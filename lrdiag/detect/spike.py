"""Loss spikes: a point or short burst far above the level just before it, then its recovery.

A point is a spike candidate when, on the log scale (or the cube root where the noise is that of
small batches, gamma-like: see _symmetric_scale):
- it rises above the median of the `window` points before it (its level) by `z` local noise
  sigmas (rolling MAD over a stretch eight times as long), and by at least the factor
  `min_ratio`;
- most of that rise happened within the last three points (a spike is sudden; a slow climb is
  a trend, left to the divergence and explosion rules).
The threshold then adapts to the run's own tails: noise that is heavy-tailed dips as far below
its level as it jumps above it, while a spike has no mirror image. So a run's deepest dip
(below the level on both sides, away from spike candidates) sets a floor of twice itself
under `z`. Why twice: the largest of n heavy-tailed draws (tail index a) follows a Frechet law,
and the largest rise beats r times the deepest dip with chance 1 / (1 + r^a): at r = 2, 11 % for
Student-t3 noise (23 of 200 simulated runs), where 1.5 let 23 % through; a real spike stands
many times above the run's dips (the sample logs' spikes at 3.4x and more). The deepest dip counts
no deeper than 1.5 times the second deepest: heavy-tailed noise dips deep again and again, while one
lone dip far below the others (a glitch, an easy batch) is an event of its own, and it set the bar so
high that a x60 spike where the loss was loud went unseen (29 of 40 simulated runs; 8 of 40 now). It
costs a little on heavy tails: pure Student-t3 noise runs with a reported spike 11.0 -> 12.3 % (of 300),
t2 29 -> 33 %; the real logs, the healthy corpus and the detection benchmark do not change.
Comparing with the points *before* makes the steep fall at the start of training harmless: a
falling curve is always below its past. The rise must also span five of the smallest steps
between distinct logged values, so that rounding (0.0001 -> 0.0002) is never a spike, and a
point with fewer than `window` points before it must come back down after (no level to trust).
Three points in a row that each stand above the level, none tall enough alone, are a spike too
when their mean clears the same bar for a mean of three (_bursts: an LR jumped for one step).
Where the run's logged LR jumps for one step (10x the LR around it, once or twice in the run:
_lr_jumps), the training loss's next 4 points are held to half the bar, alone or as a burst: the
LR says where to look, so a few points are tested rather than the whole run. On noise alone
(Student-t3, +-10 %) a jump that did nothing to the loss is followed by a reported spike in 6 runs of
300 (1 without the jump); on the detection benchmark's dev runs two LR glitches that lifted the loss
to z 5-8 (its bar 10) are found, and no run without such a jump changes.
Consecutive candidates form one burst; its peak is the spike's step, and the recovery is the first
later point (3-point median) back within a quarter of the rise above the old level.
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import Context, Hit, clean
from lrdiag.detect.robust import noise_scale, rolling_median, runs_of, side_medians, trailing_median
from lrdiag.series.model import Series

_DIP_FACTOR = 2.0
_LONE = 1.5  # the deepest dip counts no deeper than this times the second deepest
_SKEW_POINTS = 50  # rises and dips each, to judge the noise's symmetry (see _symmetric_scale)
_SKEW_SE = 2.0
_BURST = 3  # points in a row of a short burst (see _bursts)
_Z_CAP = 50.0  # a run whose dips reach z 25+ still reports spikes beyond z 50
_JUMP, _JUMP_SIDE, _MAX_JUMPS = 10.0, 3, 2  # a one-step LR jump (see _lr_jumps)
_AFTER_JUMP = 4  # loss points tested at half the bar from an LR jump's step on


def detect(series: Series, ctx: Context, window: int = 5, z: float = 10.0, min_ratio: float = 1.5,
           recover_fraction: float = 0.25, min_points: int = 10) -> list[Hit]:
    steps, values = clean(series, ctx)
    if values.size < min_points:
        return []
    y, space = _symmetric_scale(values)
    is_log = space != "linear"  # a positive loss: sizes as ratios
    half = max(3, min(window, values.size // 4))
    before, after = side_medians(y, half)
    before_short = np.r_[np.nan, y[:-1]]  # early points have fewer than `half` predecessors
    before = np.where(np.isnan(before), before_short, before)
    # The noise is judged over a wider stretch than the level: it changes slowly, the level fast.
    scale = noise_scale(y, 8 * max(half, 5) + 1)
    floor = 1e-3 if space == "log" else 1e-3 * (float(np.median(np.abs(y))) + 1e-12)
    scale = np.maximum(scale, floor)

    jump = y - before
    recent = y - trailing_median(y, 3)
    min_rise = {"log": np.log(min_ratio), "cbrt": (np.cbrt(min_ratio) - 1.0) * np.abs(before),
                "linear": (min_ratio - 1.0) * np.abs(before)}[space]
    sudden = (jump >= min_rise) & (np.nan_to_num(recent, nan=-np.inf) >= 0.5 * jump) & ~np.isnan(before)
    # Loggers round (Transformers keeps 4 decimals): near zero, one rounding step doubles a
    # loss. A rise must span several of the smallest steps between distinct logged values.
    level_values = {"log": np.exp, "cbrt": lambda b: b ** 3, "linear": lambda b: b}[space](before)
    above = np.nan_to_num(values - level_values, nan=0.0)
    # The smallest step between consecutive values bounds the quantum from above: where every
    # candidate clears five of those, the exact quantum (a sort of all the values) is not needed.
    if (sudden & (above < 5 * _quantum(values, exact=False))).any():
        sudden &= above >= 5 * _quantum(values)
    # A point with fewer than `window` points before it has a shaky level: it must also stand
    # above the points after it (a spike that recovers), not start a new, higher level.
    early = np.arange(y.size) < half
    sudden &= ~early | (np.nan_to_num(y - after, nan=-np.inf) >= 0.5 * jump)
    # Dips far from any spike candidate calibrate the threshold: a spike's slow recovery
    # lifts the level after the points just before it, which would fake a dip there.
    first_pass = sudden & (jump >= z * scale)
    reach = 2 * half
    near_spike = _within(first_pass, reach)
    dip = np.fmin(before, after) - y
    dip_z = np.nan_to_num(dip / scale, nan=0.0)[~near_spike]
    threshold = max(z, min(_Z_CAP, _DIP_FACTOR * _deepest(dip_z)))
    single = sudden & (jump >= threshold * scale)
    burst = _bursts(y, before, recent, scale, z, min_rise, half, near_spike | single, single, values, level_values)
    # Right after a one-step jump of the logged LR a few points are tested, not the whole run:
    # half the bar (see _lr_jumps).
    jumps = _lr_jumps(ctx, series, steps)
    if jumps:
        after_jump = np.zeros(y.size, dtype=bool)
        for at in jumps:
            after_jump[at:at + _AFTER_JUMP] = True
        single |= sudden & after_jump & (jump >= threshold / 2 * scale)
        burst |= _bursts(y, before, recent, scale, z, min_rise, half, near_spike | single, single, values,
                         level_values, relax=2.0, starts=after_jump)
    candidate = single | burst
    smooth = rolling_median(y, 3)
    hits = []
    for first, last in runs_of(candidate, gap=2):
        peak = first + int(np.argmax(y[first:last + 1]))
        base = before[first]
        rise = y[peak] - base
        back = np.flatnonzero(smooth[peak + 1:] <= base + recover_fraction * rise)
        recovered = back.size > 0
        recovery_steps = int(steps[peak + 1 + back[0]] - steps[peak]) if recovered else None
        points_after = values.size - 1 - peak
        if recovered:
            recovery = f"back to its level after {recovery_steps} step{'s' if recovery_steps != 1 else ''}"
        elif points_after < 3:
            recovery = "no later points to tell whether it recovered"
        else:
            recovery = f"never recovered in the {int(steps[-1] - steps[peak])} steps after it"
        # The level quoted is the plain median of the logged points it was taken from (on the
        # log scale an even count would give a geometric mean of the middle two instead).
        level_from = max(0, first - half) if first >= half else first - 1
        peak_value, base_value = values[peak], float(np.median(values[level_from:first]))
        before_text = (f"the point before ({base_value:.4g})" if first - level_from == 1
                       else f"the median {base_value:.4g} of the {first - level_from} points before")
        size = (f"{peak_value / base_value:.1f}x {before_text}" if is_log
                else f"{peak_value - base_value:+.4g} above {before_text}")
        if not single[first:last + 1].any():  # found as a burst: no point of it tall enough alone
            size += f", {_BURST} points in a row above it from step {steps[first]}"
        lr_jump = next((jumps[at] for at in jumps if at <= first < at + _AFTER_JUMP), None)
        if lr_jump is not None:
            after = int(steps[first]) - lr_jump["step"]
            size += f", {after} step{'s' if after != 1 else ''} after {lr_jump_text(lr_jump)}"
        hits.append(Hit(
            int(steps[first]), int(steps[last]),
            {"step": int(steps[peak]), "peak_step": int(steps[peak]), "peak": float(peak_value), "level": base_value,
             "level_steps": [int(steps[level_from]), int(steps[first - 1])], "size": size,
             "ratio": float(peak_value / base_value) if is_log else None,
             "z": float(rise / scale[peak]), "threshold_z": float(threshold),
             "points": int(last - first + 1), "recovered": recovered, "recovery_steps": recovery_steps,
             "recovery": recovery, **({"lr_jump": lr_jump} if lr_jump is not None else {})},
            # An error only once the loss had as many points as its level took to come back and
            # did not: judged live, a spike three points old has not yet had its chance.
            severity="error" if not recovered and points_after >= 2 * half else None,
        ))
    return hits


def _symmetric_scale(values: np.ndarray) -> tuple[np.ndarray, str]:
    """The scale the detector works on, and its name: the log for a positive loss (multiplicative
    noise is symmetric there, and so are averaged logs: Hugging Face's logging windows, detectron2's
    medians, per-epoch means), the values themselves for a series with values <= 0, and the cube
    root where the log scale's dips are clearly longer than its rises. The loss of one small batch
    is a mean of per-example losses: gamma-like noise, whose log has a long lower tail (a batch of
    easy examples) and a short upper one, which the cube root makes about symmetric (Wilson and
    Hilferty). On the log scale such noise hid bad batches twice: it shrinks the rise (a x10 batch
    stood at z 6 in noise of +-40 %) and its deep dips raise the mirror bar. Clearly: the 90th
    percentile of the dips around a 5-point median beyond that of the rises by `_SKEW_SE` standard
    errors of that log ratio (1.5 / sqrt(points per side), measured on simulated symmetric noise),
    so that symmetric noise keeps the log scale but in about 1 run in 40 (and then only the size of
    its z changes: Gaussian, Student-t3 and AR noise show as many false spikes as before, within
    1 in 100 simulated runs). Two, not fewer: at 1.3 the steep, zigzagging first tenth of a real
    GAN's generator loss passed for skewed noise and a 1.5x zig there for a spike."""
    if not (values.size and (values > 0).all()):
        return values.astype(np.float64), "linear"
    y = np.log(values)
    residual = y - rolling_median(y, 5)
    rises, dips = residual[residual > 0], -residual[residual < 0]
    points = min(rises.size, dips.size)
    if points >= _SKEW_POINTS:
        skew = np.log(np.quantile(rises, 0.9) / np.quantile(dips, 0.9))
        if skew < -_SKEW_SE * 1.5 / np.sqrt(points):
            return np.cbrt(values), "cbrt"
    return y, "log"


def _bursts(y: np.ndarray, before: np.ndarray, recent: np.ndarray, scale: np.ndarray, z: float, min_rise, half: int,
            near_spike: np.ndarray, spikes: np.ndarray, values: np.ndarray, level_values: np.ndarray,
            relax: float = 1.0, starts: np.ndarray | None = None) -> np.ndarray:
    """The points of short bursts, which single points miss: `_BURST` points in a row, each above
    the level before them, their mean `z` noise sigmas of a mean of that many points (sigma /
    sqrt 3) above it and `min_rise` over it, the first point half of that rise above the 3 points
    just before it (sudden: a smooth swing climbs by a little at each point), and back down (half
    the rise) over the next as many points.
    An LR jumped for a step under Adam lifts the loss for a few steps, no one point of them taller
    than the noise reaches alone; three in a row so far above the level is what independent noise
    does not do. Noise that wanders (autocorrelated) does, downwards as often as upwards: the bar
    is twice the deepest trough of as many points in a row below the level before them (the
    mirror, as for single points). A burst around a point already found adds nothing to it.
    `starts`: only bursts starting there, held to the bar divided by `relax` (after an LR jump)."""
    k, n = _BURST, y.size
    out = np.zeros(n, dtype=bool)
    if n < half + 2 * k:
        return out
    shifted = [y[j:n - k + 1 + j] for j in range(k)]  # the k points of each burst, as k slices
    mean, low, back = (np.full(n, np.nan) for _ in range(3))
    mean[:n - k + 1], low[:n - k + 1] = sum(shifted) / k, np.minimum.reduce(shifted)
    back[:n - 2 * k + 1] = rolling_median(y, k)[k + k // 2:n - k // 2]  # the median of the next k points
    rise = mean - before
    with np.errstate(invalid="ignore"):
        start = ((np.arange(n) >= half) & (rise >= min_rise) & (low > before)
                 & (recent >= 0.5 * rise) & (back <= before + 0.5 * rise))
    if not start.any():
        return out
    sigma = scale / np.sqrt(k)
    high, lowest = np.full(n, np.nan), np.full(n, np.nan)
    high[:n - k + 1] = np.maximum.reduce(shifted)
    lowest[:n - k + 1] = np.minimum.reduce([values[j:n - k + 1 + j] for j in range(k)])
    with np.errstate(invalid="ignore"):
        rise_z = np.where(start, rise / sigma, 0.0)
        trough_z = np.nan_to_num(np.where(high < before, (before - mean) / sigma, 0.0), nan=0.0)
    near = _within((rise_z >= z) | near_spike, 2 * half)
    threshold = max(z, min(_Z_CAP, _DIP_FACTOR * _deepest(trough_z[~near]))) / relax
    taken = _within(spikes, k)
    found = np.flatnonzero((rise_z >= threshold) & ~taken & (True if starts is None else starts))
    if found.size:  # each point five rounding steps above the level, at least (see _quantum)
        found = found[lowest[found] - level_values[found] >= 5 * _quantum(values)]
    for i in found:
        out[i:i + k] = True
    return out


def _lr_jumps(ctx: Context, series: Series, steps: np.ndarray) -> dict[int, dict]:
    """One-step jumps of the run's logged LR, by the training loss's first point at or after each:
    a logged LR at least `_JUMP` (10) times the median of the 3 points before it and of the 3 after
    it, whichever is higher (held for two points, one jump), at most `_MAX_JUMPS` (2) in the run.
    No schedule does that (warmup, decay, steps and restarts stay up or down once they move; a
    cyclic LR logged once a cycle jumps at every cycle: more than two jumps is a schedule, not a
    glitch); a one-step override, a scheduler stepped at the wrong time, a resumed run's stale
    value do. The loss points just after it are then tested at half the bar: a few points where the
    LR says to look, not the whole run (2 x 4 points instead of hundreds; on noise alone the bar
    was set for the whole run's worth of chances). Adam lifts the loss for a few steps after such a
    jump, often no point tall enough alone to clear the bar for the whole run."""
    lr = ctx.lr if ctx is not None else None
    if lr is None or series.role != "train_loss" or steps.size == 0:
        return {}
    lr_steps, rates = clean(lr)
    if rates.size < 3:
        return {}
    # A median is at least the least of its points: the few points that clear `_JUMP` times the least
    # of their 3 neighbours on each side are the only ones whose medians need taking.
    padded = np.r_[np.full(_JUMP_SIDE, np.inf), rates, np.full(_JUMP_SIDE, np.inf)]
    n, k = rates.size, _JUMP_SIDE
    least_before = np.minimum.reduce([padded[j:j + n] for j in range(k)])
    least_after = np.minimum.reduce([padded[k + 1 + j:k + 1 + j + n] for j in range(k)])
    maybe = np.flatnonzero(rates >= _JUMP * np.maximum(least_before, least_after))
    before = np.array([np.median(rates[max(0, i - k):i]) if i else np.nan for i in maybe.tolist()])
    after = np.array([np.median(rates[i + 1:i + 1 + k]) if i < n - 1 else np.nan for i in maybe.tolist()])
    around = np.maximum(before, after)  # NaN at either end: no jump there
    with np.errstate(invalid="ignore"):
        jumped = np.zeros(n, dtype=bool)
        jumped[maybe] = (around > 0) & (rates[maybe] >= _JUMP * around)
    held = runs_of(jumped)  # (first, last) logged points of each jump
    if not held or len(held) > _MAX_JUMPS:
        return {}
    at_maybe = {index: place for place, index in enumerate(maybe.tolist())}
    jumps = {}
    for index, last in held:
        at = int(np.searchsorted(steps, lr_steps[index]))
        if at < steps.size:
            place = at_maybe[index]
            side = "before" if before[place] >= after[place] else "after"
            count = min(_JUMP_SIDE, index if side == "before" else rates.size - 1 - index)
            jumps[at] = {"step": int(lr_steps[index]), "held_to": int(lr_steps[last]), "lr": float(rates[index]),
                         "around": float(around[place]), "around_points": count, "around_side": side}
    return jumps


def lr_jump_text(jump: dict) -> str:
    """An LR jump (_lr_jumps) as the spike's message, its cause and its remedy quote it: the logged LR
    at its step, against the median of the logged points beside it."""
    once = jump["held_to"] == jump["step"]
    return (f"the LR jumped {'for one step ' if once else ''}to {jump['lr']:.4g} at step {jump['step']}"
            f"{'' if once else ' and held to step ' + str(jump['held_to'])} ({jump['lr'] / jump['around']:.0f}x "
            f"the median {jump['around']:.4g} of its {jump['around_points']} points {jump['around_side']})")


def _within(mask: np.ndarray, reach: int) -> np.ndarray:
    """The points within `reach` points of a True one."""
    return np.convolve(mask, np.ones(2 * reach + 1), mode="full")[reach:reach + mask.size] > 0


def _quantum(values: np.ndarray, exact: bool = True) -> float:
    """The smallest step between distinct logged values: the logger's rounding, if any. Not
    `exact`: the smallest nonzero step between consecutive values, found without sorting, which is
    at least the quantum (two distinct values are at least a quantum apart)."""
    steps = np.diff(np.unique(values)) if exact else np.abs(np.diff(values))
    steps = steps[steps > 0]
    return float(steps.min()) if steps.size else 0.0


def _deepest(dip_z: np.ndarray) -> float:
    """The run's deepest dip, in noise sigmas, as evidence of its tails: no deeper than 1.5 times its
    second deepest (dips a point apart are one dip). Heavy-tailed noise dips deep again and again;
    one lone dip far below all the others (a logging glitch, an easy batch) is an event of its own, and
    taken alone it would set the bar for every spike in the run at twice itself."""
    if dip_z.size == 0:
        return 0.0
    deepest = int(np.argmax(dip_z))
    first = float(dip_z[deepest])
    apart = np.r_[dip_z[:max(0, deepest - 2)], dip_z[deepest + 3:]]  # dips a point apart are one dip
    second = float(apart.max()) if apart.size else 0.0
    return min(first, _LONE * max(second, 0.0))
