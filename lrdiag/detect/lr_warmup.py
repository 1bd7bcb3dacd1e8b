"""Instability with no warmup: spikes, oscillation, explosion or NaN early in a run whose LR
started at its peak. Reads the findings of the instability rules that ran before it.

"Early" is the first `early_fraction` of the run's steps: warmup schedules in common use
(Transformers' warmup_ratio 0.03-0.1, Goyal et al.'s 5 epochs of 90) sit well inside 20 %.
Findings whose cause (cause.py) is the data or numerics are not the schedule's doing: a bad
batch early in the run is no reason to warm up.
"""

from __future__ import annotations

from lrdiag.detect.base import Context, Hit
from lrdiag.detect.lrcontext import schedule
from lrdiag.series.model import Series

_UNSTABLE = {"spike", "oscillation", "explosion", "nonfinite"}


def detect(series: Series, ctx: Context, early_fraction: float = 0.2) -> list[Hit]:
    if series is not ctx.lr:
        return []  # one verdict per run, on its main LR (others are param groups of it)
    shape = schedule(series)
    if shape is None or shape["warmup"]:
        return []
    run_steps = [s.steps for s in ctx.run.series.values() if s.role in ("train_loss", "val_loss") and s.steps.size]
    if not run_steps:
        return []
    first = min(int(s.min()) for s in run_steps)
    last = max(int(s.max()) for s in run_steps)
    cutoff = first + early_fraction * (last - first)
    early = sorted((f for f in ctx.findings if f.category in _UNSTABLE and f.step_start <= cutoff
                    and f.evidence.get("cause") not in ("data", "numeric")), key=lambda f: f.step_start)
    if not early:
        return []
    codes = sorted({f.rule for f in early})
    return [Hit(early[0].step_start, early[-1].step_end, {
        "lr_start": float(shape["values"][0]), "lr_peak": shape["peak"], "findings": len(early),
        "rules": ", ".join(codes), "first_step": early[0].step_start,
        "schedule": "constant" if shape["constant"] else "starts at its peak"})]
