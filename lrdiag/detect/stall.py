"""Stall: the training loss stops improving while still far from where it could go.

The plateau starts at the first point after which the smoothed loss (log scale, rolling
median) never improves by more than `progress` of the run's total drop (or three times its
noise, when it hardly dropped). A plateau covering less than `min_fraction` of the run is a run
still improving, or converging at the end, and is left alone, as is a curve that rises again
after it (divergence or explosion, for the other rules). A stall needs a reason to believe the
loss could have gone further:
- **stuck near its initial value**: over the whole run it never got `near_initial` (log
  units, ~10 %; more on a curve too noisy to place its start and end that well) below its first
  points (and never twice that at its best), and its second half gained less than a quarter
  of that (else it is a run improving slowly): the stall then runs from the first point. Only for a log that starts near the beginning of training (not a
  resumed run), for a validation or component loss only when the main training loss
  agrees, and only when the same loss logged at another cadence agrees too. A first point at
  twice the rest or more learned at once, and flat after is converged, unless the accuracy is
  at chance;
- **frozen after the LR decayed**: from the step where the LR fell below `lr_floor` of its
  peak for good (not a cyclic schedule's trough), the loss gained next to nothing (or crept on at a tenth of the rate just before),
  while in the stretch just before it was still falling fast (a quarter of its total drop):
  the schedule, not the model, ended the progress;
- **back at its start after it had learned**: a flat tail (a `min_fraction` of the run) back near
  the starting level, after the loss had been well below it: a blow-up reset the model (a
  regression loss there predicts the mean); the excursion itself is a spike;
- **stuck at a trivial level**: within 1 % of a cross-entropy level ln(k) for k = 2..20 classes,
  i.e. the model predicts a uniform class prior, and its accuracy (logged beside it) at chance,
  within 25 % of 1/k (for 2 classes 0.375 to 0.625: a model at 0.74 has learned something). The level alone is no evidence: the ln(k) levels lie
  so close together (ln 11 - ln 10 = 0.095) that a loss converging anywhere between 1.5 and 3
  sits within 1 % of one a third of the time or more (a healthy language model's floor at
  2.307, ln 10 = 2.303; a regression MSE at ln 17).
A plateau far below the start, with the LR still alive, is a converged run: no finding.
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import Context, Hit, clean
from lrdiag.detect.robust import MAD_TO_SIGMA, block_medians, kendall_falling_p, log_scale, rolling_median
from lrdiag.series.model import Series
from lrdiag.series.roles import component

# ln(k) for k = 2..20 classes: beyond 20 the levels lie closer together (ln 21 - ln 20 = 0.05)
# than a plateau can be placed, and a regression loss would match one by chance.
_TRIVIAL_LEVELS = np.log(np.arange(2, 21))
_THREE_SIGMA = 0.00135  # the one-sided chance of a normal variable beyond three sigmas
_LEARNED = 2.0  # a first point this many times the median of the rest: the run learned in its first interval



def _percent(fraction: float) -> str:
    """A change as a percentage with the digits that tell it apart from none: 0.26%, 6.1%, 35%."""
    percent = 100 * fraction
    return f"{percent:.0f}%" if percent >= 10 else f"{percent:.2g}%"


def detect(series: Series, ctx: Context, min_fraction: float = 0.3, progress: float = 0.05,
           near_initial: float = 0.1, lr_floor: float = 0.01, min_points: int = 8) -> list[Hit]:
    steps, values = clean(series, ctx)
    if values.size < min_points or steps[-1] == steps[0]:
        return []
    y, is_log = log_scale(values)
    width = max(5, values.size // 20) | 1
    smooth = rolling_median(y, width)
    start = float(np.median(y[: max(3, values.size // 20)]))
    total_drop = start - float(smooth.min())
    noise = MAD_TO_SIGMA * float(np.median(np.abs(y - smooth)))
    tolerance = max(progress * max(total_drop, 0.0), 3 * noise / np.sqrt(width), 1e-9)
    end_level = float(np.median(y[-max(3, values.size // 10):]))
    span = float(steps[-1] - steps[0])
    unit = 1.0 if is_log else max(abs(start), 1e-12)  # drops are relative: log units, or a fraction of the start
    # A validation series starts after a first epoch of training, a component loss may start
    # low: "never improved" is only believed when the run's main training loss agrees.
    main = ctx.train_loss if ctx.train_loss is not None and ctx.train_loss is not series else None
    # A log that starts late (a resumed run) does not show where training started.
    starts_early = steps[0] <= 0.2 * max(steps[-1], 1)
    head, tail = max(3, values.size // 20), max(3, values.size // 10)
    # The same loss logged at another cadence (Lightning's train_loss_step and train_loss_epoch)
    # must agree too, where it has the points to judge (not HF's one final train_loss): an epoch
    # mean that falls at every epoch is progress its noisy steps hide.
    witnesses = [main] if main is not None else []
    witnesses += [other for other in ctx.run.by_role(series.role or "") if other is not series and other is not main
                  and component(other.tag) == component(series.tag) and len(other) >= min_points]
    if starts_early and _stuck_from_start(ctx, series, near_initial) and all(
            _stuck_from_start(ctx, other, near_initial) for other in witnesses):
        # Never got anywhere: stuck from the first point, however slowly it may creep.
        onset, kind = 0, "near_initial"
        drop = abs(start - end_level)
        why = (f"still within {_percent(np.expm1(drop) if is_log else drop / unit)} of where it started "
               f"(median {_units(start, is_log):.4g} over its first {head} points, "
               f"{_units(end_level, is_log):.4g} over its last {tail})")
        lr_now, lr_peak = _plateau_lr(ctx, int(steps[0]))
    elif (decay := _lr_death(ctx, steps, y, smooth, tolerance, total_drop, lr_floor, min_fraction)) is not None:
        onset, lr_now, lr_peak = decay
        kind, why = "lr_decayed", (f"the LR had decayed to {lr_now:.3g} ({100 * lr_now / lr_peak:.2g}% of its peak "
                                   f"{lr_peak:.3g}) while the loss was still falling fast")
    elif starts_early and (onset := _back_at_start(steps, y, is_log, near_initial, min_fraction, min_points)) is not None and (
            main is None or _back_at_start(*_log_series(main), near_initial, min_fraction, min_points) is not None):
        best = int(np.argmin(y[:onset]))
        kind, why = "back_at_start", (f"back near its starting level ({_units(np.median(y[:3]), is_log):.4g}, the median "
                                      f"of its first 3 points) after it had reached {values[best]:.4g} at step "
                                      f"{steps[best]}: the model lost what it had learned (a regression loss there "
                                      f"predicts the mean)")
        lr_now, lr_peak = _plateau_lr(ctx, int(steps[onset]))
    else:
        best_after = np.minimum.accumulate(smooth[::-1])[::-1]
        onset = int(np.argmax(smooth - best_after <= tolerance))
        fraction = float(steps[-1] - steps[onset]) / span
        if fraction < min_fraction or end_level > smooth[onset] + 2 * tolerance:
            return []  # still improving, converging at the end, or rising (divergence, explosion)
        level_value = float(np.median(values[onset:]))
        lr_now, lr_peak = _plateau_lr(ctx, int(steps[onset]))
        classes = _classes(level_value)
        accuracy = _accuracy_on(ctx, series, int(steps[onset]))
        if (is_log and abs(np.log(level_value) - np.log(_TRIVIAL_LEVELS[classes - 2])) < 0.01
                and _at_chance(accuracy, level_value)):
            kind, why = "trivial_level", (f"at ln({classes}) = {np.log(classes):.4g}, the loss of predicting the class "
                                          f"prior, with a median accuracy of {accuracy:.3g} (chance: {1 / classes:.3g})")
        else:
            return []
    if kind in ("near_initial", "lr_decayed") and _eval_keeps_falling(ctx, series, int(steps[onset]), near_initial):
        return []  # slow, steady progress: the evaluations say what a noisy training loss cannot
    # The numbers quoted are logged ones: the value at the onset step, and the plain median
    # of the logged values from there on (not a smoothed level).
    fraction = float(steps[-1] - steps[onset]) / span
    return [Hit(int(steps[onset]), int(steps[-1]), {
        "step": int(steps[onset]), "value": float(values[onset]), "kind": kind, "why": why,
        "level": float(np.median(values[onset:])), "initial": _units(start, is_log), "plateau_fraction": fraction,
        "lr_on_plateau": lr_now, "lr_peak": lr_peak})]


def _eval_keeps_falling(ctx: Context, series: Series, onset: int, near_initial: float) -> bool:
    """Whether the run's validation loss fell at every evaluation from `onset` on (three or more),
    by half of `near_initial` (log units, ~5 %) in all: a training loss judged stuck while its model
    keeps getting better at every evaluation is one whose noise hides a slow, steady descent (a
    Lightning run at a small LR: train_loss_step within 13 % of its start over 280 steps while
    five evaluations fell from 0.49 to 0.40). Half, not all of it: a fresh dev run at a small,
    linearly decaying LR (seed 2624) was called stalled with its five evaluations falling 5.9 % one
    after the other. An evaluation on a fixed set falls at every evaluation under a tiny LR too, but
    by little: over the 3,200 dev seeds stalled runs (an LR decayed early or tiny) fell by 3.5 % at
    most, slow healthy runs by 5.9 % or more."""
    if series.role != "train_loss" or ctx.val_loss is None:
        return False
    steps, values = clean(ctx.val_loss)
    after = values[steps >= onset]
    if after.size < 3 or (after <= 0).any():
        return False
    return bool((np.diff(after) < 0).all() and np.log(after[0] / after[-1]) >= near_initial / 2)


def _stuck_from_start(ctx: Context, series: Series, near_initial: float) -> bool:
    """Never improved (_never_improved), and not a loss that learned at once (_learned_at_once)
    unless its accuracy is at chance."""
    steps, values = clean(series, ctx)
    y, is_log = log_scale(values)
    if not _never_improved(steps, y, is_log, near_initial):
        return False
    if not _learned_at_once(y, is_log):
        return True
    return _at_chance(_accuracy_on(ctx, series, int(steps[0])), float(np.median(values[1:])))


def _learned_at_once(y: np.ndarray, is_log: bool) -> bool:
    """Its first logged point at `_LEARNED` times the median of all the rest or more: it learned, in its
    first interval, most of what it did (a linear regression at its noise floor from its second epoch
    on: 5.23, then 0.0895 slowly to 0.0875), and flat after that is converged, not stuck, unless its
    accuracy says it learned nothing (_at_chance: dead units after a bad start, 5.34 then ln 5 at 20 %).
    The median of the first few points that places the start hides such a first point. An LR that
    died before the first log (2.47, then 2.137 for 11 epochs) stays a stall."""
    return is_log and y.size >= 3 and y[0] - float(np.median(y[1:])) >= np.log(_LEARNED)


def _classes(level_value: float) -> int:
    """The class count k whose ln(k) lies nearest a loss level."""
    return int(np.argmin(np.abs(_TRIVIAL_LEVELS - level_value))) + 2


def _at_chance(accuracy: float | None, level_value: float) -> bool:
    """Whether an accuracy (_accuracy_on) is at chance, within 25 % of 1/k for the k whose ln(k)
    lies nearest the loss level: the model predicts a class prior."""
    classes = _classes(level_value)
    return accuracy is not None and 0.75 / classes <= accuracy <= 1.25 / classes


def _accuracy_on(ctx: Context, series: Series, onset: int) -> float | None:
    """Median accuracy (as a fraction) over the plateau, of the loss's own split when logged."""
    role = "val_acc" if series.role == "val_loss" else "train_acc"
    accuracy = ctx.run.primary(role) or ctx.run.primary("val_acc" if role == "train_acc" else "train_acc")
    if accuracy is None:
        return None
    steps, values = clean(accuracy)
    on = values[steps >= onset]
    if on.size == 0:
        return None
    median = float(np.median(on))
    return median / 100 if median > 1 else median  # some loggers write percent


def _units(level: float, is_log: bool) -> float:
    return float(np.exp(level)) if is_log else float(level)


def _log_series(series: Series) -> tuple[np.ndarray, np.ndarray, bool]:
    steps, values = clean(series)
    return (steps, *log_scale(values))


def _back_at_start(steps: np.ndarray, y: np.ndarray, is_log: bool, near_initial: float, min_fraction: float,
                   min_points: int) -> int | None:
    """Index where a flat tail back near the starting level begins, when the loss had been well
    below it before: it learned, then lost most of it (a blow-up that reset the model). The tail
    (`min_points` points or more) is flat when its smoothed values all stay within half of
    `near_initial`, or three noise sigmas of a smoothed value, of its end level; near the start
    when within `near_initial` of it (median of the first 3 points), and closer to it than to its
    best. A validation or component loss is believed only when the main training
    loss shows it too (a validation log starts after an epoch of training)."""
    width = max(5, y.size // 20) | 1
    smooth = rolling_median(y, width)
    start = float(np.median(y[:3]))
    end_level = float(np.median(y[-max(3, y.size // 10):]))
    enough = near_initial * (1.0 if is_log else max(abs(start), 1e-12))
    noise = MAD_TO_SIGMA * float(np.median(np.abs(y - smooth)))
    off = np.flatnonzero(np.abs(smooth - end_level) > max(enough / 2, 3 * noise / np.sqrt(width)))
    onset = int(off[-1]) + 1 if off.size else 0
    if (onset == 0 or y.size - onset < min_points
            or steps[-1] - steps[onset] < min_fraction * (steps[-1] - steps[0])):
        return None
    best = float(smooth[:onset].min())
    lost = end_level - best
    return onset if abs(end_level - start) < enough and lost >= 2 * enough and lost >= 0.5 * (start - best) else None


def _never_improved(steps: np.ndarray, y: np.ndarray, is_log: bool, near_initial: float) -> bool:
    """Neither at its end nor at its best (wide rolling median) `near_initial` below its start,
    nor fallen that far without a break (_steady_drop), and not risen above its best since: a
    flat line, not a curve that fell and came back."""
    if y.size < 3:
        return False
    # Wide medians: a noisy flat line must not look as if it improved by its luckiest stretch.
    smooth = rolling_median(y, max(5, y.size // 5) | 1)
    head = max(3, y.size // 20)
    start = float(np.median(y[:head]))  # the first points: where training started
    end = float(np.median(y[-max(3, y.size // 10):]))
    unit = 1.0 if is_log else max(abs(start), 1e-12)
    # On a noisy curve a few points place the start and the end only roughly: a drop must beat
    # the noise of the difference of their medians too (3 sigmas).
    noise = MAD_TO_SIGMA * float(np.median(np.abs(y - rolling_median(y, 5))))
    enough = max(near_initial * unit, 3 * noise * np.sqrt(1 / head + 1 / max(3, y.size // 10)))
    if enough > 3 * near_initial * unit:
        # So noisy that only a drop of 3x near_initial would show (8 single-batch losses a
        # run, +-30 %): such a series cannot tell that the loss is stuck; its run's other
        # losses may (the real stalls measured need at most 1.9x).
        return False
    best = float(smooth.min())
    # Still falling steadily over its second half (a quarter of the allowance or more) is a
    # run improving slowly, not a stuck one.
    middle_points = y[y.size // 2 - max(1, y.size // 20): y.size // 2 + max(1, y.size // 20) + 1]
    tail = max(3, y.size // 10)
    middle = float(np.median(middle_points))
    # ... unless that gain is within what noise does to two medians of so few points.
    noise_of_gain = 3 * noise * np.sqrt(1 / middle_points.size + 1 / tail)
    return (start - end < enough and start - best < 2 * enough and end - best < enough
            and middle - end < max(enough / 4, noise_of_gain) and _steady_drop(steps, y, enough) < enough)


def _steady_drop(steps: np.ndarray, y: np.ndarray, enough: float) -> float:
    """How far a loss that fell without a break fell, from its first to its last point (block
    medians of at most 64 blocks on a long series); 0 when it did not fall steadily (later points
    below earlier ones more often than noise does but with a chance of 0.135 %, a normal variable's
    three sigmas, by the Mann-Kendall score: exactly for a short log, whose normal approximation
    missed a slow HF-style run of 8 checkpoints falling at all but 2 of their 28 pairs, z -2.97).
    A loss falling at every checkpoint is improving however slowly, and its first point is then
    where it started: the median of the first few points of a falling curve sits well below it
    (8 HF checkpoints 4.63 to 3.97: 9 % between the end medians, 15 % from first to last; a
    20-epoch log whose first epoch already fell: 7 % against 15 %). A loss that fell in its first
    epoch and then sat flat (dead units) or crept by a fraction of a percent stays a stall: from its
    second point on it must fall a quarter of `enough` too, as a run improving slowly gains over
    its second half (an LR decayed to 4e-8 before the first log: 2.47, then 2.1373 down to 2.1371
    over 11 epochs, at every one of them)."""
    x, v = block_medians(steps, y)
    if v.size < 3 or kendall_falling_p(v) > _THREE_SIGMA or v[1] - v[-1] < enough / 4:
        return 0.0
    return float(v[0] - v[-1])


def _lr_death(ctx: Context, steps, y, smooth, tolerance: float, total_drop: float, lr_floor: float,
              min_fraction: float) -> tuple[int, float, float] | None:
    """(index, LR, peak LR) where the LR first fell below `lr_floor` of its peak, when the loss
    was falling fast just before (a quarter of its total drop over the preceding tenth of the
    points) and gained next to nothing after (or at a tenth of the rate just before), for at least
    `min_fraction` of the run."""
    if ctx.lr is None:
        return None
    lr_steps, lr_values = clean(ctx.lr)
    if lr_values.size == 0 or lr_values.max() <= 0:
        return None
    peak = int(np.argmax(lr_values))
    floor = lr_floor * lr_values[peak] * (1 + 1e-9)
    dead = np.flatnonzero((np.arange(lr_values.size) > peak) & (lr_values <= floor))
    # Dead for good: a cyclic schedule's trough or a warm restart's end rises again.
    if dead.size == 0 or lr_values[dead[0]:].max() > floor:
        return None
    onset = int(np.searchsorted(steps, lr_steps[dead[0]]))
    if onset >= steps.size or (steps[-1] - steps[onset]) < min_fraction * (steps[-1] - steps[0]):
        return None
    back = max(2, steps.size // 10)
    # The level a tenth of the run before: smoothed, unless the smoothing window reaches past the
    # log's first point there (a short log whose LR died a few points in: its median at the
    # start mirrors the points after and hides the fall), then the logged point itself.
    width = max(5, steps.size // 20) | 1
    first = max(0, onset - back)
    before = (smooth[first] if first >= width // 2 else max(smooth[first], float(y[first]))) - smooth[onset]
    gained_after = smooth[onset] - smooth[onset:].min()
    # Nothing gained after, or gained at a tenth of the rate (per point) of the stretch just
    # before: a residual LR may still creep (a 100x decay is not zero), the progress is gone.
    slow = gained_after / (steps.size - onset) < 0.1 * before / min(back, onset or 1)
    if before < 0.25 * total_drop or (gained_after > tolerance and not slow):
        return None
    return onset, float(lr_values[dead[0]]), float(lr_values[peak])


def _plateau_lr(ctx: Context, onset: int) -> tuple[float | None, float | None]:
    """The median LR over the plateau and the LR's peak. The median, not the LR at the onset:
    the smoothed loss flattens a few points before the LR drop that flattened it."""
    if ctx.lr is None:
        return None, None
    steps, values = clean(ctx.lr)
    if values.size == 0:
        return None, None
    on_plateau = values[steps >= onset]
    return float(np.median(on_plateau if on_plateau.size else values[-1:])), float(values.max())
