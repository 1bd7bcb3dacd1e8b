"""A baseline: a compact summary of runs to commit and gate against (`lrdiag baseline save`).

    {"schema": 1, "kind": "lrdiag-baseline", "lrdiag": "<version>",
     "runs": [{"run", "source", "primary": {role: tag},
               "metrics": {tag: {"role", "first_step", "last_step", "points", "nonfinite",
                                 "start", "best", "best_step", "final",
                                 "checkpoints": [[step, value], ...],
                                 "milestones": {"0.5": {"level", "step"}, ...}}},
               "findings": [{"rule", "name", "severity", "metric", "role", "step_start", "step_end", "message"}]}]}

Values are read off a rolling median of the curve (a window of about 2 % of the points, at
most 101), so that one noisy step does not move the best value or a milestone: `best` is its
lowest point, `final` the median of the last window of points, a milestone the first step at
which the loss has made that fraction of its drop from `start` to `best`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lrdiag import __version__, safeio
from lrdiag.detect.base import clean
from lrdiag.detect.robust import median_filter
from lrdiag.errors import LrdiagError
from lrdiag.series.model import Run, Series

SCHEMA = 1
KIND = "lrdiag-baseline"
LOSS_ROLES = ("val_loss", "train_loss")
FRACTIONS = (0.5, 0.8, 0.9, 0.95)
CHECKPOINTS = 11  # 0 %, 10 %, ..., 100 % of the run's steps
_MAX_WINDOW = 101


def window(points: int) -> int:
    """The rolling-median window: about 2 % of the points, odd, between 1 and 101."""
    return min(max(points // 50, 1) | 1, _MAX_WINDOW)


def smoothed(series: Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Finite points in step order and their rolling median, with the window used."""
    steps, values = clean(series)
    size = window(values.size)
    return steps, (median_filter(values, size, mode="mirror") if values.size else values), size


def reach_step(steps: np.ndarray, curve: np.ndarray, level: float) -> int | None:
    """The first step at which the smoothed curve is at or below `level`, or None."""
    below = np.flatnonzero(curve <= level)
    return int(steps[below[0]]) if below.size else None


def final_value(values: np.ndarray, size: int) -> float:
    return float(np.median(values[-size:]))


def summarize_series(series: Series) -> dict:
    steps, curve, size = smoothed(series)
    entry = {"role": series.role, "points": len(series), "nonfinite": int((~np.isfinite(series.values)).sum()),
             "first_step": int(steps[0]) if steps.size else None, "last_step": int(steps[-1]) if steps.size else None,
             "start": None, "best": None, "best_step": None, "final": None, "checkpoints": [], "milestones": {}}
    if not steps.size:
        return entry
    _, values = clean(series)
    best = int(np.argmin(curve))
    entry.update(start=float(curve[0]), best=float(curve[best]), best_step=int(steps[best]),
                 final=final_value(values, size))
    marks = np.linspace(steps[0], steps[-1], CHECKPOINTS)
    at = np.clip(np.searchsorted(steps, marks, side="right") - 1, 0, steps.size - 1)
    entry["checkpoints"] = [[int(steps[i]), float(curve[i])] for i in np.unique(at)]
    drop = float(curve[0] - curve[best])
    if drop > 0:
        for fraction in FRACTIONS:
            level = float(curve[0] - fraction * drop)
            entry["milestones"][str(fraction)] = {"level": level, "step": reach_step(steps, curve, level)}
    return entry


def summarize(run: Run, findings: list) -> dict:
    """One run's baseline entry: its loss metrics and its findings (Finding objects or dicts)."""
    metrics = {tag: summarize_series(series) for tag, series in run.series.items() if series.role in LOSS_ROLES}
    primary = {role: run.primary(role).tag for role in LOSS_ROLES if run.primary(role) is not None}
    roles = {tag: series.role for tag, series in run.series.items()}
    rows = [finding if isinstance(finding, dict) else finding.to_dict() for finding in findings]
    return {"run": run.name, "source": run.source, "primary": primary, "metrics": metrics,
            "findings": [{key: row[key] for key in ("rule", "name", "severity", "metric", "step_start", "step_end",
                                                     "message")} | {"role": roles.get(row["metric"])} for row in rows]}


def document(entries: list[dict]) -> dict:
    return {"schema": SCHEMA, "kind": KIND, "lrdiag": __version__, "runs": entries}


def save(doc: dict, path: str, inputs=()) -> None:
    """The baseline to `path` ('-': standard output), atomically; never over one of its `inputs`."""
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    if path == "-":
        print(text, end="")
        return
    safeio.write_text(path, text, inputs, what="baseline")


def is_baseline_file(path: Path) -> bool:
    """A saved baseline, judged by its head: a JSON object whose `kind` is lrdiag-baseline."""
    if not path.is_file() or path.suffix.lower() != ".json":
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return KIND.encode() in head


def load(path: Path) -> list[dict]:
    """The run entries of a saved baseline, checked; a bad file is one line naming what is wrong."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise LrdiagError(f"{path}: cannot read the baseline: {getattr(error, 'strerror', None) or error}") from None
    except json.JSONDecodeError as error:
        raise LrdiagError(f"{path}: not a valid baseline: invalid JSON at line {error.lineno} ({error.msg})") from None
    problem = _problem(doc)
    if problem:
        raise LrdiagError(f"{path}: not a valid baseline: {problem} (`lrdiag baseline save RUN -o FILE` writes one)")
    return doc["runs"]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem(doc) -> str | None:
    """What makes `doc` not a baseline of this schema, or None."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        return f"expected a JSON object with \"kind\": \"{KIND}\""
    if doc.get("schema") != SCHEMA:
        return f"schema {doc.get('schema')!r} is not {SCHEMA}, the one this lrdiag reads"
    if not isinstance(doc.get("runs"), list) or not doc["runs"]:
        return "\"runs\" must be a non-empty list"
    for index, entry in enumerate(doc["runs"]):
        where = f"runs[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("run"), str):
            return f"{where} must be an object with a \"run\" name"
        if not isinstance(entry.get("metrics"), dict) or not isinstance(entry.get("findings"), list):
            return f"{where} must hold \"metrics\" (an object) and \"findings\" (a list)"
        if not isinstance(entry.get("primary"), dict):
            return f"{where}.primary must be an object mapping loss roles to tags"
        for tag, metric in entry["metrics"].items():
            here = f"{where}.metrics[{tag!r}]"
            if not isinstance(metric, dict):
                return f"{here} must be an object"
            for key in ("start", "best", "final"):
                if metric.get(key) is not None and not _number(metric[key]):
                    return f"{here}.{key} must be a finite number or null, got {metric[key]!r}"
            milestones = metric.get("milestones", {})
            if not isinstance(milestones, dict) or not all(
                    isinstance(m, dict) and _number(m.get("level")) and (m.get("step") is None or _number(m["step"]))
                    for m in milestones.values()):
                return f"{here}.milestones must map fractions to {{\"level\": number, \"step\": number}}"
        for finding in entry["findings"]:
            if not isinstance(finding, dict) or not all(isinstance(finding.get(k), str) for k in ("rule", "severity")):
                return f"{where}.findings must be objects with \"rule\" and \"severity\""
    return None
