"""Incidents: findings of one run that share a category and overlap in steps (each widened by its own
metric's logging interval) are one incident; every output shows incidents, the JSON keeps both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from lrdiag.detect.incident import group, logging_interval

PINN = Path(__file__).resolve().parents[2] / "shared" / "real_logs" / "lightning_csv" / "Simple-Pendulum-PINN__version_18"


def finding(metric, start, end=None, category="spike", severity="warning", peak=None, level=None):
    evidence = {} if peak is None else {"peak": peak, "level": level}
    return {"rule": "LRD101", "name": "loss.spike", "category": category, "severity": severity, "metric": metric,
            "step_start": start, "step_end": start if end is None else end, "message": f"{metric} at {start}",
            "evidence": evidence}


def test_logging_interval_is_the_median_step_between_points():
    assert logging_interval([49, 99, 149, 199, 300]) == 50
    assert logging_interval([5]) == 0 and logging_interval([]) == 0
    assert logging_interval([0.0, float("nan"), 4.0, 8.0]) == 4  # a step no reader could place is left out


def test_the_epoch_mean_logged_after_the_step_spike_joins_it():
    # The step loss (every 50 steps) spikes at 16149; the epoch mean (every 63 steps) shows it at 16190.
    findings = [finding("loss_epoch", 16190, peak=22.6, level=0.05), finding("loss_step", 16149, peak=125.8, level=0.05)]
    (incident,) = group(findings, {"loss_epoch": 63, "loss_step": 50})
    assert incident == {"id": 1, "category": "spike", "severity": "warning", "step_start": 16149, "step_end": 16190,
                        "metrics": ["loss_step", "loss_epoch"], "headline": 1, "findings": [0, 1]}


def test_findings_farther_apart_than_their_logging_intervals_stay_apart():
    findings = [finding("loss_epoch", 16300), finding("loss_step", 16149)]
    assert [i["findings"] for i in group(findings, {"loss_epoch": 63, "loss_step": 50})] == [[1], [0]]
    # Without the intervals (a metric unknown to them counts 0) only the same step groups.
    assert len(group([finding("a", 10), finding("b", 11)], {})) == 2
    assert len(group([finding("a", 10), finding("b", 10)], {})) == 1


def test_a_shared_category_is_required_and_overlap_chains():
    findings = [finding("a", 100, category="spike"), finding("b", 100, category="stall"),
                finding("c", 101), finding("d", 102)]
    incidents = group(findings, {"a": 1, "b": 1, "c": 1, "d": 1})
    assert sorted(i["findings"] for i in incidents) == [[0, 2, 3], [1]]


def test_the_headline_is_the_most_severe_then_the_largest_then_the_first():
    findings = [finding("loss", 10, severity="error", peak=1.0, level=0.9),
                finding("box_loss", 10, peak=50.0, level=0.1), finding("cls_loss", 10)]
    (incident,) = group(findings, {})
    assert incident["headline"] == 0 and incident["severity"] == "error"
    assert incident["metrics"] == ["loss", "box_loss", "cls_loss"]
    (incident,) = group(findings[1:], {})
    assert incident["headline"] == 0 and incident["metrics"] == ["box_loss", "cls_loss"]
    (incident,) = group([finding("a", 10), finding("b", 10)], {})
    assert incident["headline"] == 0  # neither has a size: the first in the findings' order


def test_every_finding_is_in_exactly_one_incident_ordered_by_severity_then_step():
    rng = np.random.default_rng(1)
    findings = [finding(f"m{rng.integers(4)}", int(s), category=str(rng.choice(["spike", "stall"])),
                        severity=str(rng.choice(["error", "warning", "info"]))) for s in rng.integers(0, 500, 40)]
    incidents = group(findings, {f"m{i}": 7 for i in range(4)})
    members = sorted(i for incident in incidents for i in incident["findings"])
    assert members == list(range(40))
    assert [i["id"] for i in incidents] == list(range(1, len(incidents) + 1))
    ranks = [({"error": 0, "warning": 1, "info": 2}[i["severity"]], i["step_start"]) for i in incidents]
    assert ranks == sorted(ranks)
    for incident in incidents:
        own = [findings[i] for i in incident["findings"]]
        assert incident["step_start"] == min(f["step_start"] for f in own)
        assert incident["step_end"] == max(f["step_end"] for f in own)
        assert {f["category"] for f in own} == {incident["category"]}


def lrdiag(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrdiag", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))


@pytest.fixture
def lightning(tmp_path) -> Path:
    """A Lightning CSVLogger log: the step loss every 10 steps, its epoch mean every 100; one bad batch at
    step 1509 shows on both (the epoch mean at the epoch's end, step 1599)."""
    rng = np.random.default_rng(0)
    rows = ["epoch,step,train_loss_step,train_loss_epoch"]
    for step in range(9, 3000, 10):
        value = (2.0 * 0.999 ** step + 0.1) * np.exp(rng.normal(0, 0.03))
        rows.append(f"{step // 100},{step},{500.0 if step == 1509 else value},")
        if step % 100 == 99:
            mean = 2.0 * 0.999 ** step + 0.1 + (50.0 if step == 1599 else 0.0)
            rows.append(f"{step // 100},{step},,{mean}")
    run = tmp_path / "lightning_logs" / "version_0"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_one_event_on_the_step_loss_and_its_epoch_mean_is_one_incident_in_every_format(lightning):
    done = lrdiag("analyze", "lightning_logs", "--format", "json", cwd=lightning)
    (run,) = json.loads(done.stdout)["runs"]
    spikes = [(f["metric"], f["step_start"]) for f in run["findings"]]
    assert sorted(spikes) == [("train_loss_epoch", 1599), ("train_loss_step", 1509)], run["findings"]
    (incident,) = run["incidents"]
    assert run["findings"][incident["headline"]]["metric"] == "train_loss_step"  # 500 over 50: the larger
    assert (incident["step_start"], incident["step_end"]) == (1509, 1599)
    assert incident["metrics"] == ["train_loss_step", "train_loss_epoch"]

    text = lrdiag("analyze", "lightning_logs", cwd=lightning).stdout
    assert "also on: train_loss_epoch@1599" in text and "(1 incident of 2 findings)" in text
    assert text.count("LRD101") == 1
    github = lrdiag("analyze", "lightning_logs", "--format", "github", cwd=lightning).stdout.splitlines()
    notes = [line for line in github if line.startswith("::")]
    assert len(notes) == 1 and "title=LRD101 loss.spike (train_loss_step) and 1 more metric" in notes[0]
    assert "also on: train_loss_epoch@1599" in notes[0] and github[-1].endswith("1 incident (2 findings)")
    junit = ET.fromstring(lrdiag("analyze", "lightning_logs", "--format", "junit", "--fail-on", "warning",
                                 cwd=lightning).stdout)
    (case,) = junit.iter("testcase")
    assert "train_loss_epoch@1599" in case.find("failure").text
    markdown = lrdiag("analyze", "lightning_logs", "--format", "markdown", cwd=lightning).stdout
    assert "1 incident of 2 findings" in markdown and "| train_loss_epoch@1599 |" in markdown
    assert lrdiag("analyze", "lightning_logs", "--fail-on", "warning", cwd=lightning).returncode == 1
    assert lrdiag("analyze", "lightning_logs", cwd=lightning).returncode == 0


@pytest.mark.skipif(not PINN.is_dir(), reason="the real logs are not here (CI)")
def test_the_real_pinn_log_gives_six_incidents_for_nineteen_findings(tmp_path):
    done = lrdiag("analyze", str(PINN), "--format", "json", cwd=tmp_path)
    (run,) = json.loads(done.stdout)["runs"]
    assert len(run["findings"]) >= 19
    by_step = {i["step_start"]: i for i in run["incidents"]}
    blowup = by_step[16149]  # the blow-up on every loss, and on the epoch means 41 steps later
    assert run["findings"][blowup["headline"]]["metric"] == "train_loss_step"
    assert {"train_loss_epoch", "dynamics_loss_step", "dynamics_loss_epoch"} <= set(blowup["metrics"])
    assert len(run["incidents"]) <= 7
