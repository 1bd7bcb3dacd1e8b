"""Score replays with the rules engine and judge each candidate against the control, seed by seed.

A candidate is confirmed when (1) the control reproduced at least one finding it addresses,
(2) none of the findings it addresses is left in any seed of its own replays, and (3) its loss at
the horizon is not worse than the control's beyond the seeds' spread: the mean over seeds of
(candidate - control), each pair sharing a seed and so a model initialisation and data order,
is at most the standard deviation of the control's horizon loss across seeds (0 with one seed).
"""

from __future__ import annotations

import math

import numpy as np

from lrdiag.ingest.discover import find_runs
from lrdiag.ingest.runs import read_run
from lrdiag.recommend.replay import CONTROL

RANKS = {"confirmed": 0, "not confirmed": 1, "inconclusive": 2, "failed": 3}


def score(outcome: dict, engine) -> dict:
    """Add the replay's findings (rule codes) from its own TensorBoard log, read as any run is."""
    if outcome["status"] not in ("ok", "nan"):
        return {**outcome, "findings": []}
    specs = find_runs([outcome["logdir"]])
    findings = engine.run(read_run(specs[0])) if specs else []
    return {**outcome, "findings": sorted({finding.rule for finding in findings})}


def judge(candidates: list, outcomes: list[dict]) -> dict:
    """Set `confirmed` and a `replay` entry on every candidate, rank them; the control's summary."""
    control = {o["seed"]: o for o in outcomes if o["label"] == CONTROL}
    seeds = sorted(control)
    control_losses = np.array([_loss(control[seed]) for seed in seeds])
    finite = control_losses[np.isfinite(control_losses)]
    spread = float(np.std(finite, ddof=1)) if finite.size >= 2 else 0.0
    seen = {}  # rule -> seeds of the control that show it
    for seed in seeds:
        for rule in control[seed]["findings"]:
            seen.setdefault(rule, []).append(seed)
    broken = [control[seed] for seed in seeds if control[seed]["status"] in ("failed", "timeout")]
    for candidate in candidates:
        mine = {o["seed"]: o for o in outcomes if o["label"] == candidate.name}
        entry = _judge_one(candidate, mine, control, seeds, seen, spread, broken)
        candidate.confirmed = entry["status"] == "confirmed"
        candidate.replay = entry
    candidates.sort(key=lambda c: (RANKS[c.replay["status"]], _sortable(c.replay["mean_difference"])))
    return {"seeds": seeds, "findings": {rule: len(found) for rule, found in sorted(seen.items())},
            "horizon_loss": [_json(value) for value in control_losses], "spread": spread,
            "statuses": [control[seed]["status"] for seed in seeds],
            "reasons": [control[seed]["reason"] for seed in seeds if control[seed]["reason"]],
            "logdirs": [control[seed]["logdir"] for seed in seeds]}


def _judge_one(candidate, mine: dict, control: dict, seeds: list, seen: dict, spread: float, broken: list) -> dict:
    per_seed = []
    for seed in seeds:
        own = mine[seed]
        difference = _loss(own) - _loss(control[seed])
        per_seed.append({"seed": seed, "status": own["status"], "reason": own["reason"],
                         "horizon_loss": own["horizon_loss"], "control_loss": control[seed]["horizon_loss"],
                         "difference": _json(difference), "findings": own["findings"],
                         "left": sorted(set(own["findings"]) & set(candidate.addresses)), "logdir": own["logdir"]})
    differences = np.array([_loss(mine[seed]) - _loss(control[seed]) for seed in seeds])
    mean_difference = float(differences.mean()) if differences.size else math.nan
    entry = {"seeds": per_seed, "mean_difference": _json(mean_difference), "spread": spread}
    failed = [s for s in per_seed if s["status"] != "ok"]
    reproduced = sorted(rule for rule in candidate.addresses if rule in seen)
    left = sorted({rule for s in per_seed for rule in s["left"]})
    if failed:
        first = failed[0]
        return {**entry, "status": "failed", "reason": f"seed {first['seed']}: {first['reason']}"}
    if broken:
        return {**entry, "status": "inconclusive",
                "reason": f"the control failed in seed {broken[0]['seed']} ({broken[0]['reason']}): nothing to compare with"}
    if not reproduced:
        return {**entry, "status": "inconclusive",
                "reason": f"the control did not reproduce {', '.join(candidate.addresses)} in any seed, so there is "
                          f"nothing to confirm at this horizon"}
    counts = ", ".join(f"{rule} in {len(seen[rule])}/{len(seeds)}" for rule in reproduced)
    versus = (f"horizon loss {_mean(mine, seeds):.4g} vs the control's {_mean(control, seeds):.4g} "
              f"(mean paired difference {mean_difference:+.3g}, seeds' spread {spread:.3g})")
    if left:
        where = ", ".join(f"{rule} in seed{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks))}"
                          for rule in left for ks in [[s["seed"] for s in per_seed if rule in s["left"]]])
        return {**entry, "status": "not confirmed", "reason": f"still found: {where} (control: {counts}); {versus}"}
    if not mean_difference <= spread:
        return {**entry, "status": "not confirmed",
                "reason": f"{', '.join(reproduced)} gone in every seed (control: {counts}), but worse: {versus}"}
    return {**entry, "status": "confirmed",
            "reason": f"{', '.join(reproduced)} gone in {len(seeds)}/{len(seeds)} seeds (control: {counts}); {versus}"}


def _loss(outcome: dict) -> float:
    """The horizon loss; a replay that went NaN is infinitely bad, one that failed is unknown."""
    if outcome["status"] == "nan":
        return math.inf
    value = outcome.get("horizon_loss")
    return float(value) if value is not None else math.nan


def _mean(outcomes: dict, seeds: list) -> float:
    return float(np.mean([_loss(outcomes[seed]) for seed in seeds]))


def _sortable(value) -> float:
    value = float(value)  # "-inf" too: a control that went NaN makes any finite candidate the best
    return math.inf if math.isnan(value) else value


def _json(value: float):
    """JSON has no NaN or Inf: write them as strings, as the output model does."""
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
