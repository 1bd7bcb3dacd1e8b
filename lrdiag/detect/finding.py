"""A finding: one rule's verdict on one metric of one run, frozen and sortable."""

from __future__ import annotations

from dataclasses import dataclass, field

SEVERITIES = ("error", "warning", "info")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True, order=True)
class Finding:
    """Sort order: most severe first, then by metric and step."""

    severity_rank: int
    metric: str
    step_start: int
    step_end: int
    rule: str  # stable code, e.g. LRD101
    name: str  # dotted name, e.g. loss.spike
    category: str
    severity: str
    message: str
    evidence: dict = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "name": self.name,
            "category": self.category,
            "severity": self.severity,
            "metric": self.metric,
            "step_start": self.step_start,
            "step_end": self.step_end,
            "message": self.message,
            "evidence": self.evidence,
        }
