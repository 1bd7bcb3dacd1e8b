"""The one versioned output model (`schema` 1) that every formatter is built from.

    {"schema": 1, "lrdiag": "<version>",
     "runs": [{"run", "source", "files", "metrics": {tag: {...}}, "notes", "findings", "problems"}],
     "errors": []}
"""

from __future__ import annotations

from lrdiag import __version__
from lrdiag.series.model import Run

SCHEMA = 1


def run_entry(run: Run, findings: list | None = None) -> dict:
    return {
        "run": run.name,
        "source": run.source,
        "files": run.files,
        "metrics": {tag: series.summary() for tag, series in run.series.items()},
        "notes": run.notes,
        "findings": [finding.to_dict() for finding in sorted(findings or [])],
        "problems": [problem.to_dict() for problem in run.problems],
    }


def document(entries: list[dict], errors: list[str] | None = None) -> dict:
    return {"schema": SCHEMA, "lrdiag": __version__, "runs": entries, "errors": list(errors or [])}
