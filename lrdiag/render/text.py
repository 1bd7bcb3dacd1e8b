"""Terminal output: per run a compact table of its metrics, then its incidents (the headline finding, the other
metrics it touched, its likely cause) and problems."""

from __future__ import annotations

import os
import shutil
from itertools import islice

import click

from lrdiag.render.view import also_on, cause, incidents, inert_doc, plural
from lrdiag.series import roles

_SEVERITY_STYLE = {"error": ("E", "red"), "warning": ("W", "yellow"), "info": ("i", "cyan")}
# The direction of "best": the roles say it for losses and accuracies; a metric with no role by the words
# of its tag (roles' quality words, and COCO's AP family that detectron2 logs as bbox/AP50, segm/APs);
# anything else (an LR, a count, a time) has no best, and shows none.
_LOWER_ROLES, _HIGHER_ROLES = {"train_loss", "val_loss", "grad_norm"}, {"train_acc", "val_acc"}
_HIGHER_WORDS = roles._QUALITY_WORDS | {"ap", "ap50", "ap75", "aps", "apm", "apl", "ar", "ndcg", "psnr", "ssim"}
_LOWER_WORDS = {"loss", "error", "err", "perplexity", "ppl", "wer", "cer", "mse", "mae", "rmse", "nll"}
MAX_METRICS = 40  # rows of a run's table; the rest are counted (--format json lists every one)


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.4g}"


def _fit(text: str, width: int, common: tuple[str, str] = ("", "")) -> str:
    """A long name cut to `width`, keeping what tells it apart: its tail (a tag's last words name the metric,
    `…/val/box_loss`) and, when the names being cut share a prefix and a suffix, the part between them
    (`…layers.11…/grad_norm`), which a plain cut at either end would lose."""
    if len(text) <= width:
        return text
    tail = "…" + text[len(text) - max(width - 1, 1):]
    prefix, suffix = common
    start = prefix.rfind("/") + 1  # from the start of the word the names part in, for context
    core = text[start:len(text) - len(suffix)]
    if not suffix or len(text) - (width - 1) <= len(prefix) or len(core) + 3 > width:
        return tail  # the tail holds the part that differs (or nothing better fits)
    return "…" + core + "…" + suffix[len(suffix) - (width - 2 - len(core)):]


def _shared(names: list[str]) -> tuple[str, str]:
    """The prefix and suffix that all `names` share (none for fewer than two)."""
    if len(names) < 2:
        return "", ""
    prefix = os.path.commonprefix(names)
    suffix = os.path.commonprefix([name[len(prefix):][::-1] for name in names])[::-1]
    return prefix, suffix


def best(tag: str, metric: dict):
    """The best value of a metric, or None where its direction is unknown."""
    tag_words = set(roles.words(tag))
    if metric["role"] in _LOWER_ROLES or (metric["role"] is None and tag_words & _LOWER_WORDS):
        return metric["min"]
    if metric["role"] in _HIGHER_ROLES or (metric["role"] is None and tag_words & _HIGHER_WORDS):
        return metric["max"]
    return None


def _shown(run: dict) -> list[str]:
    """The tags in the table: every one up to MAX_METRICS; past it, those with a role or a finding first."""
    metrics = run["metrics"]
    if len(metrics) <= MAX_METRICS:
        return list(metrics)
    flagged = {finding["metric"] for finding in run["findings"]}
    first = set(islice((tag for tag, metric in metrics.items() if metric["role"] or tag in flagged), MAX_METRICS))
    chosen = first | set(islice((tag for tag in metrics if tag not in first), MAX_METRICS - len(first)))
    return list(islice((tag for tag in metrics if tag in chosen), len(chosen)))


def _metric_rows(metrics: dict, tags: list[str]) -> list[list[str]]:
    rows = []
    for tag in tags:
        m = metrics[tag]
        steps = "-" if m["first_step"] is None else f"{m['first_step']}–{m['last_step']}"
        rows.append([tag, m["role"] or "", str(m["points"]), steps, _number(m["last"]), _number(best(tag, m)),
                     str(m["nonfinite"]) if m["nonfinite"] else ""])
    return rows


def _table(rows: list[list[str]], header: list[str], width: int) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    # Only the first column (the tag) gives way when the terminal is narrow.
    spare = width - 2 - sum(widths[1:]) - 2 * (len(widths) - 1)
    widths[0] = max(12, min(widths[0], spare))
    common = _shared([row[0] for row in rows if len(row[0]) > widths[0]])
    lines = []
    for row in [header] + rows:
        cells = [_fit(row[0], widths[0], common).ljust(widths[0])]
        cells += [cell.rjust(w) if i >= 2 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row[1:], widths[1:]), 1)]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def render(doc: dict, color: bool = False, width: int | None = None) -> str:
    doc = inert_doc(doc)  # names from logs may hold newlines and terminal codes
    width = width or shutil.get_terminal_size((100, 24)).columns
    out: list[str] = []
    for run in doc["runs"]:
        files = len(run["files"])
        head = f"{run['run']}  ({run['source']}, {plural(files, 'file')}, {plural(len(run['metrics']), 'metric')})"
        out.append(click.style(head, bold=True) if color else head)
        if run["metrics"]:
            header = ["metric", "role", "points", "steps", "last", "best", "nan/inf"]
            tags = _shown(run)
            out.extend(_table(_metric_rows(run["metrics"], tags), header, width))
            if len(tags) < len(run["metrics"]):
                out.append(f"  ... and {plural(len(run['metrics']) - len(tags), 'more metric')} "
                           "(--format json lists every one)")
        for incident in incidents(run):  # the headline finding, then the other metrics it touched and its cause
            finding = run["findings"][incident["headline"]]
            letter, hue = _SEVERITY_STYLE.get(finding["severity"], ("?", None))
            mark = click.style(letter, fg=hue, bold=True) if color else letter
            where = (f"step {finding['step_start']}" if finding["step_start"] == finding["step_end"]
                     else f"steps {finding['step_start']}–{finding['step_end']}")
            out.append(f"  {mark} {finding['rule']} {finding['name']}  {finding['metric']} {where}: {finding['message']}")
            out += [f"      {line}" for line in (also_on(run, incident), cause(finding)) if line]
        for note in run["notes"]:
            out.append(f"  note: {note}")
        for problem in run["problems"]:
            where = f"{problem['where']}: " if problem["where"] else ""
            out.append(f"  problem: {problem['file']}: {where}{problem['message']}")
        out.append("")
    for error in doc["errors"]:
        out.append(f"error: {error}")
    counts = {}
    for run in doc["runs"]:
        for incident in incidents(run):
            counts[incident["severity"]] = counts.get(incident["severity"], 0) + 1
    summary = ", ".join(plural(counts[s], s) if s != "info" else f"{counts[s]} info"
                        for s in ("error", "warning", "info") if s in counts)
    findings = sum(len(run["findings"]) for run in doc["runs"])
    if findings > sum(counts.values()):  # the counts are of incidents: say how many findings they group
        summary += f" ({plural(sum(counts.values()), 'incident')} of {plural(findings, 'finding')})"
    problems = sum(len(run["problems"]) for run in doc["runs"])
    tally = f"{plural(len(doc['runs']), 'run')}: {summary or 'no findings'}"
    tally += f"; {plural(problems, 'read problem')}" if problems else ""
    tally += f"; {plural(len(doc['errors']), 'error')}" if doc["errors"] else ""
    out.append(tally)
    return "\n".join(out)

