"""Match findings to labels, run by run, and tally precision, recall and F1 per category.

Pure functions over plain dicts: a manifest record (labels, acceptable categories) and lrdiag's
JSON entry of the run (`findings`, `metrics` with each metric's role, points and step range).

A run counts as detected for a labelled category when a warning or error finding of that
category lands on one of the label's metrics (or on any metric of the label's role: the same
loss logged per step and per epoch, or in two files) with a step range that overlaps the label's
span [onset, end] (end = onset for a one-step event) widened by the tolerance. The tolerance is
max(10 % of the run's logged span, 3 logged intervals) of the label's metric: enough for a
mechanism whose trace shows a little after the step it was applied at (an LR jump shows in the
next steps, a 10-step mean shows a bad batch at the next log), too little to credit a finding
somewhere else in the run.

Per run and category: TP (labelled, detected), FN (labelled, not detected), FP (not labelled, not
an acceptable consequence of the run's pathology, yet a warning or error of that category on any
metric), TN; a category listed as acceptable and not labelled is not counted either way (the
scenario's consequences, and what the run's log measured besides: labels.measured_acceptable).
"""

from __future__ import annotations

CATEGORIES = ("spike", "oscillation", "stall", "train_val_divergence", "nonfinite", "explosion")
LOUD = ("warning", "error")


def tolerance(label: dict, metrics: dict) -> float:
    """max(10 % of the logged span, 3 logged intervals) of the label's metric (or its role's)."""
    candidates = [metrics[m] for m in label["metrics"] if m in metrics] or [
        entry for entry in metrics.values() if entry.get("role") == label["role"]]
    spans = [(entry["last_step"] - entry["first_step"], entry["points"]) for entry in candidates
             if entry.get("points", 0) > 1]
    if not spans:
        return 0.0
    span, points = max(spans)
    return max(0.1 * span, 3 * span / (points - 1))


def matches(finding: dict, label: dict, metrics: dict, tol: float) -> bool:
    if finding["severity"] not in LOUD or finding["category"] != label["category"]:
        return False
    on_metric = finding["metric"] in label["metrics"] or metrics.get(finding["metric"], {}).get("role") == label["role"]
    end = label["onset"] if label.get("end") is None else label["end"]
    return on_metric and finding["step_start"] <= end + tol and finding["step_end"] >= label["onset"] - tol


def acceptable(record: dict) -> list[str]:
    """The categories not counted on a run that is not labelled with them: its scenario's
    consequences, and what its log measured besides (labels.measured_acceptable)."""
    return [*record.get("acceptable", []), *record.get("acceptable_measured", [])]


def score_run(record: dict, entry: dict) -> dict[str, str | None]:
    """{category: 'TP' | 'FN' | 'FP' | 'TN' | None (acceptable, not counted)} for one run."""
    findings, metrics = entry.get("findings", []), entry.get("metrics", {})
    outcome: dict[str, str | None] = {}
    for category in CATEGORIES:
        labels = [label for label in record["labels"] if label["category"] == category]
        if labels:
            found = any(matches(f, label, metrics, tolerance(label, metrics)) for label in labels for f in findings)
            outcome[category] = "TP" if found else "FN"
        elif category in acceptable(record):
            outcome[category] = None
        else:
            loud = any(f["category"] == category and f["severity"] in LOUD for f in findings)
            outcome[category] = "FP" if loud else "TN"
    return outcome


def any_loud(entry: dict) -> bool:
    return any(f["severity"] in LOUD for f in entry.get("findings", []))


def tally(outcomes: list[dict[str, str | None]], categories=CATEGORIES) -> dict:
    """Per category: TP, FP, FN, precision, recall, F1; and the macro-F1 over the categories."""
    table = {}
    for category in categories:
        counts = {kind: sum(o.get(category) == kind for o in outcomes) for kind in ("TP", "FP", "FN")}
        tp, fp, fn = counts["TP"], counts["FP"], counts["FN"]
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        table[category] = {**counts, "precision": precision, "recall": recall, "f1": f1}
    scored = [row["f1"] for row in table.values() if row["f1"] is not None]
    return {"categories": table, "macro_f1": sum(scored) / len(scored) if scored else None}
