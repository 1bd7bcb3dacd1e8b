"""`lrdiag gate` and `lrdiag baseline save`: each check passes on an equal run and fails on its own
regression, the tolerance forms, several baselines' spread, exit codes 0/1/2, and every output format
parsed as its consumer would (JUnit XML, GitHub annotations, Markdown, the job summary file)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from lrdiag.errors import LrdiagError
from lrdiag.gate import baseline, checks
from lrdiag.gate.command import read_runs
from lrdiag.detect.engine import Engine
from lrdiag.detect.rulefile import builtin_rules_dir, load_rules

SAMPLES = Path(__file__).resolve().parents[1] / "sample_logs"
HEALTHY = SAMPLES / "tensorboard" / "mlp_adam_moons"
STEPS = 3000


def loss_curve(tau: float = 100.0, floor: float = 0.3, seed: int = 0, noise: float = 0.005) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = np.arange(STEPS)
    return 2.0 * np.exp(-steps / tau) + floor + noise * rng.standard_normal(STEPS)


def write_run(folder: Path, tau: float = 100.0, floor: float = 0.3, seed: int = 0, edit=None) -> Path:
    """A CSV run: a noisy train loss every step, a smoother val loss every 50 steps (sparse rows, as
    Lightning writes them); `edit` changes both curves in place (a spike, a NaN)."""
    folder.mkdir(parents=True, exist_ok=True)
    train = loss_curve(tau, floor, seed)
    val = loss_curve(tau, floor + 0.05, seed + 100, noise=0.0005)
    for values in (train, val):
        if edit:
            edit(values)
    steps = np.arange(STEPS)
    val_cells = np.where(steps % 50 == 49, np.char.mod("%.8g", val), "")
    rows = np.char.add(np.char.add(np.char.mod("%d,", steps), np.char.mod("%.8g,", train)), val_cells)
    (folder / "metrics.csv").write_text("step,train_loss,val_loss,lr\n" + ",0.001\n".join(rows) + ",0.001\n")
    return folder


def spike(values: np.ndarray) -> None:
    values[1500] += 20.0  # a recovered spike: LRD101, a warning


def lrdiag(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrdiag", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def engine():
    return Engine(load_rules([builtin_rules_dir()]))


def run_gate(candidate: Path, baselines: list[Path], engine, tolerance: str | None = None, fail_on: str = "error",
             metrics: list[str] | None = None) -> dict:
    entries = [baseline.summarize(run, findings) for path in baselines for run, findings in
               read_runs(str(path), engine, {})]
    tol = checks.Tolerance.parse(tolerance, len(entries))
    selectors = checks.resolve_metrics(metrics or [], entries)
    (run, findings), = read_runs(str(candidate), engine, {})
    return checks.document([checks.gate(run, findings, entries, selectors, tol, fail_on)], entries, tol, fail_on)


def statuses(doc: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in doc["gates"][0]["checks"]}


def failed(doc: dict) -> set[str]:
    return {name for name, status in statuses(doc).items() if status == "failed"}


def test_a_run_gated_against_itself_passes_every_check(engine):
    doc = run_gate(HEALTHY, [HEALTHY], engine)
    assert doc["passed"]
    assert set(statuses(doc)) >= {"final val_loss", "best val_loss", "convergence val_loss", "final train_loss",
                                  "best train_loss", "convergence train_loss", "finite values"}
    assert set(statuses(doc).values()) == {"passed"}


def test_a_higher_final_loss_fails_the_final_check_only(tmp_path, engine):
    write_run(tmp_path / "base")
    # The last 10 % rose: final is worse, best (earlier) is not.
    write_run(tmp_path / "cand", edit=lambda values: values.__setitem__(slice(-300, None), values[-300:] + 0.05))
    doc = run_gate(tmp_path / "cand", [tmp_path / "base"], engine)
    assert not doc["passed"]
    assert {"final train_loss", "final val_loss"} <= failed(doc)
    assert statuses(doc)["best train_loss"] == "passed"


def test_a_higher_loss_throughout_fails_best_and_final(tmp_path, engine):
    write_run(tmp_path / "base", seed=1)
    write_run(tmp_path / "cand", seed=2, floor=0.35)
    doc = run_gate(tmp_path / "cand", [tmp_path / "base"], engine)
    assert {"best train_loss", "final train_loss", "best val_loss", "final val_loss"} <= failed(doc)
    best = next(c for c in doc["gates"][0]["checks"] if c["name"] == "best train_loss")
    assert best["candidate"] > best["allowed"] > best["baseline"]


def test_slower_convergence_to_the_same_loss_fails_only_convergence(tmp_path, engine):
    write_run(tmp_path / "base", tau=100, seed=1)
    write_run(tmp_path / "cand", tau=200, seed=2)  # same floor, reached half as fast
    doc = run_gate(tmp_path / "cand", [tmp_path / "base"], engine)
    assert failed(doc) == {"convergence train_loss", "convergence val_loss"}
    check = next(c for c in doc["gates"][0]["checks"] if c["name"] == "convergence train_loss")
    assert check["candidate"] > check["allowed"]
    assert "converged slower" in check["message"]


def test_faster_convergence_passes(tmp_path, engine):
    write_run(tmp_path / "base", tau=200, seed=1)
    write_run(tmp_path / "cand", tau=100, seed=2)
    assert run_gate(tmp_path / "cand", [tmp_path / "base"], engine)["passed"]


def test_a_new_finding_fails_at_or_above_fail_on_and_one_the_baseline_had_does_not(tmp_path, engine):
    write_run(tmp_path / "base", seed=1)
    write_run(tmp_path / "cand", seed=3, edit=spike)
    at_warning = run_gate(tmp_path / "cand", [tmp_path / "base"], engine, fail_on="warning")
    assert "new finding LRD101 loss.spike on train_loss at step 1500" in failed(at_warning)
    at_error = run_gate(tmp_path / "cand", [tmp_path / "base"], engine, fail_on="error")
    assert not any(name.startswith("new finding") for name in failed(at_error))
    write_run(tmp_path / "spiky_base", seed=3, edit=spike)
    had_it = run_gate(tmp_path / "cand", [tmp_path / "spiky_base"], engine, fail_on="warning")
    assert statuses(had_it)["no new findings at or above warning"] == "passed"
    never = run_gate(tmp_path / "cand", [tmp_path / "base"], engine, fail_on="never")
    [one] = never["gates"]
    assert not any(check["check"] == "finding" for check in one["checks"])


def test_a_nonfinite_value_fails_even_when_the_loss_is_otherwise_better(tmp_path, engine):
    write_run(tmp_path / "base", seed=1)
    write_run(tmp_path / "cand", seed=2, floor=0.2, edit=lambda values: values.__setitem__(2900, np.nan))
    doc = run_gate(tmp_path / "cand", [tmp_path / "base"], engine)
    assert "finite values" in failed(doc)
    finite = next(c for c in doc["gates"][0]["checks"] if c["name"] == "finite values")
    assert finite["step"] == 2900 and "train_loss: 1 NaN/Inf from step 2900" in finite["message"]
    assert statuses(doc)["final train_loss"] == "passed"


@pytest.mark.parametrize("text, kind, amount", [("0.01", "absolute", 0.01), ("2%", "relative", 0.02),
                                                 ("0.5%", "relative", 0.005), ("1e-3", "absolute", 0.001)])
def test_tolerance_forms_parse(text, kind, amount):
    tolerance = checks.Tolerance.parse(text, 1)
    assert (tolerance.kind, tolerance.amount) == (kind, pytest.approx(amount))


@pytest.mark.parametrize("text, baselines", [("abc", 1), ("-1", 1), ("2%%", 1), ("spread", 1)])
def test_bad_tolerances_are_user_errors(text, baselines):
    with pytest.raises(LrdiagError, match="--max-regression"):
        checks.Tolerance.parse(text, baselines)


def test_default_tolerance_is_two_percent_for_one_baseline_and_the_spread_for_several():
    assert checks.Tolerance.parse(None, 1) == checks.Tolerance("relative", 0.02)
    assert checks.Tolerance.parse(None, 3).kind == "spread"


def test_absolute_and_relative_tolerances_decide_the_same_regression_by_their_size(tmp_path, engine):
    write_run(tmp_path / "base", seed=1)
    write_run(tmp_path / "cand", seed=1, floor=0.33)  # 0.03 (10 %) worse at the end
    assert "final train_loss" in failed(run_gate(tmp_path / "cand", [tmp_path / "base"], engine, "0.01"))
    assert "final train_loss" not in failed(run_gate(tmp_path / "cand", [tmp_path / "base"], engine, "0.05"))
    assert "final train_loss" in failed(run_gate(tmp_path / "cand", [tmp_path / "base"], engine, "2%"))
    assert "final train_loss" not in failed(run_gate(tmp_path / "cand", [tmp_path / "base"], engine, "20%"))


def test_the_spread_of_several_baselines_sets_the_tolerance(tmp_path, engine):
    for seed, floor in enumerate((0.30, 0.32, 0.34)):  # seeds that end 0.02 apart (sd 0.02)
        write_run(tmp_path / f"base{seed}", seed=seed, floor=floor)
    # The 99 % prediction bound of 3 runs: mean + t(0.99, 2) * sd * sqrt(1 + 1/3), about 8 sd.
    bound = 0.32 + 6.965 * 0.02 * (4 / 3) ** 0.5
    write_run(tmp_path / "within", seed=7, floor=0.45)
    write_run(tmp_path / "beyond", seed=8, floor=0.52)
    bases = [tmp_path / f"base{seed}" for seed in range(3)]
    within = run_gate(tmp_path / "within", bases, engine, metrics=["train_loss"])
    assert within["tolerance"] == "spread (99% prediction bound of 3 baselines)"
    final = next(c for c in within["gates"][0]["checks"] if c["name"] == "final train_loss")
    assert final["status"] == "passed"
    assert final["allowed"] == pytest.approx(bound, abs=0.015)  # the seeds add a little noise to the sd
    beyond = run_gate(tmp_path / "beyond", bases, engine, metrics=["train_loss"])
    assert {"final train_loss", "best train_loss"} <= failed(beyond)
    # The same candidate against one baseline and the default 2 % fails: the spread is what let it pass.
    assert "final train_loss" in failed(run_gate(tmp_path / "within", bases[1:2], engine, metrics=["train_loss"]))


def test_each_of_several_baselines_passes_against_them_all_even_where_they_show_no_spread(tmp_path, engine):
    # Two runs logged every 10 steps reach each milestone at the same logged step: their spread is
    # 0. Judged against their mean level, one of them reaches it a logged point later; that is the
    # logging interval, not a slower run (it failed 'convergence', with no allowance shown).
    steps = np.arange(0, 400, 10)
    for name, scale in (("a", 2.0), ("b", 2.6)):
        (tmp_path / name).mkdir()
        loss = scale * np.exp(-steps / 40) + 0.3
        (tmp_path / name / "metrics.csv").write_text("step,train_loss\n" + "".join(
            f"{step},{value:.8g}\n" for step, value in zip(steps, loss)))
    for name in ("a", "b"):
        doc = run_gate(tmp_path / name, [tmp_path / "a", tmp_path / "b"], engine)
        assert doc["passed"], [c["message"] for c in doc["gates"][0]["checks"] if c["status"] == "failed"]


def test_findings_match_by_role_when_the_candidate_names_its_loss_differently(tmp_path, engine):
    write_run(tmp_path / "base", seed=1, edit=spike)
    renamed = write_run(tmp_path / "cand", seed=2, edit=spike) / "metrics.csv"
    renamed.write_text(renamed.read_text().replace("step,train_loss,", "step,loss,", 1))  # Keras' name for it
    doc = run_gate(tmp_path / "cand", [tmp_path / "base"], engine, fail_on="warning")
    assert statuses(doc)["no new findings at or above warning"] == "passed"
    write_run(tmp_path / "clean", seed=1)
    doc = run_gate(tmp_path / "cand", [tmp_path / "clean"], engine, fail_on="warning")
    assert "new finding LRD101 loss.spike on loss at step 1500" in failed(doc)


def test_a_saved_baseline_gates_like_the_run_it_was_saved_from(tmp_path, engine):
    write_run(tmp_path / "base", seed=1)
    write_run(tmp_path / "cand", seed=2, tau=150, floor=0.31)
    (run, findings), = read_runs(str(tmp_path / "base"), engine, {})
    saved = tmp_path / "baseline.json"
    baseline.save(baseline.document([baseline.summarize(run, findings)]), str(saved))
    doc = json.loads(saved.read_text())
    metric = doc["runs"][0]["metrics"]["train_loss"]
    assert set(metric["milestones"]) == {"0.5", "0.8", "0.9", "0.95"}
    assert len(metric["checkpoints"]) == baseline.CHECKPOINTS
    entries = baseline.load(saved)
    tol = checks.Tolerance.parse(None, 1)
    (cand, cand_findings), = read_runs(str(tmp_path / "cand"), engine, {})
    from_file = checks.gate(cand, cand_findings, entries, checks.resolve_metrics([], entries), tol, "error")
    from_run = run_gate(tmp_path / "cand", [tmp_path / "base"], engine)["gates"][0]
    assert [(c["name"], c["status"]) for c in from_file["checks"]] == [(c["name"], c["status"])
                                                                     for c in from_run["checks"]]


def test_metric_selects_a_role_or_a_tag_and_an_unknown_one_is_a_user_error(tmp_path, engine):
    write_run(tmp_path / "base", seed=1)
    by_tag = run_gate(tmp_path / "base", [tmp_path / "base"], engine, metrics=["val_loss"])
    assert {c["metric"] for c in by_tag["gates"][0]["checks"] if c["check"] == "final"} == {"val_loss"}
    with pytest.raises(LrdiagError, match="--metric nope"):
        run_gate(tmp_path / "base", [tmp_path / "base"], engine, metrics=["nope"])


# ---- the command line, as CI runs it ----

@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gate_cli")
    write_run(root / "base", seed=1)
    write_run(root / "same", seed=1)
    write_run(root / "worse", seed=2, floor=0.4)
    done = lrdiag("baseline", "save", "base", "-o", "baseline.json", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


def test_exit_0_on_pass_and_1_on_regression_and_exit_zero_overrides(cli_runs):
    passed = lrdiag("gate", "same", "--baseline", "baseline.json", cwd=cli_runs)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "gate passed" in passed.stdout
    regressed = lrdiag("gate", "worse", "--baseline", "baseline.json", cwd=cli_runs)
    assert regressed.returncode == 1, regressed.stderr
    assert "FAIL  final train_loss" in regressed.stdout
    assert lrdiag("gate", "worse", "--baseline", "base", "--exit-zero", cwd=cli_runs).returncode == 0


@pytest.mark.parametrize("args, says", [
    (["gate", "missing", "--baseline", "baseline.json"], "missing: no such file or folder"),
    (["gate", "same", "--baseline", "nowhere.json"], "nowhere.json: no such file or folder"),
    (["gate", "same", "--baseline", "broken.json"], "broken.json: not a valid baseline: invalid JSON"),
    (["gate", "same", "--baseline", "wrong_schema.json"], "wrong_schema.json: not a valid baseline: schema 99"),
    (["gate", "same", "--baseline", "notes.json"], "notes.json: no file of this run could be read: notes.json: not a "
                                                   "training log"),
    (["gate", "same", "--baseline", "baseline.json", "--max-regression", "lots"], "--max-regression"),
    (["gate", "same", "--baseline", "baseline.json", "--metric", "nope"], "--metric nope"),
])
def test_usage_and_input_errors_exit_2_with_one_line(cli_runs, args, says):
    (cli_runs / "broken.json").write_text('{"schema": 1, "kind": "lrdiag-baseline", "runs": [')
    (cli_runs / "wrong_schema.json").write_text('{"schema": 99, "kind": "lrdiag-baseline", "runs": []}')
    (cli_runs / "notes.json").write_text("not json, not a log")
    done = lrdiag(*args, cwd=cli_runs)
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr
    assert "Traceback" not in done.stderr


def test_junit_xml_has_one_testcase_a_check_and_a_failure_for_each_regression(cli_runs):
    done = lrdiag("gate", "worse", "--baseline", "baseline.json", "--format", "junit", cwd=cli_runs)
    assert done.returncode == 1
    root = ET.fromstring(done.stdout)
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    failures = [case for case in cases if case.find("failure") is not None]
    assert int(suite.get("tests")) == len(cases) >= 8
    assert int(suite.get("failures")) == len(failures) == int(root.get("failures"))
    assert "final train_loss" in {case.get("name") for case in failures}
    assert "finite values" not in {case.get("name") for case in failures}


def test_github_format_writes_one_error_annotation_a_failed_check(cli_runs):
    done = lrdiag("gate", "worse", "--baseline", "baseline.json", "--format", "github", cwd=cli_runs)
    annotations = [line for line in done.stdout.splitlines() if line.startswith("::")]
    pattern = re.compile(r"^::(error|warning|notice) file=[^,:]+,title=[^:]+::\S.*$")
    assert annotations and all(pattern.match(line) for line in annotations), annotations
    errors = [line for line in annotations if line.startswith("::error")]
    assert any("title=lrdiag gate%3A final train_loss" in line for line in errors)
    assert "file=worse/metrics.csv" in errors[0]
    assert done.stdout.splitlines()[-1].startswith("lrdiag gate: FAILED")


def test_markdown_is_a_table_with_a_row_a_check(cli_runs):
    done = lrdiag("gate", "worse", "--baseline", "baseline.json", "--format", "markdown", cwd=cli_runs)
    lines = done.stdout.splitlines()
    assert lines[0] == "## lrdiag gate: ❌ failed"
    header = lines.index("|  | check | metric | candidate | baseline | allowed | details |")
    assert lines[header + 1] == "|---|---|---|---|---|---|---|"
    rows = [line for line in lines[header + 2:] if line.startswith("| ")]
    assert len(rows) == 8 and all(row.count(" | ") == 6 for row in rows)
    assert any(row.startswith("| ❌ | final train_loss |") for row in rows)


def test_the_job_summary_file_is_appended_to(cli_runs, tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    done = lrdiag("gate", "worse", "--baseline", "baseline.json", "--format", "github", cwd=cli_runs,
                  env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 1
    text = summary.read_text()
    assert text.startswith("# earlier step\n## lrdiag gate: ❌ failed")
    assert "| ❌ | final train_loss |" in text
    lrdiag("gate", "worse", "--baseline", "baseline.json", "--format", "junit", cwd=cli_runs,
           env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert summary.read_text() == text  # only --format github writes the summary: no repeat from a JUnit call


def test_json_output_is_the_gate_model(cli_runs):
    done = lrdiag("gate", "same", "--baseline", "base", "--format", "json", cwd=cli_runs)
    doc = json.loads(done.stdout)
    assert (doc["schema"], doc["kind"], doc["passed"]) == (1, "lrdiag-gate", True)
    assert {check["status"] for check in doc["gates"][0]["checks"]} == {"passed"}


def test_analyze_writes_findings_as_junit_testcases_and_annotations(tmp_path):
    write_run(tmp_path / "spiky", seed=3, edit=spike)
    junit = lrdiag("analyze", "spiky", "--format", "junit", "--fail-on", "warning", cwd=tmp_path)
    assert junit.returncode == 1
    suite = ET.fromstring(junit.stdout).find("testsuite")
    failure = suite.find("testcase/failure")
    assert suite.get("name") == "spiky" and failure is not None and "spiked" in failure.text
    github = lrdiag("analyze", "spiky", "--format", "github", cwd=tmp_path)
    assert github.returncode == 0
    assert any(line.startswith("::warning file=spiky/metrics.csv,title=LRD101 loss.spike (train_loss)::step 1500")
               for line in github.stdout.splitlines())
    markdown = lrdiag("analyze", "spiky", "--format", "markdown", cwd=tmp_path)
    lines = markdown.stdout.splitlines()
    assert lines[lines.index("| run | format | errors | warnings | info | best val loss | final val loss |") + 2] \
        .startswith("| spiky | lightning_csv | 0 | 1 | 0 | 0.34")
    assert any(line.startswith("| spiky | warning | LRD101 loss.spike | train_loss | step 1500 |") for line in lines)
