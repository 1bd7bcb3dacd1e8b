"""Offline schedule candidates: for a run's findings, torch schedulers that address them, sized from the log.

Every candidate's `code` is the single source of truth: its LR curve is what that code does to
a throwaway optimizer when torch's own scheduler runs it over the run's steps, and a replay runs
the very same code on the trainer's optimizer. The code expects an optimizer named `opt` and
defines `scheduler`; step it once after every optimizer step (ReduceLROnPlateau: with the loss).
One scheduler step is one step of the log's x axis (its `step`, or its epoch for epoch logs).

Candidates answer the cause each finding carries (detect/cause.py): schedules for LR causes (and
for unknown ones); gradient clipping, sized from the logged grad norms, and the batches to
inspect or skip for data causes; a guard against non-finite steps for numeric ones. A candidate
whose `kind` is not "schedule" is a change to the training loop, not a schedule: its `code` is a
snippet for the loop, it has no LR curve and is not replayed. A stalled loss gets a higher LR
only when the log shows the LR too small (a steady creep down); when the log cannot tell too
small from too large, the LR range test comes first. Every number a rationale quotes at a step
is the value logged at that step.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass

import numpy as np

from lrdiag.detect.base import clean
from lrdiag.detect.lrcontext import describe, schedule
from lrdiag.detect.spike import lr_jump_text
from lrdiag.series.model import Run

UNSTABLE = {"spike", "oscillation", "explosion", "nonfinite"}
NO_WARMUP_RULE = "LRD201"
CURVE_POINTS = 500  # enough to draw any schedule; a 100k-step curve stays a small JSON
CURVE_MAX_STEPS = 2_000_000  # a torch scheduler steps ~250k times a second: 8 s a candidate at most
REPLAY_EXTRA = "pip install 'lrdiag[replay]'"
_EARLY = 0.2  # as LRD201: instability in the first 20 % of the run is early
_FLOOR = 0.01  # warmups start, and cosines end, at 1 % of the peak
_WARMUP_MIN, _WARMUP_MAX = 0.05, 0.25  # warmup bounds, as fractions of the run
_WEIGHT_DECAY = 0.01  # AdamW's default; a floor, never lowering a larger one already set
_CLIP_PERCENTILE = 98  # clip above the healthy stretch's 98th percentile: 1 update in 50 trimmed, outliers cut
_CREEP_TAU = -0.5  # a plateau whose Kendall tau against the step is below this, at p < 0.01, creeps down steadily
SCHEDULE = "schedule"


@dataclass
class Candidate:
    name: str
    rationale: str
    params: dict
    code: str
    addresses: list[str]
    lr_curve: list[list[float]] | None = None
    confirmed: bool | None = None
    replay: dict | None = None  # the replays' evidence, once replayed (verdict.py)
    kind: str = SCHEDULE  # "schedule", or a change to the loop: "clipping", "batches", "range-test", "lr-guard"

    def to_dict(self) -> dict:
        entry = {"name": self.name, "rationale": self.rationale, "params": self.params, "code": self.code,
                 "lr_curve": self.lr_curve, "addresses": self.addresses, "confirmed": self.confirmed,
                 "kind": self.kind}
        if self.replay is not None:
            entry["replay"] = self.replay
        return entry


@dataclass
class Horizon:
    """The run a schedule is sized for: scheduler step 0 is the run's first step."""

    first: int
    total: int  # scheduler steps over the run
    lr: dict | None  # lrcontext.schedule() of the run's main LR; None when it logged none
    lr_series: object | None = None
    loss: np.ndarray | None = None  # the logged training loss at every scheduler step (held between points)
    run: Run | None = None

    @property
    def peak(self) -> float | None:
        return self.lr["peak"] if self.lr else None

    @property
    def warmup(self) -> int:
        return self.lr["warmup_steps"] if self.lr else 0

    @property
    def last(self) -> int:
        return self.first + self.total - 1


def horizon_of(run: Run) -> Horizon | None:
    logged = [s for s in run.series.values() if s.role in ("train_loss", "val_loss", "lr") and s.steps.size]
    if not logged:
        return None
    first = min(int(s.steps.min()) for s in logged)
    last = max(int(s.steps.max()) for s in logged)
    if last <= first:
        return None
    lr = run.primary("lr")
    shape = schedule(lr) if lr is not None else None
    loss = None
    train = run.primary("train_loss")
    if train is not None:
        steps, values = clean(train)
        if values.size:
            grid = np.arange(first, last + 1)
            # The last logged value holds until the next point, as the loss a callback would see.
            loss = values[np.clip(np.searchsorted(steps, grid, side="right") - 1, 0, values.size - 1)]
    return Horizon(first, last - first + 1, shape, lr if shape else None, loss, run)


def propose(run: Run, findings: list, curves: bool = True) -> list[Candidate]:
    """One candidate per name, addressing every finding it answers; none for a healthy run."""
    horizon = horizon_of(run)
    if horizon is None or not findings:
        return []
    made: dict[str, Candidate] = {}
    for maker in (_warmup, _lower_peak, _lr_glitch, _clip, _batches, _skip_nonfinite, _stall_after_decay,
                  _stall_near_initial, _overfit):
        for candidate in maker(findings, horizon):
            if candidate.name not in made:
                made[candidate.name] = candidate
                continue
            kept = made[candidate.name]
            kept.addresses = sorted(set(kept.addresses) | set(candidate.addresses))
            if candidate.rationale not in kept.rationale:
                kept.rationale += " " + candidate.rationale
    candidates = list(made.values())
    if curves and torch_available():
        for candidate in (c for c in candidates if c.kind == SCHEDULE):
            if horizon.total > CURVE_MAX_STEPS:
                candidate.rationale += (f" (Its LR curve is not drawn: {horizon.total:,} scheduler steps are too many "
                                        "to step through; is the log's step a sample count?)")
                continue
            candidate.lr_curve = subsample(lr_curve(candidate.code, horizon), horizon.first)
    return candidates


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


# --- what the LR did, in the findings' own evidence ----------------------------------------


def _lr_facts(finding, horizon: Horizon) -> dict:
    """The finding's LR evidence (attached by the engine), or worked out here when it lacks it."""
    if "lr_phase" in finding.evidence or horizon.lr_series is None:
        return finding.evidence
    return {**describe(horizon.lr_series, finding.step_start, finding.step_end), **finding.evidence}


def _lr_high(finding, horizon: Horizon) -> bool:
    """Was the LR near its peak at the finding? A spike under a decayed LR is not the LR's doing."""
    facts = _lr_facts(finding, horizon)
    if facts.get("lr_phase") is None:
        return True  # no LR logged: it may well be
    ratio = facts.get("lr_ratio_to_peak")
    return facts["lr_phase"] in ("constant", "at its peak", "warming up") or (ratio is not None and ratio >= 0.5)


def _step(finding) -> int:
    return int(finding.evidence.get("step", finding.step_start))


def _cause(finding) -> str:
    return finding.evidence.get("cause", "unknown")


def _lr_driven(finding) -> bool:
    """An instability a schedule can answer: caused by the LR, or of unknown cause (it may be); not
    one that followed a one-step jump of the LR, which no schedule makes (_lr_glitch)."""
    return finding.category in UNSTABLE and _cause(finding) in ("lr", "unknown") and "lr_jump" not in finding.evidence


def _lr_logged(horizon: Horizon, step: int) -> tuple[int, float] | None:
    """(step, LR) of the LR's last logged point at or before `step` (its first point before it starts)."""
    if horizon.lr is None:
        return None
    steps, values = horizon.lr["steps"], horizon.lr["values"]
    at = max(int(np.searchsorted(steps, step, side="right")) - 1, 0)
    return int(steps[at]), float(values[at])


def _cite(findings: list, horizon: Horizon) -> str:
    """'LRD101 loss.spike on train/loss at step 12 (LR 0.1 at step 12, constant)' for each rule and metric."""
    parts = []
    for rule, metric in sorted({(f.rule, f.metric) for f in findings}):
        group = sorted((f for f in findings if (f.rule, f.metric) == (rule, metric)), key=_step)
        steps = [str(_step(f)) for f in group]
        where = f"step {steps[0]}" if len(steps) == 1 else "steps " + ", ".join(steps[:5]) + (", ..." if len(steps) > 5 else "")
        logged = _lr_logged(horizon, _step(group[0]))
        lr = ""
        if logged is not None:
            phase = describe(horizon.lr_series, _step(group[0]), _step(group[0])).get("lr_phase")
            lr = f" (LR {logged[1]:.3g} at step {logged[0]}, {phase})"
        parts.append(f"{rule} {group[0].name} on {metric} at {where}{lr}")
    return "; ".join(parts)


# --- code ---------------------------------------------------------------------------------


def _num(value: float) -> float:
    """Three significant digits: what a person would write, and exactly what the code says."""
    return float(f"{value:.3g}")


def _code(scheduler: str, classes: set[str], lr: float | None = None, weight_decay: float | None = None,
          plateau: bool = False) -> str:
    lines = [f"from torch.optim.lr_scheduler import {', '.join(sorted(classes))}"]
    if "math." in scheduler:
        lines.insert(0, "import math")
    if lr is not None or weight_decay is not None:
        lines.append("for group in opt.param_groups:")
        if lr is not None:
            lines.append(f'    group["lr"] = {lr!r}  # the peak LR')
        if weight_decay is not None:
            lines.append(f'    group["weight_decay"] = max(group.get("weight_decay", 0.0), {weight_decay!r})')
    lines.append(f"scheduler = {scheduler}")
    lines.append("# then, after every optimizer step: " + ("scheduler.step(loss)" if plateau else "scheduler.step()"))
    return "\n".join(lines) + "\n"


def _after_warmup(warmup: int, main: str, main_class: str) -> tuple[str, set[str]]:
    if warmup <= 0:
        return main, {main_class}
    return (f"SequentialLR(opt, [LinearLR(opt, start_factor={_FLOOR}, total_iters={warmup}), {main}], "
            f"milestones=[{warmup}])", {"SequentialLR", "LinearLR", main_class})


def _cosine(horizon: Horizon, peak: float | None, warmup: int) -> tuple[str, set[str]]:
    eta_min = _num(_FLOOR * peak) if peak else 0.0
    return _after_warmup(warmup, f"CosineAnnealingLR(opt, T_max={horizon.total - warmup}, eta_min={eta_min!r})",
                         "CosineAnnealingLR")


def build_scheduler(code: str, opt):
    """Run a candidate's code on an optimizer; the scheduler it defines."""
    namespace = {"opt": opt}
    exec(compile(code, "<lrdiag candidate>", "exec"), namespace)  # noqa: S102 - code lrdiag wrote itself
    return namespace["scheduler"]


def lr_curve(code: str, horizon: Horizon) -> np.ndarray:
    """The LR at every scheduler step of the run, by torch's own scheduler on a throwaway optimizer.

    A Python loop, not numpy: a torch scheduler is a state machine that only steps one at a time."""
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=horizon.peak or 1.0, momentum=0.9)
    opt.step()  # a scheduler warns when it steps before its optimizer ever did
    values = np.empty(horizon.total)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's own deprecated step(0) call
        scheduler = build_scheduler(code, opt)
        plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        # ReduceLROnPlateau decides on a loss: this run's own logged training loss.
        loss = horizon.loss if horizon.loss is not None else np.ones(horizon.total)
        values[0] = opt.param_groups[0]["lr"]
        for index in range(1, horizon.total):
            scheduler.step(float(loss[index - 1])) if plateau else scheduler.step()
            values[index] = opt.param_groups[0]["lr"]
    return values


def subsample(values: np.ndarray, first: int, points: int = CURVE_POINTS) -> list[list[float]]:
    """At most `points` [[step, lr], ...]: both sides of every jump (StepLR's drops), the rest evenly spaced."""
    jumps = np.flatnonzero(np.abs(np.diff(values)) > 0.05 * max(float(np.abs(values).max()), 1e-300))
    if jumps.size > points // 10:
        jumps = jumps[:0]  # a staircase of many small jumps is drawn well enough by even points
    sides = np.union1d(jumps, jumps + 1)
    even = np.linspace(0, values.size - 1, max(2, min(points - sides.size, values.size))).round().astype(int)
    keep = np.union1d(even, sides)
    return [[int(first + index), float(values[index])] for index in keep]


# --- the candidates -------------------------------------------------------------------------


def _warmup(findings: list, horizon: Horizon) -> list[Candidate]:
    """Instability early in the run under a full-size LR: warm up past it, then cosine."""
    cutoff = horizon.first + _EARLY * (horizon.total - 1)
    # Early and over early: an instability that lasts through half the run or more (a loss locked
    # to a cyclic LR, an oscillation that fills the run) is the peak's doing, not the start's.
    early = [f for f in findings if _lr_driven(f) and f.step_start <= cutoff and _lr_high(f, horizon)
             and f.step_end - f.step_start < 0.5 * (horizon.total - 1)]
    if not early:
        return []
    no_warmup = [f for f in findings if f.rule == NO_WARMUP_RULE]
    last = max(_step(f) for f in early) - horizon.first
    # Twice as long as the instability lasted: the LR then reaches its peak only once the
    # loss has settled, bounded to the 5-25 % of the run that common warmups take.
    wanted = 2 * (last + 1)
    warming = horizon.warmup > 0 and any(_lr_facts(f, horizon).get("lr_phase") == "warming up" for f in early)
    if warming:
        wanted = max(wanted, 2 * horizon.warmup)  # the run's own warmup was too short
    warmup = int(np.clip(wanted, math.ceil(_WARMUP_MIN * horizon.total), max(1, int(_WARMUP_MAX * horizon.total))))
    peak = _num(horizon.peak) if horizon.peak else None
    scheduler, classes = _cosine(horizon, peak, warmup)
    before = (f"its own warmup of {horizon.warmup} steps was too short" if warming
              else "the LR started at its peak, with no warmup")
    size = f"from {_num(_FLOOR * peak)!r} to {peak!r}" if peak else "from 1 % to 100 % of your LR"
    rationale = (f"{_cite(early + no_warmup, horizon)}: instability early in the run, and {before}. Warm the LR "
                 f"up linearly {size} over the first {warmup} steps ({_warmup_why(last + 1, horizon.warmup if warming else 0, wanted, warmup)}), "
                 f"then anneal it with a cosine to 1 % of "
                 f"the peak at step {horizon.last}.")
    return [Candidate("warmup-cosine", rationale,
                      {"lr": peak, "warmup_steps": warmup, "start_factor": _FLOOR, "T_max": horizon.total - warmup,
                       "eta_min": _num(_FLOOR * peak) if peak else 0.0},
                      _code(scheduler, classes, lr=peak), sorted({f.rule for f in early + no_warmup}))]


def _warmup_why(steps: int, own: int, wanted: int, warmup: int) -> str:
    """Why the warmup is that long, in words whose numbers add up: twice the steps up to the last
    early instability, or twice the run's own warmup when that was longer, brought within the
    5-25 % of the run that common warmups take."""
    why = (f"twice the run's own warmup of {own} steps" if own and 2 * own >= 2 * steps
           else f"twice the {steps} step{'s' if steps != 1 else ''} up to the last early instability")
    return why if warmup == wanted else f"{why}, {wanted}, brought within the 5-25 % of the run that common warmups take"


def _lower_peak(findings: list, horizon: Horizon) -> list[Candidate]:
    """Instability with the LR at its peak: a lower peak, from the LR the loss was stable at."""
    unstable = [f for f in findings if _lr_driven(f) and _lr_high(f, horizon)]
    if not unstable or horizon.lr is None:
        return []
    peak = horizon.peak
    first_bad = min(f.step_start for f in unstable)
    lr_steps, lr_values = horizon.lr["steps"], horizon.lr["values"]
    earlier = np.flatnonzero(lr_steps < first_bad)
    before = lr_values[earlier]
    at_step, lr_then = _lr_logged(horizon, first_bad)
    peak_step = horizon.lr["peak_step"]
    if before.size and before.max() < (1 - _FLOOR) * peak:
        highest = int(earlier[np.argmax(before)])
        stable = float(before.max())
        why = (f"the loss was stable up to an LR of {stable:.3g} at step {int(lr_steps[highest])} (the highest "
               f"logged before step {first_bad}, where it first went wrong)")
    elif before.size and lr_then >= (1 - _FLOOR) * peak:
        stable = peak / 2
        why = (f"the LR was already at its peak, {lr_then:.3g} at step {at_step}, when the loss first went wrong at "
               f"step {first_bad}, so no lower LR is known to be safe: half of it")
    elif before.size:
        stable = peak / 2
        why = (f"the LR had peaked at {peak:.3g} at step {peak_step} and was {lr_then:.3g} at step {at_step} when "
               f"the loss first went wrong at step {first_bad}: half the peak stays below the LR that failed")
    else:
        stable = peak / 3
        why = "the loss was unstable from the first logged step, so no LR is known to be safe: a third of the peak"
    # Half the peak at most, since the peak itself failed; a tenth at least, or the run crawls.
    new_peak = _num(float(np.clip(stable, peak / 10, peak / 2)))
    cite = _cite(unstable, horizon)
    scheduler, classes = _cosine(horizon, new_peak, horizon.warmup)
    warmup_note = f" after the run's own {horizon.warmup}-step warmup" if horizon.warmup else ""
    lower = Candidate(
        "lower-peak", f"{cite}: {why}. Lower the peak from {peak:.3g} (step {peak_step}) to {new_peak!r}{warmup_note} and anneal it "
                      f"with a cosine to 1 % of it by step {horizon.last}.",
        {"lr": new_peak, "previous_peak": _num(peak), "warmup_steps": horizon.warmup,
         "T_max": horizon.total - horizon.warmup, "eta_min": _num(_FLOOR * new_peak)},
        _code(scheduler, classes, lr=new_peak), sorted({f.rule for f in unstable}))
    one_cycle = Candidate(
        "one-cycle", f"{cite}: {why}. OneCycleLR with that lower peak: up from {_num(new_peak / 25)!r} to "
                     f"{new_peak!r} over the first 25 % of the run, then a cosine down to almost nothing by step "
                     f"{horizon.last} (momentum left alone, so only the LR changes).",
        {"max_lr": new_peak, "total_steps": horizon.total, "pct_start": 0.25},
        _code(f"OneCycleLR(opt, max_lr={new_peak!r}, total_steps={horizon.total}, pct_start=0.25, "
              f"anneal_strategy=\"cos\", cycle_momentum=False)", {"OneCycleLR"}),
        # It starts at a 25th of its peak: a warmup, so it answers LRD201 too.
        sorted({f.rule for f in unstable} | {f.rule for f in findings if f.rule == NO_WARMUP_RULE}))
    return [lower, one_cycle]


def _facts_for(findings: list, causes: tuple) -> str:
    """The cause facts (cause.py) behind these findings, as sentences: each quotes logged values."""
    said = []
    for f in sorted(findings, key=_step):
        for fact in f.evidence.get("cause_evidence", []):
            if fact["says"] in causes and fact["fact"] not in said:
                said.append(fact["fact"])
    return "; ".join(said[:4])


def _data_driven(findings: list) -> list:
    return [f for f in findings if f.category in UNSTABLE and _cause(f) == "data"]


def _clip(findings: list, horizon: Horizon) -> list[Candidate]:
    """A bad batch's gradient throws the weights off: clip the grad norm at what healthy steps reach.

    For data causes, and unknown ones (an oversized update is clipped whatever made it)."""
    hit = [f for f in findings if f.category in UNSTABLE and _cause(f) in ("data", "unknown")
           and f.category != "nonfinite"]
    if not hit:
        return []
    first_bad = min(f.step_start for f in hit)
    grad = horizon.run.primary("grad_norm") if horizon.run is not None else None
    steps, values = clean(grad) if grad is not None else (np.empty(0), np.empty(0))
    healthy = steps < first_bad
    cite = _cite(hit, horizon)
    facts = _facts_for(hit, ("data",))
    if healthy.sum() >= 5:
        # The order statistic itself (not an interpolation): a value the run really logged.
        order = np.argsort(values[healthy], kind="stable")
        pick = order[min(order.size - 1, int(np.ceil(_CLIP_PERCENTILE / 100 * order.size)) - 1)]
        max_norm = _num(float(values[healthy][pick]))
        at = int(steps[healthy][pick])
        why = (f"clip at {max_norm!r}, from {grad.tag} {values[healthy][pick]:.4g} at step {at}: the "
               f"{_CLIP_PERCENTILE}th percentile of the {int(healthy.sum())} grad norms logged before step "
               f"{first_bad}, where the loss first went wrong")
        params = {"max_norm": max_norm, "percentile": _CLIP_PERCENTILE, "from_step": at,
                  "healthy_points": int(healthy.sum()), "grad_norm_series": grad.tag}
        norm = repr(max_norm)
    else:
        why = ("no grad norm was logged before it: log the value clip_grad_norm_ returns (with max_norm=inf it "
               f"only measures) for a few hundred healthy steps, and clip at its {_CLIP_PERCENTILE}th percentile")
        params = {"max_norm": None, "percentile": _CLIP_PERCENTILE}
        norm = None
    code = ("import torch\n"
            + (f"max_norm = {norm}\n" if norm else
               "max_norm = float(\"inf\")  # measures only: log grad_norm, then set its 98th percentile here\n")
            + "# in the training loop, between loss.backward() and opt.step():\n"
            "grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)\n")
    return [Candidate(
        "clip-gradients",
        f"{cite}: {facts + '. ' if facts else ''}One update far larger than the others, which clipping bounds "
        f"without slowing the healthy steps: {why}. The LR schedule stays as it is.",
        params, code, sorted({f.rule for f in hit}), kind="clipping")]


def _lr_glitch(findings: list, horizon: Horizon) -> list[Candidate]:
    """A spike right after a one-step jump of the logged LR (LRD101's lr_jump): no schedule jumps so,
    something set the LR; find it, and cap the LR at the schedule's own highest logged value."""
    hit = [f for f in findings if "lr_jump" in f.evidence]
    if not hit or horizon.lr_series is None:
        return []
    jumps = {f.evidence["lr_jump"]["step"]: f.evidence["lr_jump"] for f in hit}
    steps, values = clean(horizon.lr_series)
    usual = np.ones(steps.size, dtype=bool)
    for jump in jumps.values():  # the logged points the LR stood jumped at
        usual &= (steps < jump["step"]) | (steps > jump["held_to"])
    if not usual.any():
        return []
    top = int(np.flatnonzero(usual)[np.argmax(values[usual])])
    cap = float(values[top])  # the logged value itself: rounded down, it would cap the schedule's own peak
    said = "; ".join(lr_jump_text(jump) for _, jump in sorted(jumps.items()))
    code = (f"MAX_LR = {cap!r}  # the schedule's highest logged LR but for the jump ({horizon.lr_series.tag}, step "
            f"{int(steps[top])})\n"
            "# in the training loop, right before opt.step():\n"
            "for group in opt.param_groups:\n"
            "    if group[\"lr\"] > MAX_LR:\n"
            "        print(f\"step {step}: lr {group['lr']} above the schedule's {MAX_LR}: capped\")  # what set it?\n"
            "        group[\"lr\"] = MAX_LR\n")
    return [Candidate(
        "cap-lr-jumps",
        f"{_cite(hit, horizon)}: {said}. No schedule does that: something set it (a scheduler stepped out of turn "
        f"or twice, a manual override, a value restored from a checkpoint). Find what did; until then cap the LR at "
        f"the schedule's highest logged value otherwise, {values[top]:.4g} at step {int(steps[top])}. The schedule "
        f"stays as it is.",
        {"max_lr": cap, "from_step": int(steps[top]), "jump_steps": sorted(jumps)}, code,
        sorted({f.rule for f in hit}), kind="lr-guard")]


def _batches(findings: list, horizon: Horizon) -> list[Candidate]:
    """Data-driven spikes: the batches at those steps are worth a look, and skipping."""
    hit = _data_driven(findings) + [f for f in findings if f.category == "nonfinite" and _cause(f) == "numeric"]
    if not hit:
        return []
    steps = sorted({_step(f) for f in hit})
    facts = _facts_for(hit, ("data", "numeric"))
    code = ("import torch\n"
            f"SUSPECT_STEPS = {steps!r}  # logged steps whose batch to look at\n"
            "# in the training loop, with `step` counted as in your log:\n"
            "if step in SUSPECT_STEPS:\n"
            "    torch.save(batch, f\"suspect_batch_{step}.pt\")  # labels, NaN/Inf inputs, scale, duplicates\n"
            "if not torch.isfinite(loss):\n"
            "    opt.zero_grad(set_to_none=True)  # skip the update of a batch that breaks the loss\n"
            "    continue\n")
    return [Candidate(
        "inspect-batches",
        f"{_cite(hit, horizon)}: the batch, not the LR: {facts}. Look at the batches of steps "
        f"{', '.join(map(str, steps[:10]))}: wrong labels, NaN/Inf or unscaled inputs, a corrupt file; fix or drop "
        f"them, and skip any step whose loss is not finite.",
        {"steps": steps}, code, sorted({f.rule for f in hit}), kind="batches")]


def _skip_nonfinite(findings: list, horizon: Horizon) -> list[Candidate]:
    """NaN/Inf from the usual level: a numeric fault, guarded in the loop, not by the schedule."""
    hit = [f for f in findings if f.category == "nonfinite" and _cause(f) == "numeric"]
    if not hit:
        return []
    first = min(hit, key=_step)
    code = ("import torch\n"
            "# in the training loop, after loss.backward():\n"
            "grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=float(\"inf\"))  # measures only\n"
            "if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):\n"
            "    opt.zero_grad(set_to_none=True)  # skip the step; count and log it\n"
            "else:\n"
            "    opt.step()\n")
    return [Candidate(
        "skip-nonfinite",
        f"{_cite(hit, horizon)}: non-finite straight from its usual level, a numeric fault (an fp16 overflow, a "
        f"log or division of zero), not an LR too high: skip steps whose loss or grad norm is not finite, use "
        f"bf16 or a loss scaler, guard logs and divisions with an epsilon, and resume from a checkpoint before "
        f"step {_step(first)}.",
        {"first_step": _step(first)}, code, sorted({f.rule for f in hit}), kind="clipping")]


def _stall_after_decay(findings: list, horizon: Horizon) -> list[Candidate]:
    """The loss froze once the LR had decayed while it was still falling: decay later or gentler."""
    stalls = [f for f in findings if f.category == "stall" and f.evidence.get("kind") == "lr_decayed"]
    if not stalls or horizon.lr is None:
        return []
    peak = _num(horizon.peak)
    onset = min(_step(f) for f in stalls) - horizon.first
    remaining = horizon.total - 1 - onset
    # Halfway and three quarters into what was the plateau: the loss gets the steps it was
    # denied at the full LR, and still anneals before the end.
    milestones = [onset + remaining // 2, onset + 3 * remaining // 4]
    warmup = horizon.warmup if horizon.warmup < milestones[0] else 0
    facts = stalls[0].evidence
    lr_on_plateau = facts.get("lr_on_plateau")
    decayed = (f"the LR had decayed to {lr_on_plateau:.3g} ({100 * lr_on_plateau / horizon.peak:.2g} % of its peak "
               f"{horizon.peak:.3g})" if lr_on_plateau is not None else "the LR had decayed")
    cite = f"{_cite(stalls, horizon)}: {decayed} while the loss was still falling fast"
    addresses = sorted({f.rule for f in stalls})
    step_decay, step_classes = _after_warmup(
        warmup, f"MultiStepLR(opt, milestones={[m - warmup for m in milestones]}, gamma=0.1)", "MultiStepLR")
    cosine, cosine_classes = _cosine(horizon, peak, warmup)
    patience = max(10, round(0.05 * horizon.total))
    return [
        Candidate("later-step-decay",
                  f"{cite}. Keep the peak {peak!r} until step {horizon.first + milestones[0]}, halfway through what "
                  f"was the plateau, then divide it by 10 there and again at step {horizon.first + milestones[1]}.",
                  {"lr": peak, "milestones": milestones, "gamma": 0.1, "warmup_steps": warmup},
                  _code(step_decay, step_classes, lr=peak), addresses),
        Candidate("cosine-to-end",
                  f"{cite}. Decay gently instead: a cosine from {peak!r} that reaches 1 % of it only at the last "
                  f"step, {horizon.last}.",
                  {"lr": peak, "T_max": horizon.total - warmup, "eta_min": _num(_FLOOR * peak), "warmup_steps": warmup},
                  _code(cosine, cosine_classes, lr=peak), addresses),
        Candidate("reduce-on-plateau",
                  f"{cite}. Or let the loss decide: ReduceLROnPlateau halves the LR from {peak!r} only after "
                  f"{patience} steps without improvement (its curve here replays this run's logged loss).",
                  {"lr": peak, "factor": 0.5, "patience": patience, "min_lr": _num(1e-3 * peak)},
                  _code(f"ReduceLROnPlateau(opt, mode=\"min\", factor=0.5, patience={patience}, "
                        f"min_lr={_num(1e-3 * peak)!r})", {"ReduceLROnPlateau"}, lr=peak, plateau=True),
                  addresses),
    ]


def _stall_near_initial(findings: list, horizon: Horizon) -> list[Candidate]:
    """Stuck near the initial loss with nothing unstable: a higher LR only when the loss creeps down
    steadily (the LR moves it, too slowly); a flat loss is what a too-small LR, dead units or a
    collapsed model all give, so the LR range test decides first."""
    stalls = [f for f in findings if f.category == "stall" and f.evidence.get("kind") == "near_initial"]
    if not stalls or horizon.lr is None or any(f.category in UNSTABLE for f in findings):
        return []
    onset = min(_step(f) for f in stalls)
    lr_step, lr_now = _lr_logged(horizon, onset)
    if horizon.lr["values"].max() > lr_now:  # the LR rose after the stall's start: the peak is what it ran at
        peak_index = int(np.argmax(horizon.lr["values"]))
        lr_step, lr_now = int(horizon.lr["steps"][peak_index]), float(horizon.lr["values"][peak_index])
    cite = _cite(stalls, horizon)
    creep = _creep(stalls, horizon)
    sweep = 100
    gamma = _num(1e4 ** (1 / sweep))
    start = _num(lr_now / 100)
    end = start * gamma ** sweep
    range_test = (f"run an LR range test: from an LR of {start!r}, `ExponentialLR(opt, gamma={gamma!r})` for "
                  f"{sweep} steps sweeps up to {end:.3g}; take the LR a decade below the one where the loss "
                  f"turns up")
    addresses = sorted({f.rule for f in stalls})
    if creep is None:
        return [Candidate(
            "lr-range-test",
            f"{cite}: still near its initial value, and flat: no steady creep down, so the log cannot tell an LR "
            f"too small from one too large (dead units or a model collapsed to predicting the prior are flat "
            f"too, and a higher LR would make those worse). Before changing the LR ({lr_now:.3g} at step "
            f"{lr_step}), {range_test}.",
            {"current_lr": _num(lr_now), "start_lr": start, "gamma": gamma, "steps": sweep, "end_lr": _num(end)},
            _code(f"ExponentialLR(opt, gamma={gamma!r})", {"ExponentialLR"}, lr=start).replace(
                "# the peak LR", "# where the sweep starts").replace(
                "# then, after every optimizer step: scheduler.step()",
                f"# a short test run, not a schedule: scheduler.step() after each of {sweep} optimizer steps, "
                "logging the loss"),
            addresses, kind="range-test")]
    new_peak = _num(10 * lr_now)
    warmup = max(1, math.ceil(_WARMUP_MIN * horizon.total))
    scheduler, classes = _cosine(horizon, new_peak, warmup)
    return [Candidate(
        "higher-lr",
        f"{cite}: still near its initial value under an LR of {lr_now:.3g} at step {lr_step}, with no spike, "
        f"oscillation or explosion anywhere, and creeping down steadily ({creep}): the LR moves the loss, too "
        f"slowly. Raise the peak tenfold to {new_peak!r}, warmed up over {warmup} steps and annealed with a "
        f"cosine. To choose it precisely, {range_test}.",
        {"lr": new_peak, "previous_lr": _num(lr_now), "warmup_steps": warmup, "T_max": horizon.total - warmup,
         "eta_min": _num(_FLOOR * new_peak),
         "range_test": {"start_lr": start, "gamma": gamma, "steps": sweep}},
        _code(scheduler, classes, lr=new_peak), addresses)]


def _creep(stalls: list, horizon: Horizon) -> str | None:
    """'val/loss from 0.5665 at step 99 to 0.5642 at step 999, lower at 100 % of pairs of points' when a
    stalled loss falls steadily over its plateau (Kendall tau below -0.5, p < 0.01), else None."""
    if horizon.run is None:
        return None
    from scipy.stats import kendalltau  # scipy.stats takes a while to import: only when a stall needs it

    for f in stalls:
        series = horizon.run.series.get(f.metric)
        if series is None:
            continue
        steps, values = clean(series)
        on = steps >= f.step_start
        if on.sum() < 6:
            continue
        tau, p_value = kendalltau(steps[on], values[on])
        if tau <= _CREEP_TAU and p_value < 0.01:
            first, last = np.flatnonzero(on)[[0, -1]]
            return (f"{f.metric} from {values[first]:.4g} at step {steps[first]} to {values[last]:.4g} at step "
                    f"{steps[last]}, Kendall tau {tau:.2f} against the step")
    return None


def _overfit(findings: list, horizon: Horizon) -> list[Candidate]:
    """Validation loss rising after its best step: stop there, decay to the end, or regularise."""
    rising = [f for f in findings if f.category == "train_val_divergence"]
    if not rising:
        return []
    best = min(int(f.evidence.get("best_step", f.step_start)) for f in rising) - horizon.first
    if best < 1:
        return []
    peak = _num(horizon.peak) if horizon.peak else None
    cite = _cite(rising, horizon)
    addresses = sorted({f.rule for f in rising})
    at_peak = f"from {peak!r}" if peak else "from your LR"
    candidates = [Candidate(
        "stop-at-best",
        f"{cite}: validation was best at step {horizon.first + best}. Stop there: anneal the LR {at_peak} with a "
        f"cosine to 0 at that step, after which the weights no longer move, so the last checkpoint is the best one "
        f"(and the annealed finish usually lowers the validation loss a little further).",
        {"lr": peak, "stop_step": horizon.first + best},
        _code(f"LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, {best}) / {best})))",
              {"LambdaLR"}, lr=peak), addresses)]
    scheduler, classes = _cosine(horizon, peak, horizon.warmup)
    ends_high = horizon.lr is not None and horizon.lr["values"][-1] > 0.1 * horizon.peak
    if ends_high:
        candidates.append(Candidate(
            "cosine-to-end",
            f"{cite}: the LR was still at {horizon.lr['values'][-1]:.3g} at the end; a cosine from {peak!r} to 1 % "
            f"of it by step {horizon.last} lets the model settle instead of fitting noise at a high LR.",
            {"lr": peak, "T_max": horizon.total - horizon.warmup, "eta_min": _num(_FLOOR * peak) if peak else 0.0,
             "warmup_steps": horizon.warmup},
            _code(scheduler, classes, lr=peak), addresses))
    candidates.append(Candidate(
        "weight-decay",
        f"{cite}: the model fits its training data ever better and new data worse. Regularise: weight decay of at "
        f"least {_WEIGHT_DECAY} (decoupled with AdamW; for SGD 5e-4 is the usual scale), with the LR annealed by a "
        f"cosine {at_peak} to 1 % of it by step {horizon.last}.",
        {"lr": peak, "weight_decay": _WEIGHT_DECAY, "T_max": horizon.total - horizon.warmup,
         "warmup_steps": horizon.warmup},
        _code(scheduler, classes, lr=peak, weight_decay=_WEIGHT_DECAY), addresses))
    return candidates
