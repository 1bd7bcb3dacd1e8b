"""Markdown summary tables (GitHub's job summary): a gate's checks, or each run's findings by severity."""

from __future__ import annotations

from lrdiag.render.view import headline, inert_doc, is_gate, plural, severity_counts, where

_MARK = {"passed": "✅", "failed": "❌", "skipped": "➖"}


def cell(value) -> str:
    """A table cell: log names may hold `|`, `<` or line breaks."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(text.replace("|", "\\|").split())


def _row(cells) -> str:
    return "| " + " | ".join(cell(value) for value in cells) + " |"


def _table(header: list[str], rows: list[list]) -> list[str]:
    return [_row(header), "|" + "---|" * len(header), *(_row(row) for row in rows)]


def render(doc: dict, fail_on: str = "error") -> str:
    doc = inert_doc(doc)  # names from logs may hold newlines and terminal codes
    return "\n".join(_gate(doc) if is_gate(doc) else _analysis(doc)) + "\n"


def _gate(doc: dict) -> list[str]:
    verdict = "✅ passed" if doc["passed"] else "❌ failed"
    out = [f"## lrdiag gate: {verdict}", "",
           f"Baselines: {cell(', '.join(doc['baselines']))} · tolerance {cell(doc['tolerance'])} · new findings at or "
           f"above {doc['fail_on']} fail", ""]
    for gate in doc["gates"]:
        out += [f"### {cell(gate['run'])}: {'✅ passed' if gate['passed'] else '❌ failed'}", ""]
        out += _table(["", "check", "metric", "candidate", "baseline", "allowed", "details"],
                      [[_MARK[c["status"]], c["name"], c["metric"], c["candidate"], c["baseline"], c["allowed"],
                        c["message"]] for c in gate["checks"]])
        out.append("")
    out += [f"error: {cell(error)}" for error in doc.get("errors", [])]
    return out


def _analysis(doc: dict) -> list[str]:
    rows, findings = [], []
    totals = {"error": 0, "warning": 0, "info": 0}
    for run in doc["runs"]:
        counts = severity_counts(run)
        for severity, count in counts.items():
            totals[severity] += count
        val = headline(run) or {}
        best = val.get("min")
        rows.append([run["run"], run["source"], counts["error"], counts["warning"], counts["info"], best,
                     val.get("last")])
        findings += [[run["run"], f["severity"], f"{f['rule']} {f['name']}", f["metric"], where(f), f["message"]]
                     for f in run["findings"]]
    out = [f"## lrdiag analyze: {plural(len(doc['runs']), 'run')}, {plural(totals['error'], 'error')}, "
           f"{plural(totals['warning'], 'warning')}, {totals['info']} info", ""]
    out += _table(["run", "format", "errors", "warnings", "info", "best val loss", "final val loss"], rows)
    if findings:
        out += ["", "### Findings", ""]
        out += _table(["run", "severity", "rule", "metric", "where", "message"], findings)
    out += [f"error: {cell(error)}" for error in doc.get("errors", [])]
    return out
