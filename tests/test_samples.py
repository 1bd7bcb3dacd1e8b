"""The sample logs' manifest: every pathology a run was built to show is found (spikes at the
right step), and healthy runs give no warning or error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrdiag.detect.engine import Engine
from lrdiag.detect.rulefile import builtin_rules_dir, load_rules
from lrdiag.ingest.discover import RunSpec, reader_for
from lrdiag.ingest.runs import read_run

SAMPLES = Path(__file__).resolve().parents[1] / "sample_logs"
MANIFEST = json.loads((SAMPLES / "manifest.json").read_text())["runs"]


@pytest.fixture(scope="module")
def engine():
    return Engine(load_rules([builtin_rules_dir()]))


def _findings(name: str, engine) -> list:
    folder = SAMPLES / name
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and reader_for(p)]
    run = read_run(RunSpec(name, {path: "" for path in files}))
    assert run.series, f"{name}: nothing read ({run.problems})"
    return engine.run(run)


def _matches(finding, expect: dict) -> bool:
    if finding.category != expect["category"] or finding.metric != expect["metric"]:
        return False
    tolerance = expect.get("tolerance", 0)
    if "step" in expect:
        step = finding.evidence.get("step", finding.step_start)
        return (abs(step - expect["step"]) <= tolerance
                or finding.step_start - tolerance <= expect["step"] <= finding.step_end + tolerance)
    if "best_step" in expect:
        low, high = expect.get("best_step_range", (expect["best_step"] - tolerance, expect["best_step"] + tolerance))
        return low <= finding.evidence["best_step"] <= high
    if "step_start" in expect:
        end = expect.get("step_end", finding.step_end)
        return finding.step_start <= end and expect["step_start"] <= finding.step_end
    return True


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_sample_run_shows_what_it_was_built_to_show(name, engine):
    entry = MANIFEST[name]
    findings = _findings(name, engine)
    described = [(f.rule, f.metric, f.step_start, f.step_end, f.message) for f in findings]
    if entry["healthy"]:
        loud = [d for f, d in zip(findings, described) if f.severity in ("error", "warning")]
        assert not loud, f"false alarm on a healthy run: {loud}"
    for expect in entry.get("expect", []):
        assert any(_matches(f, expect) for f in findings), f"missed {expect}; found {described}"
