"""The likely cause of each instability finding: the learning rate, the data, or numerics.

A post-pass of the rules engine over its findings and the run's series, so that every detector
benefits. Each finding of a category in `CAUSED` gets `evidence["cause"]`, one of `CAUSES`, and
`evidence["cause_evidence"]`: the facts, each `{"says": cause, "fact": sentence, "points":
[{"metric", "step", "value"}, ...]}`, every number in the sentence a logged value at the step it
names (a test checks them against the series).

The facts, and why each points where it does:
- **lr**: at or just after the LR's peak or the end of its warmup, or while the LR was rising (an
  update that outgrew the loss surface's curvature); early in a run that started at its full LR
  with no warmup; the grad norm rising before it; a slow recovery (the update moved the weights,
  so every later batch is worse, not just one); the loss tracking the LR (a cyclic schedule);
  a short-period ring (an optimizer over its stability limit); a stall after the LR decayed.
- **data**: a single step of the training loss, back to the level at the next point (one batch was
  bad, the weights were not; a validation set does not change, so not there); the LR calm (not at a peak, not rising); recurring at the same position within each
  epoch when steps per epoch are known (an unshuffled or corrupt stretch of the data).
- **numeric**: NaN or Inf straight from the loss's usual level (no climb before it: an overflow,
  a log of zero, a division by zero), or a non-finite grad norm while the loss was still finite.
The cause with the most facts wins; data needs its defining fact (a single step, or recurrence
within each epoch), numeric too; a tie is `unknown`. A finding with no fact of its own (an epoch
mean spiking with the batch-level spike inside that epoch) takes the cause of the finer finding
it coincides with.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lrdiag.detect.base import clean
from lrdiag.detect.lrcontext import schedule
from lrdiag.detect.spike import lr_jump_text
from lrdiag.series.model import Run, Series
from lrdiag.series.roles import words

CAUSES = ("lr", "data", "numeric", "unknown")
CAUSED = {"spike", "oscillation", "explosion", "nonfinite", "stall"}
_NEAR = 0.05  # "just after" the LR's peak, "the window before": 5 % of the run's steps
_RISING = 1.1  # an LR 10 % above where it was over the window before is rising
_RING_POINTS = 16  # a ring of 3-16 points (LRD102's) is an optimizer over its stability limit, not a data order
_EPOCH_SLACK = 0.1  # an oscillation's period within 10 % of an epoch repeats with the data


@dataclasses.dataclass
class _Series:
    """One metric, cleaned once: steps ascending, finite values (and the raw values for NaN facts)."""

    tag: str
    steps: np.ndarray
    values: np.ndarray
    raw: Series

    @classmethod
    def of(cls, series: Series | None) -> "_Series | None":
        if series is None:
            return None
        steps, values = clean(series)
        return cls(series.tag, steps, values, series) if values.size else None

    def at(self, step: int) -> int:
        """Index of the last point at or before `step` (the value in force there), 0 before the first."""
        return max(int(np.searchsorted(self.steps, step, side="right")) - 1, 0)

    def point(self, index: int) -> dict:
        return {"metric": self.tag, "step": int(self.steps[index]), "value": float(self.values[index])}


def _json(value: float) -> float | str:
    """JSON has no NaN or Inf: such a logged value is written as a string, as the output model does."""
    if np.isfinite(value):
        return float(value)
    return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")


def _fact(says: str, text: str, *points: dict) -> dict:
    return {"says": says, "fact": text, "points": list(points)}


def _quote(point: dict) -> str:
    return f"{point['value']:.4g} at step {point['step']}"


def assign(findings: list, run: Run) -> list:
    """The findings, each of a category in CAUSED with its cause and the facts behind it.

    Findings that already carry a cause keep it (the engine runs this before its LR rules and
    again at the end)."""
    todo = [f for f in findings if f.category in CAUSED and "cause" not in f.evidence]
    if not todo:
        return findings
    lr = _Series.of(run.primary("lr"))
    grad = run.primary("grad_norm")
    first, last = _run_span(run)
    context = {"lr": lr, "shape": schedule(lr.raw) if lr else None, "grad": grad, "span": max(last - first, 1),
               "first": first, "epoch": steps_per_epoch(run)}
    own = {id(f): _judge(f, run, findings, context) for f in todo}
    judged = dict(own)
    # An epoch mean that spikes with the batch-level spike inside its epoch is the same event.
    known = [g for g in todo if own[id(g)][0] != "unknown"]
    for f in todo:
        cause, facts = own[id(f)]
        if cause == "unknown":
            twin = _coinciding(f, run, known)
            if twin is not None:
                cause = own[id(twin)][0]
                finer = _Series.of(run.series[twin.metric])
                point = finer.point(finer.at(_event(twin)))
                judged[id(f)] = (cause, facts + [_fact(cause, f"the same event as {twin.rule} on {twin.metric}, "
                                                              f"{_quote(point)}, whose cause it shares", point)])
    out = []
    for f in findings:
        if id(f) in judged:
            cause, facts = judged[id(f)]
            f = dataclasses.replace(f, evidence={**f.evidence, "cause": cause, "cause_evidence": facts})
        out.append(f)
    return out


def steps_per_epoch(run: Run) -> int | None:
    """Steps per epoch, from a loss logged once an epoch (Lightning's `train_loss_epoch`, Keras'
    `epoch_loss`) beside a step-level one: the usual gap between its points. None when unknown."""
    step_level = [s for s in run.series.values() if s.role == "train_loss" and "epoch" not in words(s.tag)]
    if not step_level:
        return None
    finest = min(float(np.median(np.diff(s.steps))) if s.steps.size > 1 else np.inf for s in step_level)
    for series in run.series.values():
        if series.role in ("train_loss", "val_loss") and "epoch" in words(series.tag) and series.steps.size >= 3:
            gaps = np.diff(np.unique(series.steps))
            gap = int(np.median(gaps))
            if gap > finest and (gaps == gap).mean() >= 0.8:
                return gap
    return None


def _run_span(run: Run) -> tuple[int, int]:
    """The first and last step any metric logged. Each array of steps once (a line's many keys share
    one), the short ones laid end to end first: a run of a million one-point metrics is two reductions."""
    logged = list({id(s.steps): s.steps for s in run.series.values() if s.steps.size}.values())
    if not logged:
        return 0, 0
    short = [steps for steps in logged if steps.size <= 64]
    logged = [steps for steps in logged if steps.size > 64] + ([np.concatenate(short)] if short else [])
    return min(int(steps.min()) for steps in logged), max(int(steps.max()) for steps in logged)


def _event(finding) -> int:
    return int(finding.evidence.get("step", finding.step_start))


def _per_epoch(series: Series, run: Run) -> bool:
    """A series of epoch means (or a Keras log, one row an epoch): one point is not one batch."""
    return "epoch" in words(series.tag) or run.source.startswith("keras")


def _judge(finding, run: Run, findings: list, context: dict) -> tuple[str, list]:
    series = _Series.of(run.series.get(finding.metric))
    if series is None:
        return "unknown", []
    facts = _lr_facts(finding, series, context)
    if finding.category == "spike":
        facts += _spike_facts(finding, series, run, findings, context)
    elif finding.category == "oscillation":
        facts += _oscillation_facts(finding, series, context)
    elif finding.category == "nonfinite":
        facts += _nonfinite_facts(finding, series, run, context)
    elif finding.category == "stall":
        facts = _stall_facts(finding, series, findings, context)
    if finding.category != "stall":
        facts += _grad_facts(finding, context)
    return _verdict(facts), facts


def _verdict(facts: list) -> str:
    counts = {cause: sum(f["says"] == cause for f in facts) for cause in ("lr", "data", "numeric")}
    defining = {f.get("defining") for f in facts}
    if "lr" in defining:  # a one-step jump of the LR right before the spike
        counts = {"lr": 1, "data": 0, "numeric": 0}
    if not defining & {"data"}:
        counts["data"] = 0
    if not defining & {"numeric"}:
        counts["numeric"] = 0
    best = max(counts.values())
    winners = [cause for cause, count in counts.items() if count == best]
    for fact in facts:
        fact.pop("defining", None)
    return winners[0] if best and len(winners) == 1 else "unknown"


# --- what the LR did -------------------------------------------------------------------------


def _lr_facts(finding, series: _Series, context: dict) -> list:
    lr, shape = context["lr"], context["shape"]
    if lr is None or finding.category in ("stall", "oscillation"):
        return []  # a stall has its own LR facts; an oscillation spans the LR's phases
    jumped = finding.evidence.get("lr_jump")
    if jumped:  # LRD101 found the spike just after a one-step jump of the logged LR: that decides it
        return [_fact("lr", lr_jump_text(jumped), lr.point(lr.at(jumped["step"]))) | {"defining": "lr"}]
    event = _event(finding) if finding.category != "oscillation" else finding.step_start
    near = _NEAR * context["span"]
    here = lr.at(event)
    now = lr.point(here)
    back = lr.at(event - near)
    window = (lr.steps >= event - near) & (lr.steps <= event + near)
    flat = lr.values[window].max(initial=now["value"]) <= _RISING * lr.values[window].min(initial=now["value"])
    rose_into = lr.values[window & (lr.steps <= event)].min(initial=now["value"]) * _RISING <= now["value"]
    facts = []
    if shape and shape["warmup"] and shape["peak_step"] <= event <= shape["peak_step"] + max(
            near, shape["warmup_steps"]):
        peak = lr.point(lr.at(shape["peak_step"]))
        facts.append(_fact("lr", f"just after the warmup ended with the LR at its peak, {_quote(peak)}", peak))
    elif now["value"] > _RISING * lr.values[back] and lr.steps[back] < now["step"]:
        facts.append(_fact("lr", f"the LR was rising, from {_quote(lr.point(back))} to {_quote(now)}",
                           lr.point(back), now))
    elif not flat and rose_into and now["value"] >= 0.99 * lr.values[window].max():
        facts.append(_fact("lr", f"at a peak of the LR: {_quote(now)}, within 1 % of the highest within {near:.0f} steps",
                           now))
    elif shape and not shape["warmup"] and now["value"] >= (1 - 0.01) * shape["peak"] and \
            event - context["first"] <= 0.2 * context["span"]:
        facts.append(_fact("lr", f"early in a run that started at its full LR with no warmup: {_quote(now)}",
                           now))
    else:
        calm = "held" if flat else ("decaying" if now["value"] < lr.values[back] else "moving slowly")
        fact = _fact("data", f"the LR was calm ({calm}, neither rising nor at a peak): {_quote(now)}", now)
        facts.append(fact)
    return facts


def _grad_facts(finding, context: dict) -> list:
    """The grad norm rising over the points before the finding: the updates grew before the loss broke."""
    grad = _Series.of(context["grad"])
    if grad is None:
        return []
    event = _event(finding) if finding.category != "oscillation" else finding.step_start
    before = np.flatnonzero(grad.steps < event)
    if before.size < 4:
        return []
    last = int(before[-1])
    earlier = before[-min(11, before.size):-1]
    low = int(earlier[np.argmin(grad.values[earlier])])
    if grad.values[last] >= 2 * np.median(grad.values[earlier]) and grad.values[last] >= 2 * grad.values[low]:
        return [_fact("lr", f"{grad.tag} rose before it, from {_quote(grad.point(low))} to "
                            f"{_quote(grad.point(last))}", grad.point(low), grad.point(last))]
    return []


# --- by category ---------------------------------------------------------------------------


def _spike_facts(finding, series: _Series, run: Run, findings: list, context: dict) -> list:
    peak = series.at(_event(finding))
    if peak < 1:
        return []
    y = np.log(np.maximum(series.values, 1e-300)) if (series.values > 0).all() else series.values
    level = float(np.median(y[max(0, peak - 5):peak]))
    back = level + 0.25 * (y[peak] - level)  # as the spike rule's recovery: a quarter of the rise
    facts = []
    before, at = series.point(peak - 1), series.point(peak)
    after = [series.point(i) for i in range(peak + 1, min(peak + 3, series.values.size))]
    if not after:
        return facts
    # A validation set does not change between evaluations: one bad point there is the weights', not a batch's.
    if y[peak - 1] <= back and y[peak + 1] <= back and not _per_epoch(series.raw, run) and \
            series.raw.role == "train_loss":
        fact = _fact("data", f"a single step: {_quote(before)}, {_quote(at)}, back at the next point, "
                             f"{_quote(after[0])}", before, at, after[0])
        fact["defining"] = "data"
        facts.append(fact)
    elif y[peak + 1] > back:
        still = " and ".join(_quote(p) for p in after)
        facts.append(_fact("lr", f"slow to recover: {_quote(at)}, still {still} (it was {_quote(before)} "
                                 f"before): the weights moved, not just one batch", at, *after, before))
    recurring = None if _per_epoch(series.raw, run) else _same_position_in_epoch(finding, findings, context["epoch"])
    if recurring:
        facts.append(recurring)
    return facts


def _same_position_in_epoch(finding, findings: list, per_epoch: int | None) -> dict | None:
    """Spikes of this metric at the same step within each epoch, in three epochs or more (an
    unshuffled bad sample recurs every epoch; two could be chance)."""
    if not per_epoch:
        return None
    mine = sorted({_event(f) for f in findings if f.category == "spike" and f.metric == finding.metric})
    offset = _event(finding) % per_epoch
    same = [step for step in mine if abs(step % per_epoch - offset) <= max(1, per_epoch // 100)]
    if len(same) < 3:
        return None
    fact = _fact("data", f"recurring at the same position in each epoch of {per_epoch} steps: at steps "
                         + ", ".join(map(str, same)))
    fact["defining"] = "data"
    return fact


def _oscillation_facts(finding, series: _Series, context: dict) -> list:
    facts = []
    lr = context["lr"]
    inside = (series.steps >= finding.step_start) & (series.steps <= finding.step_end)
    if lr is not None and inside.sum() >= 8:
        lr_here = lr.values[np.clip(np.searchsorted(lr.steps, series.steps[inside], side="right") - 1, 0, None)]
        y = np.log(np.maximum(series.values[inside], 1e-300))
        if lr_here.max() > 1.5 * lr_here.min() and np.std(y) > 0:
            r = _best_lagged_correlation(lr_here, y)
            if r >= 0.5:
                top = lr.point(lr.at(int(series.steps[inside][np.argmax(lr_here)])))
                low = lr.point(lr.at(int(series.steps[inside][np.argmin(lr_here)])))
                facts.append(_fact("lr", f"the loss tracks the LR (correlation {r:.2f}), which swings between "
                                         f"{_quote(low)} and {_quote(top)}", low, top))
    period_points = finding.evidence.get("period_points")
    period_steps = finding.evidence.get("period_steps")
    epoch = context["epoch"]
    if epoch and period_steps and abs(period_steps - epoch) <= _EPOCH_SLACK * epoch:
        fact = _fact("data", f"its period, about {period_steps:.0f} steps, is the epoch's {epoch} steps: "
                             f"it repeats with the data order")
        fact["defining"] = "data"
        facts.append(fact)
    elif period_points and period_points <= _RING_POINTS and not facts:
        now = lr.point(lr.at(finding.step_start)) if lr is not None else None
        held = f" under an LR of {_quote(now)}" if now else ""
        facts.append(_fact("lr", f"a ring of about {period_points:.0f} points{held}: an optimizer over its "
                                 f"stability limit", *([now] if now else [])))
    return facts


def _best_lagged_correlation(lr: np.ndarray, y: np.ndarray) -> float:
    """The loss answers the LR a few points late: the best correlation over lags of up to a tenth of
    the points (at most 21 of them, evenly spaced: a long run costs no more than a short one)."""
    best = -1.0
    for lag in np.unique(np.linspace(0, max(1, y.size // 10), 21).astype(int)):
        a, b = lr[: y.size - lag], y[lag:]
        if a.size >= 8 and np.std(a) > 0 and np.std(b) > 0:
            best = max(best, float(np.corrcoef(a, b)[0, 1]))
    return best


def _nonfinite_facts(finding, series: _Series, run: Run, context: dict) -> list:
    """NaN from the usual level (numeric) or after a climb (not numeric); a non-finite grad norm."""
    facts = []
    first_bad = finding.step_start
    before = np.flatnonzero(series.steps < first_bad)
    if series.raw.role != "grad_norm" and before.size >= 3:
        last = int(before[-1])
        earlier = before[-min(11, before.size):-1]
        low, high = int(earlier[np.argmin(series.values[earlier])]), int(earlier[np.argmax(series.values[earlier])])
        if series.values[last] <= 3 * max(series.values[high], 0.0) and series.values[last] <= 3 * np.median(
                series.values[earlier]):
            fact = _fact("numeric", f"straight from its usual level: the last finite point, "
                                    f"{_quote(series.point(last))}, within the points before it "
                                    f"({_quote(series.point(low))} to {_quote(series.point(high))})",
                         series.point(last), series.point(low), series.point(high))
            fact["defining"] = "numeric"
            facts.append(fact)
    grad = context["grad"]
    if grad is not None and grad is not series.raw:
        bad = np.flatnonzero(~np.isfinite(grad.values) & (grad.steps <= first_bad))
        loss_before = np.flatnonzero(series.steps <= (grad.steps[bad[0]] if bad.size else -np.inf))
        if bad.size:
            value = float(grad.values[bad[0]])
            point = {"metric": grad.tag, "step": int(grad.steps[bad[0]]), "value": _json(value)}
            logged = (f"; {series.tag} was logged as {_quote(series.point(int(loss_before[-1])))}"
                      if loss_before.size and series.steps[loss_before[-1]] == point["step"] else "")
            fact = _fact("numeric", f"{grad.tag} was non-finite ({value}) at step {point['step']}{logged}",
                         point, *([series.point(int(loss_before[-1]))] if logged else []))
            fact["defining"] = "numeric"
            facts.append(fact)
    elif series.raw.role == "grad_norm":
        loss = _Series.of(run.primary("train_loss"))
        if loss is not None and loss.steps[0] < first_bad:
            # The loss just before: at the same step a NaN-filtering logger may have written a stand-in.
            point = loss.point(loss.at(first_bad - 1))
            if np.isfinite(point["value"]):
                fact = _fact("numeric", f"the gradient turned non-finite at step {first_bad} with the loss finite "
                                        f"just before, {_quote(point)}", point)
                fact["defining"] = "numeric"
                facts.append(fact)
    return facts


def _stall_facts(finding, series: _Series, findings: list, context: dict) -> list:
    lr = context["lr"]
    if finding.evidence.get("kind") == "lr_decayed" and lr is not None and context["shape"]:
        onset = lr.point(lr.at(finding.step_start))
        peak = lr.point(lr.at(context["shape"]["peak_step"]))
        return [_fact("lr", f"the LR had decayed to {_quote(onset)} from its peak {_quote(peak)}", onset, peak)]
    blowups = [f for f in findings if f.metric == finding.metric and f.category in ("spike", "explosion", "nonfinite")
               and f.step_start <= finding.step_start + _NEAR * context["span"]]
    if blowups:
        blowup = min(blowups, key=_event)
        point = series.point(series.at(blowup.evidence.get("peak_step", _event(blowup))))
        return [_fact("lr", f"it stalled after the blow-up ({blowup.rule}) that peaked at {_quote(point)}: the "
                            f"update that threw the weights off, not a small LR", point)]
    return []


def _coinciding(finding, run: Run, judged: list):
    """A finding of another metric, logged as finely or finer, inside the stretch that this
    finding's point covers."""
    series = run.series.get(finding.metric)
    if series is None or series.steps.size < 2:
        return None
    event = _event(finding)
    index = int(np.searchsorted(series.steps, event))
    start = int(series.steps[index - 1]) if index > 0 else event - 1
    grain = float(np.median(np.diff(series.steps)))
    candidates = [g for g in judged if g.metric != finding.metric and g.category == finding.category
                  and start < _event(g) <= event and run.series[g.metric].steps.size > 1
                  and float(np.median(np.diff(run.series[g.metric].steps))) <= grain]
    # The same loss at a finer grain first (dynamics_loss_step for dynamics_loss_epoch), then the nearest.
    stem = set(words(finding.metric)) - {"epoch", "step"}
    return min(candidates, key=lambda g: (set(words(g.metric)) - {"epoch", "step"} != stem, event - _event(g)),
               default=None)
