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
