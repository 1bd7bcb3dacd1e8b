"""Terminal output: per run a compact table of its metrics, then its findings and problems."""

from __future__ import annotations

import shutil

import click

from lrdiag.render.view import inert_doc

_SEVERITY_STYLE = {"error": ("E", "red"), "warning": ("W", "yellow"), "info": ("i", "cyan")}
_LOWER_IS_BETTER = {"train_loss", "val_loss", "grad_norm", None}


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.4g}"


def _fit(text: str, width: int) -> str:
    """Cut the middle of a long name: both ends of a tag say the most."""
    if len(text) <= width:
        return text
    keep = max(width - 1, 2)
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2):]


def _metric_rows(metrics: dict) -> list[list[str]]:
    rows = []
    for tag, m in metrics.items():
        best = m["min"] if m["role"] in _LOWER_IS_BETTER else m["max"]
        steps = "-" if m["first_step"] is None else f"{m['first_step']}–{m['last_step']}"
        rows.append([tag, m["role"] or "", str(m["points"]), steps, _number(m["last"]), _number(best),
                     str(m["nonfinite"]) if m["nonfinite"] else ""])
    return rows


def _table(rows: list[list[str]], header: list[str], width: int) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    # Only the first column (the tag) gives way when the terminal is narrow.
    spare = width - 2 - sum(widths[1:]) - 2 * (len(widths) - 1)
    widths[0] = max(12, min(widths[0], spare))
    lines = []
    for row in [header] + rows:
        cells = [_fit(row[0], widths[0]).ljust(widths[0])]
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
            out.extend(_table(_metric_rows(run["metrics"]), header, width))
        for finding in run["findings"]:
            letter, hue = _SEVERITY_STYLE.get(finding["severity"], ("?", None))
            mark = click.style(letter, fg=hue, bold=True) if color else letter
            where = (f"step {finding['step_start']}" if finding["step_start"] == finding["step_end"]
                     else f"steps {finding['step_start']}–{finding['step_end']}")
            out.append(f"  {mark} {finding['rule']} {finding['name']}  {finding['metric']} {where}: {finding['message']}")
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
        for finding in run["findings"]:
            counts[finding["severity"]] = counts.get(finding["severity"], 0) + 1
    summary = ", ".join(plural(counts[s], s) if s != "info" else f"{counts[s]} info"
                        for s in ("error", "warning", "info") if s in counts)
    problems = sum(len(run["problems"]) for run in doc["runs"])
    tally = f"{plural(len(doc['runs']), 'run')}: {summary or 'no findings'}"
    tally += f"; {plural(problems, 'read problem')}" if problems else ""
    tally += f"; {plural(len(doc['errors']), 'error')}" if doc["errors"] else ""
    out.append(tally)
    return "\n".join(out)


def plural(count: int, noun: str) -> str:
    """`1 run`, `2 runs`, `0 runs`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
