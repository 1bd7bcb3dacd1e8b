"""Incidents: the findings of one run that describe one event, grouped.

One blow-up shows on every loss it touched (the total and its components, `box_loss` / `obj_loss` /
`cls_loss`), and again on the epoch means (Lightning's `train_loss_epoch`, logged at the end of the
epoch that holds the step-level spike). Reported one finding each, a person reads a tool crying wolf.

The rule, and why it is this one:
- Findings group when they share a category (a spike and a stall at the same steps are two stories)
  and their step ranges overlap once each is widened, on both sides, by its own metric's logging
  interval (the median step between its points). An epoch mean logged every 63 steps that spikes at
  step 16190 holds the step loss's spike at 16149: the epoch mean's point stands for the interval
  before it. A metric logged every 50 steps cannot place an event closer than 50 steps either. So the
  tolerance is what each metric's own logging rate allows, not a window tuned to a log.
- Overlap chains: a finding that overlaps any member of a group joins it (the groups are the
  connected parts of the overlap relation, found by a sweep over the widened starts).
- The headline is the strongest finding: the most severe, then the largest size, the height of its
  peak above its level (`evidence["peak"]` and `evidence["level"]`, or an explosion's `start_level`),
  in the metric's units: the total loss, which holds its components, before them; the step loss,
  whose spike the epoch mean averages down, before its epoch mean. Then the first in the findings'
  order. A finding without a peak and a level has size 0. The incident's severity is the headline's.

Every finding belongs to exactly one incident (most to an incident of one); the findings keep their
own entries in the output, and an incident lists them by index.
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.finding import SEVERITY_RANK


def logging_interval(steps) -> int:
    """The median step between a metric's distinct steps (0 for fewer than two)."""
    steps = np.asarray(steps, dtype=float)
    steps = steps[np.isfinite(steps)]
    if (steps[1:] < steps[:-1]).any():  # logs are nearly always in step order: sort only when not
        steps = np.sort(steps)
    gaps = np.diff(steps)
    gaps = gaps[gaps != 0]  # between distinct steps
    return int(np.median(gaps)) if gaps.size else 0


def _size(finding: dict) -> float:
    evidence = finding.get("evidence", {})
    peak, level = evidence.get("peak"), evidence.get("level", evidence.get("start_level"))
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (peak, level)):
        return 0.0
    size = abs(float(peak) - float(level))
    return size if np.isfinite(size) else 0.0


def group(findings: list[dict], intervals: dict[str, int]) -> list[dict]:
    """The incidents of one run's `findings` (dicts as in the JSON output, in their output order);
    `intervals`: each metric's logging interval in steps (a metric missing from it counts 0).

    Each incident: {"id", "category", "severity", "step_start", "step_end", "metrics", "headline",
    "findings"}; `headline` and `findings` are indexes into `findings`, `metrics` the metrics touched
    (the headline's first), `step_start`/`step_end` the span of its findings' own (unwidened) steps.
    Incidents come most severe first, then by step."""
    parts: list[list[int]] = []
    for category in dict.fromkeys(f["category"] for f in findings):
        members = [i for i, f in enumerate(findings) if f["category"] == category]
        widened = {i: (findings[i]["step_start"] - intervals.get(findings[i]["metric"], 0),
                       findings[i]["step_end"] + intervals.get(findings[i]["metric"], 0)) for i in members}
        reach = None
        for i in sorted(members, key=lambda i: widened[i]):
            if reach is not None and widened[i][0] <= reach:
                parts[-1].append(i)
                reach = max(reach, widened[i][1])
            else:
                parts.append([i])
                reach = widened[i][1]
    incidents = []
    for members in parts:
        members.sort()
        head = min(members, key=lambda i: (SEVERITY_RANK[findings[i]["severity"]], -_size(findings[i]), i))
        metrics = list(dict.fromkeys([findings[head]["metric"]] + [findings[i]["metric"] for i in members]))
        incidents.append({"category": findings[head]["category"], "severity": findings[head]["severity"],
                          "step_start": min(findings[i]["step_start"] for i in members),
                          "step_end": max(findings[i]["step_end"] for i in members),
                          "metrics": metrics, "headline": head, "findings": members})
    incidents.sort(key=lambda incident: (SEVERITY_RANK[incident["severity"]], incident["step_start"],
                                         incident["headline"]))
    return [{"id": number, **incident} for number, incident in enumerate(incidents, 1)]


def others(run: dict, incident: dict) -> list[dict]:
    """The findings of `incident` other than its headline, in output order."""
    return [run["findings"][i] for i in incident["findings"] if i != incident["headline"]]
