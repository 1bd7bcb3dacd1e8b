"""The one versioned output model (`schema` 1) that every formatter is built from.

    {"schema": 1, "lrdiag": "<version>",
     "runs": [{"run", "source", "files", "metrics": {tag: {...}}, "notes", "findings", "incidents", "problems"}],
     "errors": []}

`incidents` (added without a schema bump: the contract only grows) groups the findings that describe
one event across metrics (detect/incident.py); each lists its findings by index into `findings`.
"""

from __future__ import annotations

from lrdiag import __version__
from lrdiag.detect.incident import group, logging_interval
from lrdiag.series.model import Run

SCHEMA = 1


def run_entry(run: Run, findings: list | None = None) -> dict:
    found = [finding.to_dict() for finding in sorted(findings or [])]
    # group() reads the logging interval of the metrics that findings name, and of no other
    named = dict.fromkeys(finding["metric"] for finding in found)
    intervals = {tag: logging_interval(run.series[tag].steps) for tag in named if tag in run.series}
    return {
        "run": run.name,
        "source": run.source,
        "files": run.files,
        "metrics": run.summaries(),
        "notes": run.notes,
        "findings": found,
        "incidents": group(found, intervals),
        "problems": [problem.to_dict() for problem in run.problems],
    }


def document(entries: list[dict], errors: list[str] | None = None) -> dict:
    return {"schema": SCHEMA, "lrdiag": __version__, "runs": entries, "errors": list(errors or [])}
