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


def clean(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """Steps ascending with one value per step (the last logged wins, as on a restart), finite only."""
    steps, values = series.steps, series.values
    if steps.size > 1 and (np.diff(steps) <= 0).any():
        # Reverse, keep the first of each step (= the last logged), then order by step.
        _, last = np.unique(steps[::-1], return_index=True)
        keep = steps.size - 1 - last
        steps, values = steps[keep], values[keep]
    finite = np.isfinite(values)
    return steps[finite], values[finite]
