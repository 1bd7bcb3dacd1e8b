"""GitHub Actions workflow commands: `::error file=...,title=...::message` an incident or a failed check."""

from __future__ import annotations

from lrdiag.render.view import incidents, inert_doc, is_gate, plural, suites


def _data(text: str) -> str:
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, message: str, file: str = "", title: str = "", line: int | None = None) -> str:
    props = [f"file={_property(file)}"] if file else []
    props += [f"line={line}"] if line else []
    props += [f"title={_property(title)}"] if title else []
    return f"::{level} {','.join(props)}::{_data(message)}" if props else f"::{level}::{_data(message)}"


def render(doc: dict, fail_on: str = "error") -> str:
    doc = inert_doc(doc)  # names from logs may hold newlines and terminal codes
    lines = [annotation(case["level"], case["message"], case["file"], case["title"], case["line"])
             for suite in suites(doc, fail_on) for case in suite["cases"] if case["level"]]
    if is_gate(doc):
        checks = [check for gate in doc["gates"] for check in gate["checks"]]
        failed = sum(check["status"] == "failed" for check in checks)
        lines.append(f"lrdiag gate: {'passed' if doc['passed'] else 'FAILED'} ({failed} of {len(checks)} checks "
                     f"failed, tolerance {doc['tolerance']})")
    else:
        findings = sum(len(run["findings"]) for run in doc["runs"])
        grouped = sum(len(incidents(run)) for run in doc["runs"])
        counted = (plural(findings, "finding") if grouped == findings
                   else f"{plural(grouped, 'incident')} ({plural(findings, 'finding')})")
        lines.append(f"lrdiag analyze: {plural(len(doc['runs']), 'run')}, {counted}")
    return "\n".join(lines)
