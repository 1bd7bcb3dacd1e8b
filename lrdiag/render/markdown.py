"""Markdown summary tables (GitHub's job summary): a gate's checks, or each run's incidents by severity."""

from __future__ import annotations

from lrdiag.render.view import also_on, cause, headline, incidents, inert_doc, is_gate, plural, where

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
    grouped = 0
    for run in doc["runs"]:
        counts = {"error": 0, "warning": 0, "info": 0}  # of incidents: one event on several metrics counts once
        for incident in incidents(run):
            counts[incident["severity"]] += 1
        for severity, count in counts.items():
            totals[severity] += count
        grouped += len(run["findings"])
        val = headline(run) or {}
        best = val.get("min")
        rows.append([run["run"], run["source"], counts["error"], counts["warning"], counts["info"], best,
                     val.get("last")])
        findings += [[run["run"], f["severity"], f"{f['rule']} {f['name']}", f["metric"], where(f), f["message"],
                      also_on(run, incident).removeprefix("also on: "), cause(f).removeprefix("cause: ")]
                     for incident in incidents(run) for f in [run["findings"][incident["headline"]]]]
    out = [f"## lrdiag analyze: {plural(len(doc['runs']), 'run')}, {plural(totals['error'], 'error')}, "
           f"{plural(totals['warning'], 'warning')}, {totals['info']} info", ""]
    if grouped > len(findings):
        out += [f"{plural(len(findings), 'incident')} of {plural(grouped, 'finding')}: findings of one run that share "
                "a category and overlap in steps are one incident (`--format json` lists every finding).", ""]
    out += _table(["run", "format", "errors", "warnings", "info", "best val loss", "final val loss"], rows)
    if findings:
        out += ["", "### Incidents", ""]
        out += _table(["run", "severity", "rule", "metric", "where", "message", "also on", "likely cause"], findings)
    out += [f"error: {cell(error)}" for error in doc.get("errors", [])]
    return out
