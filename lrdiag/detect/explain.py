"""Findings that a larger finding on the same metric already explains are dropped.

An oscillating loss peaks every period, an exploding one jumps before it blows up, and a loss
jumps just before it turns NaN: reporting each of those peaks as a spike buries the one finding
that says what happened. A spike is explained when it lies inside an oscillation or explosion
of the same metric, or in the last tenth of the steps before that metric's first NaN/Inf.
"""

from __future__ import annotations

_EXPLAINERS = {"oscillation", "explosion", "nonfinite"}


def _explains(big, spike) -> bool:
    if big.metric != spike.metric or big.category not in _EXPLAINERS:
        return False
    step = spike.evidence.get("step", spike.step_start)
    if big.category == "nonfinite":
        first_bad = big.step_start
        return first_bad - 0.1 * max(first_bad, 1) <= step <= first_bad
    return big.step_start <= step <= big.step_end


def drop_explained(findings: list) -> list:
    bigger = [f for f in findings if f.category in _EXPLAINERS]
    return [f for f in findings if f.category != "spike" or not any(_explains(big, f) for big in bigger)]
