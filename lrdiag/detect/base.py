"""What a detector receives and returns: the contract between the rules engine and detectors.

A detector is a plain function `detect(series, ctx, **params) -> list[Hit]`, vectorized over
the series' points. `series` is one metric whose role the rule applies to; `ctx` gives the run's
other roles (its LR, its main training and validation losses) and the findings of rules with a
lower code, so that LR rules can reason about the instability findings before them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lrdiag.series.model import Run, Series


@dataclass
class Hit:
    """One detection: the step range it covers and its evidence (JSON-able values only).

    The evidence keys fill the rule's message template; `severity` overrides the rule's
    default for this hit (e.g. a spike that never recovers is worse than one that does)."""

    step_start: int
    step_end: int
    evidence: dict = field(default_factory=dict)
    severity: str | None = None


@dataclass
class Context:
    run: Run
    lr: Series | None = None
    train_loss: Series | None = None
    val_loss: Series | None = None
    findings: list = field(default_factory=list)  # Finding objects of rules that ran before

    @classmethod
    def of(cls, run: Run) -> "Context":
        return cls(run, run.primary("lr"), run.primary("train_loss"), run.primary("val_loss"))


def clean(series: Series, ctx: Context | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Steps ascending with one value per step (the last logged wins, as on a restart), finite only.
    With the run's `ctx`, a training loss's stand-ins for non-finite steps are left out too (see
    stand_ins): Transformers' 0.0 after a NaN is no level for a spike, stall or trend to start from."""
    steps, values = series.steps, series.values
    if ctx is not None:
        values = np.where(stand_ins(series, ctx), np.nan, values)
    if steps.size > 1 and (np.diff(steps) <= 0).any():
        # Reverse, keep the first of each step (= the last logged), then order by step.
        _, last = np.unique(steps[::-1], return_index=True)
        keep = steps.size - 1 - last
        steps, values = steps[keep], values[keep]
    finite = np.isfinite(values)
    return steps[finite], values[finite]


def stand_ins(series: Series, ctx: Context) -> np.ndarray:
    """Points of a training loss logged at a step where the run's grad norm is NaN: Hugging Face's
    Trainer (`logging_nan_inf_filter=True`, its default) logs a NaN step's loss as the mean of the
    finite steps (0.0 when none was) while `grad_norm` beside it is NaN."""
    grad = ctx.run.primary("grad_norm")
    if series.role != "train_loss" or grad is None or series is grad:
        return np.zeros(series.values.size, dtype=bool)
    return np.isin(series.steps, grad.steps[np.isnan(grad.values)])
