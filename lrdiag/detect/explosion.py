"""Explosion: a run's main training or validation loss climbs to many times its starting level.

The starting level is the median of the first three points (the first of them when each of the
next two is higher: a loss logged too rarely to show its first fall, climbing from its first
logged point, as a clipped run whose LR ramps too high does), the climb is judged on a 5-point rolling
median (one bad batch is a spike, not an explosion) and must hold for `min_points` points,
unless it ends the series in NaN/Inf, the usual end of an explosion. A climb the loss comes back
from for good, staying back to the end of the run for twice as long as it lasted, is a
transient, left to the spike rule (a x100 excursion that is over within tens of steps). The
starting level is the loss of the untrained model; the ordinary rises of a healthy run
(warmup bumps, an LR restart, a harder curriculum stage) stay below it, so 2.5 times above it
(`factor`) is a run that has lost everything it learned and more; and 2.5 times the median of
all its points before the climb, so that a loss that never settled (swinging +-55 % from its
first step) is not judged against its luckiest first points. A validation loss must reach five
times its start (`val_factor`): overfitting alone can triple an eval loss (the divergence rule's
finding). The finding starts where the climb began: the last point at most twice the lowest
level before it.

A loss logged fewer than 2 x `min_points` times (an eval loss of a run evaluated 3 to 5 times)
has no 5-point median to hold: its starting level is its first point and it has exploded when
its last two points both stand at the factor or more (two evaluations in a row, as the
divergence rule asks of a few evaluations: one alone is a spike), at `val_factor` whatever the
loss (a training loss watched live has a few points at first, the first of them noisy). The training loss of the same
run, logged often, may climb less and stay under the factor: clipping holds the gradient's size,
not the loss's, and an evaluation sees the model's state without the batch noise.

A training loss that starts low (a regression whose targets the untrained model already nearly
predicts) can lose all it learned without reaching 2.5 times its start: it has exploded too
when, from some point to the end of the run, its 5-point median never comes back under
`best_factor` (3.5) times the lowest 5-point median it had reached before, for `min_points` points at least, and
for a quarter of the run unless the logged LR is known not to cycle: longer than the climb to
one top of a cyclic LR (half a cycle, a sixth of a run of three cycles), whose loss comes back
down with the LR. And more than 10 % above its starting level
all that time (LRD103 takes a loss within 10 % of its start as back at it): it lost all it had
learned and more. A loss back at about its start after a x100 blow-up
(a regression predicting the mean) is a stall at a trivial level, not an explosion (LRD103). The
training loss only: a validation loss may rise so by overfitting (the divergence rule's). In the
detection benchmark's dev split (seeds 1-3200) no healthy, overfitting, spike or stall run stays
above its start so (all come back under 1.1 times it), heavy balls whose ringing grew to under
three times their start reach 3.18, and clipped runs whose LR ramps too high 3.4 to 14,000.
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import Context, Hit, clean
from lrdiag.detect.robust import rolling_median, runs_of
from lrdiag.series.model import Series


# Within 10 % of its start a loss is back at it (LRD103's near_initial): a stall, not an explosion.
_BACK_AT_START = 1.1


def detect(series: Series, ctx: Context, factor: float = 2.5, val_factor: float = 5.0, best_factor: float = 3.5,
           min_points: int = 3) -> list[Hit]:
    if series is not ctx.train_loss and series is not ctx.val_loss:
        return []  # a component (a PINN's boundary term, a detector's box loss) may rise by design
    if series is not ctx.train_loss:
        factor = val_factor  # an eval loss may triple by overfitting alone: the divergence rule's
    steps, values = clean(series, ctx)
    # A climb cut short by NaN/Inf (the usual end of one) counts however few points it has.
    ends_nonfinite = bool(series.values.size and not np.isfinite(series.values[-1]))
    few = not ends_nonfinite and values.size < 2 * min_points  # a few evaluations: no rolling median
    if few:
        factor = max(factor, val_factor)  # a lone first point is a noisy start: the higher bar
    if values.size < (2 if ends_nonfinite else 3 if few else 2 * min_points) or (values <= 0).any():
        return []  # a ratio to the start means nothing for a loss that can be zero or negative
    head = 1 if few else min(3, values.size - 1)  # the untrained model's loss: the first logged points
    start, start_points, start_how = float(np.median(values[:head])), head, f"the median of its first {head} points"
    if head == 1 or (np.diff(values[:head]) > 0).all():  # climbing at once: no median to take before it
        start, start_points = float(values[0]), 1
        start_how = "its first logged value" + (f", its next {head - 1} points each higher" if head > 1 else "")
    smooth = values if few else rolling_median(values, 5)
    above = smooth >= factor * start
    above[:head] = False  # the start itself cannot be above the start
    if ends_nonfinite and values[-1] >= factor * start:
        above[-1] = True  # the last finite point, raw: a rolling median lags behind the blow-up
    stretches = [(a, b) for a, b in runs_of(above)
                 if (b == values.size - 1 and b - a >= 1 if few else b - a + 1 >= min_points)
                 or (ends_nonfinite and b == values.size - 1)]
    # Far above where the loss had been, too: a loss that never settled (one swinging +-55 % from
    # its first step) can sit at 2.5 times its first few points with nothing exploding; the
    # stretch's median must stand at the factor over the median of the points before its climb.
    stretches = [(a, b) for a, b in stretches
                 if a <= head or np.median(smooth[a:b + 1]) >= factor * float(np.median(values[:_climb(smooth, a) + 1]))]
    # An excursion the loss comes back from, and stays back from to the end of the run for twice
    # as long as it lasted, is a transient in the run's history: a spike (LRD101), however tall;
    # whatever follows it (a stall back at the starting level, say) is for the other rules.
    stretches = [(a, b) for i, (a, b) in enumerate(stretches)
                 if i < len(stretches) - 1 or values.size - 1 - b < 2 * (b - a + 1) or ends_nonfinite]
    reference, level = f"its starting level {start:.4g}, {start_how}", start
    evidence = {"start_level": start, "start_points": start_points, "start_how": start_how}
    if not stretches and not few and series is ctx.train_loss:
        # 3.5 times (best_factor) the lowest level it had reached, for the rest of the run: the lowest 5-point
        # median from each point on stands at the factor over the lowest one before it.
        best = np.minimum.accumulate(smooth)
        rest = np.minimum.accumulate(smooth[::-1])[::-1]
        held = np.flatnonzero((rest >= best_factor * best) & (rest > _BACK_AT_START * start)
                              & (np.arange(values.size) <= values.size - max(min_points, _hold(ctx, values.size))))
        if held.size:
            stretches = [(int(held[0]), values.size - 1)]
            low_at = int(np.argmin(smooth[: held[0] + 1]))
            around = slice(max(0, low_at - 2), min(values.size, low_at + 3))  # the points of that median
            level = float(np.median(values[around]))
            evidence.update(level=level, level_steps=[int(steps[around][0]), int(steps[around][-1])])
            reference = (f"the lowest level it had reached, the median {level:.4g} of its points at steps "
                         f"{steps[around][0]}-{steps[around][-1]}")
    if not stretches:
        return []
    first, last = stretches[0][0], stretches[-1][1]
    peak = first + int(np.argmax(values[first:last + 1]))
    # The climb began where the loss last sat near its lowest level before crossing the factor.
    climb = _climb(smooth, first)
    return [Hit(int(steps[climb]), int(steps[last]),
                {"step": int(steps[climb]), "crossed_step": int(steps[first]), **evidence, "reference": reference,
                 "peak": float(values[peak]), "peak_step": int(steps[peak]), "ratio": float(values[peak] / level)})]


def _climb(smooth: np.ndarray, crossed: int) -> int:
    """Where the climb that crossed the factor at `crossed` began: the last point before it at
    most twice the lowest level the loss had reached."""
    return int(np.flatnonzero(smooth[: crossed + 1] <= 2 * smooth[: crossed + 1].min())[-1])


def _hold(ctx: Context, points: int) -> int:
    """Points a climb above the lowest level must hold to the end: a quarter of the run, unless
    the logged LR does not cycle (it rises past the middle of its range once at most, as LRD107
    counts cycles): then no LR top is there for the loss to come back down from."""
    if ctx.lr is None:
        return points // 4
    lr = ctx.lr.values[np.isfinite(ctx.lr.values)]
    if lr.size < 2 or not lr.max() > lr.min():
        return 0  # a constant LR
    scaled = (lr - lr.min()) / (lr.max() - lr.min())
    tops = int(((scaled[:-1] < 0.5) & (scaled[1:] >= 0.5)).sum()) + int(scaled[0] >= 0.5)
    return points // 4 if tops >= 2 else 0
