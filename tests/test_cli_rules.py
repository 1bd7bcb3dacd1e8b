"""The command line around the rules: exit codes 0/1/2, --fail-on, --exit-zero, selection and
config errors, and `lrdiag rules`; run as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrdiag.detect.rulefile import DOC_HEADINGS, builtin_rules_dir, load_rules

RULES = load_rules([builtin_rules_dir()])
SPIKE_RUN = Path(__file__).resolve().parents[1] / "sample_logs" / "tensorboard" / "mlp_sgd_bad_batch_spike"


def lrdiag(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrdiag", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def write_log(path: Path, values) -> Path:
    path.write_text("step,loss\n" + "".join(f"{step},{value}\n" for step, value in enumerate(values)))
    return path


@pytest.fixture
def logs(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    falling = (2.0 * 0.99 ** np.arange(300) + 0.1) * np.exp(rng.normal(0, 0.05, 300))
    write_log(tmp_path / "clean.csv", 2.0 * 0.99 ** np.arange(300) + 0.1)
    write_log(tmp_path / "nan.csv", [1.0, 0.9, 0.8, "nan", 0.7, 0.6])
    write_log(tmp_path / "spike.csv", np.concatenate([falling[:150], [5.0], falling[151:]]))  # recovers: a warning
    return tmp_path


def test_a_clean_run_exits_0(logs):
    done = lrdiag("analyze", "clean.csv", cwd=logs)
    assert done.returncode == 0, done.stderr
    assert "no findings" in done.stdout


def test_an_error_finding_exits_1_and_exit_zero_or_fail_on_never_exit_0(logs):
    done = lrdiag("analyze", "nan.csv", cwd=logs)
    assert done.returncode == 1, done.stderr
    assert "LRD105" in done.stdout
    assert lrdiag("analyze", "nan.csv", "--exit-zero", cwd=logs).returncode == 0
    assert lrdiag("analyze", "nan.csv", "--fail-on", "never", cwd=logs).returncode == 0


def test_a_warning_fails_only_with_fail_on_warning(logs):
    done = lrdiag("analyze", "spike.csv", "--format", "json", cwd=logs)
    assert done.returncode == 0, done.stderr
    (run,) = json.loads(done.stdout)["runs"]
    assert [(f["rule"], f["severity"], f["step_start"]) for f in run["findings"]] == [("LRD101", "warning", 150)]
    assert lrdiag("analyze", "spike.csv", "--fail-on", "warning", cwd=logs).returncode == 1


def test_fail_on_from_the_config_and_the_flag_overriding_it(logs):
    (logs / "pyproject.toml").write_text('[tool.lrdiag]\nfail-on = "warning"\n')
    assert lrdiag("analyze", "spike.csv", cwd=logs).returncode == 1
    assert lrdiag("analyze", "spike.csv", "--fail-on", "error", cwd=logs).returncode == 0


def test_ignoring_the_rule_that_fired_exits_0(logs):
    for selector in ("LRD105", "loss.nonfinite", "LRD10"):
        done = lrdiag("analyze", "nan.csv", "--ignore", selector, cwd=logs)
        assert done.returncode == 0, (selector, done.stdout, done.stderr)
    assert lrdiag("analyze", "nan.csv", "--select", "LRD101,LRD201", cwd=logs).returncode == 0


def test_per_rule_severity_from_the_config_decides_the_exit(logs):
    (logs / "lrdiag.toml").write_text('[rules.LRD105]\nseverity = "warning"\n')
    assert lrdiag("analyze", "nan.csv", cwd=logs).returncode == 0
    assert lrdiag("analyze", "nan.csv", "--fail-on", "warning", cwd=logs).returncode == 1


def test_a_nonexistent_path_exits_2(logs):
    done = lrdiag("analyze", "missing.csv", cwd=logs)
    assert done.returncode == 2
    assert done.stderr.startswith("lrdiag: error:") and "missing.csv" in done.stderr


@pytest.mark.parametrize("args", [["--format", "xml"], ["--fail-on", "sometimes"], ["--rules", "nowhere"],
                                  ["--role", "weights=loss"], ["--config", "absent.toml"]])
def test_usage_errors_exit_2_with_one_line_and_no_traceback(logs, args):
    done = lrdiag("analyze", "clean.csv", *args, cwd=logs)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("lrdiag: error:"), done.stderr


def test_an_unknown_rule_on_the_command_line_exits_2_with_one_line(logs):
    done = lrdiag("analyze", "clean.csv", "--select", "LRD999", "--exit-zero", cwd=logs)
    assert done.returncode == 2
    assert done.stderr == "lrdiag: error: --select: unknown rule 'LRD999'\n"


def test_a_config_error_exits_2_naming_the_file_and_key(logs):
    (logs / "pyproject.toml").write_text('[tool.lrdiag]\nselect = ["LRD999"]\n')
    done = lrdiag("analyze", "clean.csv", cwd=logs)
    assert done.returncode == 2
    assert done.stderr == "lrdiag: error: pyproject.toml: [tool.lrdiag] select: unknown rule 'LRD999'\n"


def test_config_flag_overrides_the_config_found_here(logs):
    (logs / "pyproject.toml").write_text('[tool.lrdiag]\nselect = ["LRD999"]\n')  # would fail if read
    (logs / "ci.toml").write_text('ignore = ["LRD105"]\n')
    assert lrdiag("analyze", "nan.csv", "--config", "ci.toml", cwd=logs).returncode == 0


def test_broken_rule_files_exit_2_listing_every_error(logs):
    extra = logs / "myrules"
    extra.mkdir()
    (extra / "a.toml").write_text('code = "TST101"\nname = "test.a"\ncolour = "red"\n')
    done = lrdiag("analyze", "clean.csv", "--rules", "myrules", cwd=logs)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0].startswith("lrdiag: error: ") and lines[0].endswith(" errors:")
    assert "  myrules/a.toml: rule TST101: colour: unknown key" in lines
    assert "  myrules/a.toml: rule TST101: severity: missing key" in lines


def test_rules_lists_every_rule(tmp_path):
    done = lrdiag("rules", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.splitlines()[1:]]
    assert listed == [rule.code for rule in RULES]


@pytest.mark.parametrize("selector", [RULES[0].code, RULES[0].name])
def test_rules_prints_one_rules_docs_and_options(tmp_path, selector):
    done = lrdiag("rules", selector, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for heading in DOC_HEADINGS.values():
        assert f"\n{heading}\n" in done.stdout
    for name, spec in RULES[0].specs.items():
        assert f"  {name} = {spec.default!r}  ({spec.expected()})" in done.stdout


def test_rules_with_an_unknown_code_exits_2_with_one_line(tmp_path):
    done = lrdiag("rules", "LRD999", cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "unknown rule 'LRD999'" in done.stderr


@pytest.mark.skipif(not SPIKE_RUN.is_dir(), reason="sample logs not present")
def test_findings_in_json_carry_the_lr_context(tmp_path):
    done = lrdiag("analyze", str(SPIKE_RUN), "--format", "json", "--select", "LRD101", cwd=tmp_path)
    (finding,) = json.loads(done.stdout)["runs"][0]["findings"]
    assert finding["evidence"]["lr_phase"] == "constant" and finding["evidence"]["lr_at_step"] > 0


def test_a_plugin_rule_runs_from_the_command_line(logs):
    # A third-party package: a module and its dist-info, found through PYTHONPATH as pip would install it.
    site = logs / "site"
    info = site / "lrdiag_cli_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "lrdiag_cli_plugin.py").write_text(
        "from lrdiag.detect.base import Hit\n\n"
        "def last_point(series, ctx):\n"
        "    step = int(series.steps[-1])\n"
        "    return [Hit(step, step, {'step': step})]\n")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lrdiag-cli-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lrdiag.detectors]\nlast_point = lrdiag_cli_plugin:last_point\n")
    rules = logs / "ci_rules"
    rules.mkdir()
    (rules / "XPL101.toml").write_text(
        'code = "XPL101"\nname = "plugin.last-point"\ncategory = "stall"\ndetector = "last_point"\n'
        'roles = ["train_loss"]\nseverity = "error"\nmessage = "{metric} ends at step {step}"\n'
        '[docs]\nwhat = "w"\nwhy = "y"\nexample = "e"\nfix = "f"\noptions = "none"\n')
    (logs / "lrdiag.toml").write_text('rule-dirs = ["ci_rules"]\n')
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listing = lrdiag("rules", cwd=logs, env=env)
    assert "XPL101" in listing.stdout, listing.stderr
    done = lrdiag("analyze", "clean.csv", "--select", "XPL1", "--format", "json", cwd=logs, env=env)
    assert done.returncode == 1, done.stderr
    findings = json.loads(done.stdout)["runs"][0]["findings"]
    assert [(f["rule"], f["step_start"], f["message"]) for f in findings] == [("XPL101", 299, "loss ends at step 299")]


def test_bare_lrdiag_prints_the_help_and_exits_0(tmp_path):
    done = lrdiag(cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("Usage: lrdiag") and "Exit status" in done.stdout and "analyze" in done.stdout


def test_counts_are_pluralized(logs):
    done = lrdiag("analyze", "clean.csv", cwd=logs)
    assert "(csv, 1 file, 1 metric)" in done.stdout and done.stdout.rstrip().endswith("1 run: no findings")
    assert "lrdiag analyze: 1 run, 0 findings" in lrdiag("analyze", "clean.csv", "--format", "github", cwd=logs).stdout
    assert "## lrdiag analyze: 1 run, 0 errors, 0 warnings" in lrdiag("analyze", "clean.csv", "--format", "markdown",
                                                                     cwd=logs).stdout
    two = lrdiag("analyze", "clean.csv", "nan.csv", cwd=logs)
    assert "2 runs: 1 error" in two.stdout


def test_best_is_the_max_for_quality_metrics_and_absent_where_the_direction_is_unknown(tmp_path):
    from lrdiag.render import text

    rows = "".join(f"{s},{1 / (s + 1)},{s / 10},{0.2 + s / 20},{s % 4},{0.1 - s / 100},{3 - s / 10}\n"
                   for s in range(10))
    (tmp_path / "m.csv").write_text("step,loss,accuracy,bbox/AP50,batches_seen,lr,perplexity\n" + rows)
    done = lrdiag("analyze", "m.csv", cwd=tmp_path)
    best = {line.split()[0]: line.split()[-1] for line in done.stdout.splitlines()[2:8]}
    assert best == {"loss": "0.1", "accuracy": "0.9", "bbox/AP50": "0.65", "batches_seen": "-", "lr": "-",
                    "perplexity": "2.1"}, done.stdout
    assert text.best("bbox/AP", {"role": None, "min": 0.1, "max": 0.5}) == 0.5
    assert text.best("val/error_rate", {"role": None, "min": 0.1, "max": 0.5}) == 0.1


def test_a_run_with_many_metrics_shows_a_capped_table_with_distinct_tails(tmp_path):
    from lrdiag.render import text

    names = [f"model/encoder/layers.{i}/attention/output/dense/grad_norm_ratio" for i in range(150)]
    header = "step,loss," + ",".join(names)
    rows = "".join(f"{s},{1 / (s + 1)}," + ",".join(str(s * i) for i in range(150)) + "\n" for s in range(5))
    (tmp_path / "wide.csv").write_text(header + "\n" + rows)
    done = subprocess.run([sys.executable, "-m", "lrdiag", "analyze", "wide.csv"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    lines = done.stdout.splitlines()
    table = [line for line in lines if line.startswith("  ") and not line.startswith("  ...")][1:]
    assert len(table) == text.MAX_METRICS and table[0].split()[0] == "loss"  # the role's metric stays
    assert "  ... and 111 more metrics (--format json lists every one)" in lines
    assert max(len(line) for line in lines[1:]) <= 80
    shown = [line.split()[0] for line in table[1:]]
    # Cut, keeping the part that tells them apart (the layer) and the tail that names the metric.
    assert [name.split("…")[1] for name in shown] == [f"layers.{i}" for i in range(39)], shown
    assert all(name.startswith("…") and name.endswith("grad_norm_ratio") for name in shown)
    assert text._fit("train/some/very/long/name/box_loss", 20) == "…/long/name/box_loss"  # alone: its tail


def test_a_role_that_matches_no_metric_is_a_warning_naming_it(logs):
    done = lrdiag("analyze", "clean.csv", "--role", "val_loss=nosuchtag", "--role", "val_loss=los", cwd=logs)
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "lrdiag: warning: --role val_loss=nosuchtag: no run logs a metric 'nosuchtag'",
        "lrdiag: warning: --role val_loss=los: no run logs a metric 'los' (did you mean 'loss'?)"]
    assert lrdiag("analyze", "clean.csv", "--role", "val_loss=loss", cwd=logs).stderr == ""


def test_an_empty_select_is_a_usage_error(logs):
    for value in ("", " , "):
        done = lrdiag("analyze", "nan.csv", "--select", value, cwd=logs)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
        assert "--select" in done.stderr and "empty" in done.stderr


@pytest.mark.parametrize("command", [["gate", "nan.csv", "--baseline", "clean.csv"], ["baseline", "save", "nan.csv"],
                                     ["report", "nan.csv", "-o", "r.html"],
                                     ["recommend", "nan.csv", "--format", "json"]])
def test_select_and_ignore_work_on_every_command_that_reads_runs(logs, command):
    def found(*flags) -> bool:  # does the command see nan.csv's LRD105?
        done = lrdiag(*command, *flags, cwd=logs)
        assert done.returncode in (0, 1), done.stderr
        if command[0] == "report":
            return "(0 findings)" not in done.stderr  # wrote r.html: 1 run, 0 incidents (0 findings), ... MB
        return "LRD105" in done.stdout

    assert found()
    assert not found("--ignore", "LRD105") and not found("--select", "LRD101")
    bad = lrdiag(*command, "--select", "LRD999", cwd=logs)
    assert bad.returncode == 2 and "--select: unknown rule 'LRD999'" in bad.stderr


def test_long_work_off_a_terminal_prints_plain_progress_lines(logs, monkeypatch, capsys):
    from lrdiag import pipeline

    for index in range(12):
        (logs / "many" / f"run{index}").mkdir(parents=True)
        write_log(logs / "many" / f"run{index}" / "metrics.csv", np.linspace(2, 1, 50))
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY", 0.0)
    pipeline.analyze([str(logs / "many")], pipeline.Options(), jobs=1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11 and all(line.startswith("lrdiag: analyzing runs: ") for line in lines), lines
    assert lines[0].startswith("lrdiag: analyzing runs: 1 of 12 done (8%), ")
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY", 10.0)  # quick work: nothing printed
    pipeline.analyze([str(logs / "many")], pipeline.Options(), jobs=1)
    assert capsys.readouterr().err == ""
