"""Offline schedule candidates: for a run's findings, torch schedulers that address them, sized from the log.

Every candidate's `code` is the single source of truth: its LR curve is what that code does to
a throwaway optimizer when torch's own scheduler runs it over the run's steps, and a replay runs
the very same code on the trainer's optimizer. The code expects an optimizer named `opt` and
defines `scheduler`; step it once after every optimizer step (ReduceLROnPlateau: with the loss).
One scheduler step is one step of the log's x axis (its `step`, or its epoch for epoch logs).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass

import numpy as np

from lrdiag.detect.base import clean
from lrdiag.detect.lrcontext import describe, schedule
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

    def to_dict(self) -> dict:
        entry = {"name": self.name, "rationale": self.rationale, "params": self.params, "code": self.code,
                 "lr_curve": self.lr_curve, "addresses": self.addresses, "confirmed": self.confirmed}
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
    return Horizon(first, last - first + 1, shape, lr if shape else None, loss)


def propose(run: Run, findings: list, curves: bool = True) -> list[Candidate]:
    """One candidate per name, addressing every finding it answers; none for a healthy run."""
    horizon = horizon_of(run)
    if horizon is None or not findings:
        return []
    made: dict[str, Candidate] = {}
    for maker in (_warmup, _lower_peak, _stall_after_decay, _stall_near_initial, _overfit):
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
        for candidate in candidates:
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


def _cite(findings: list, horizon: Horizon) -> str:
    """'LRD101 loss.spike on train/loss at steps 12, 40 (LR 0.1, constant)' for each rule and metric."""
    parts = []
    for rule, metric in sorted({(f.rule, f.metric) for f in findings}):
        group = sorted((f for f in findings if (f.rule, f.metric) == (rule, metric)), key=_step)
        steps = [str(_step(f)) for f in group]
        where = f"step {steps[0]}" if len(steps) == 1 else "steps " + ", ".join(steps[:5]) + (", ..." if len(steps) > 5 else "")
        facts = _lr_facts(group[0], horizon)
        lr = f" (LR {facts['lr_at_step']:.3g}, {facts['lr_phase']})" if facts.get("lr_at_step") is not None else ""
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
    early = [f for f in findings if f.category in UNSTABLE and f.step_start <= cutoff and _lr_high(f, horizon)]
    if not early:
        return []
    no_warmup = [f for f in findings if f.rule == NO_WARMUP_RULE]
    last = max(_step(f) for f in early) - horizon.first
    # Twice as long as the instability lasted: the LR then reaches its peak only once the
    # loss has settled, bounded to the 5-25 % of the run that common warmups take.
    warmup = 2 * (last + 1)
    warming = horizon.warmup > 0 and any(_lr_facts(f, horizon).get("lr_phase") == "warming up" for f in early)
    if warming:
        warmup = max(warmup, 2 * horizon.warmup)  # the run's own warmup was too short
    warmup = int(np.clip(warmup, math.ceil(_WARMUP_MIN * horizon.total), max(1, int(_WARMUP_MAX * horizon.total))))
    peak = _num(horizon.peak) if horizon.peak else None
    scheduler, classes = _cosine(horizon, peak, warmup)
    before = (f"its own warmup of {horizon.warmup} steps was too short" if warming
              else "the LR started at its peak, with no warmup")
    size = f"from {_num(_FLOOR * peak)!r} to {peak!r}" if peak else "from 1 % to 100 % of your LR"
    rationale = (f"{_cite(early + no_warmup, horizon)}: instability early in the run, and {before}. Warm the LR "
                 f"up linearly {size} over the first {warmup} steps (twice the {last + 1} steps up to the last "
                 f"early instability, kept within 5-25 % of the run), then anneal it with a cosine to 1 % of "
                 f"the peak at step {horizon.last}.")
    return [Candidate("warmup-cosine", rationale,
                      {"lr": peak, "warmup_steps": warmup, "start_factor": _FLOOR, "T_max": horizon.total - warmup,
                       "eta_min": _num(_FLOOR * peak) if peak else 0.0},
                      _code(scheduler, classes, lr=peak), sorted({f.rule for f in early + no_warmup}))]


def _lower_peak(findings: list, horizon: Horizon) -> list[Candidate]:
    """Instability with the LR at its peak: a lower peak, from the LR the loss was stable at."""
    unstable = [f for f in findings if f.category in UNSTABLE and _lr_high(f, horizon)]
    if not unstable or horizon.lr is None:
        return []
    peak = horizon.peak
    first_bad = min(f.step_start for f in unstable)
    lr_steps, lr_values = horizon.lr["steps"], horizon.lr["values"]
    before = lr_values[lr_steps < first_bad]
    if before.size and before.max() < (1 - _FLOOR) * peak:
        stable = float(before.max())
        why = (f"the loss was stable up to an LR of {stable:.3g} (the highest before step {first_bad}, "
               f"where it first went wrong)")
    elif before.size:
        stable = peak / 2
        why = (f"the LR was already at its peak {peak:.3g} when the loss first went wrong at step {first_bad}, so "
               f"no lower LR is known to be safe: half of it")
    else:
        stable = peak / 3
        why = "the loss was unstable from the first logged step, so no LR is known to be safe: a third of the peak"
    # Half the peak at most, since the peak itself failed; a tenth at least, or the run crawls.
    new_peak = _num(float(np.clip(stable, peak / 10, peak / 2)))
    cite = _cite(unstable, horizon)
    scheduler, classes = _cosine(horizon, new_peak, horizon.warmup)
    warmup_note = f" after the run's own {horizon.warmup}-step warmup" if horizon.warmup else ""
    lower = Candidate(
        "lower-peak", f"{cite}: {why}. Lower the peak from {peak:.3g} to {new_peak!r}{warmup_note} and anneal it "
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
    """Stuck near the initial loss with nothing unstable: the LR is more likely too small than too big."""
    stalls = [f for f in findings if f.category == "stall" and f.evidence.get("kind") == "near_initial"]
    if not stalls or horizon.lr is None or any(f.category in UNSTABLE for f in findings):
        return []
    lr_now = stalls[0].evidence.get("lr_on_plateau") or horizon.peak
    new_peak = _num(10 * max(lr_now, horizon.peak))
    warmup = max(1, math.ceil(_WARMUP_MIN * horizon.total))
    scheduler, classes = _cosine(horizon, new_peak, warmup)
    sweep = 100
    gamma = _num(1e4 ** (1 / sweep))
    return [Candidate(
        "higher-lr",
        f"{_cite(stalls, horizon)}: still near its initial value under an LR of {lr_now:.3g}, with no spike, "
        f"oscillation or explosion anywhere, so the LR is more likely too small than too large. Raise the peak "
        f"tenfold to {new_peak!r}, warmed up over {warmup} steps and annealed with a cosine. To choose it "
        f"precisely, run an LR range test first: from an LR of {_num(lr_now / 100)!r}, "
        f"`ExponentialLR(opt, gamma={gamma!r})` for {sweep} steps sweeps four decades; take the LR a decade "
        f"below the one where the loss turns up.",
        {"lr": new_peak, "previous_lr": _num(lr_now), "warmup_steps": warmup, "T_max": horizon.total - warmup,
         "eta_min": _num(_FLOOR * new_peak),
         "range_test": {"start_lr": _num(lr_now / 100), "gamma": gamma, "steps": sweep}},
        _code(scheduler, classes, lr=new_peak), sorted({f.rule for f in stalls}))]


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
