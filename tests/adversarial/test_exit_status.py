"""Exit statuses that mean what they say: input that could not be read is never green (exit 2, with the
read error), damaged logs fail on request, and replays that all crashed give no verdict.

Each hostile input is made here, at test time; each command runs as a user runs it, in a subprocess
bounded in time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "sample_logs" / "example_spiky"
BASELINE = ROOT / "sample_logs" / "detectron2" / "detector_sgd_warmup_multistep"
GARBAGE = bytes(range(256)) * 4


def lrdiag(*args, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrdiag", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def inputs(tmp_path) -> Path:
    (tmp_path / "empty").mkdir()
    (tmp_path / "nologs").mkdir()
    (tmp_path / "nologs" / "README.md").write_text("notes, no logs\n")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "metrics.csv").write_bytes(GARBAGE)
    (tmp_path / "unread").mkdir()  # a header that claims the file, then nothing readable
    (tmp_path / "unread" / "metrics.csv").write_bytes(b"step,loss\n\x00\x01garbage\n")
    (tmp_path / "header_only").mkdir()  # a job that died before its first log line
    (tmp_path / "header_only" / "metrics.csv").write_text("step,loss\n")
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    EventFileWriter(str(tmp_path / "no_scalars")).close()  # an event file with its version record only
    (tmp_path / "good.csv").write_text("step,loss\n" + "".join(f"{s},{1 / (s + 1)}\n" for s in range(50)))
    (tmp_path / "damaged.csv").write_text("step,loss\n0,1.0\n1,0.9\nnot a row\n2,0.8\n3,0.7\n")
    return tmp_path


@pytest.mark.parametrize("path, says", [
    ("empty", "the folder is empty"),
    ("nologs", "no training logs found there"),
    ("garbage", "no training logs found there"),
    ("garbage/metrics.csv", "no file of this run could be read"),
    ("unread", "no file of this run could be read: unread/metrics.csv: line 2"),
    ("header_only", "header_only: no file of this run could be read: header_only/metrics.csv: no data rows"),
    ("no_scalars", "no_scalars: no metric was logged in its file (no scalar point): nothing to diagnose"),
])
def test_a_path_that_yields_no_readable_run_exits_2_naming_why(inputs, path, says):
    formats = ("text", "json", "junit", "github", "markdown") if path == "unread" else ("text",)
    for output_format in formats:
        done = lrdiag("analyze", path, "--format", output_format, cwd=inputs)
        assert done.returncode == 2, (output_format, done.stdout, done.stderr)
        assert says in done.stdout, (output_format, done.stdout)
        if output_format != "text":  # stdout may be a file: the error is on stderr too
            assert done.stderr.startswith("lrdiag: error: ") and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_good_runs_are_still_reported_next_to_a_path_without_runs(inputs):
    done = lrdiag("analyze", "good.csv", "empty", cwd=inputs)
    assert done.returncode == 2
    assert done.stdout.startswith("good.csv  (csv, 1 file, 1 metric)")
    assert "error: empty: the folder is empty" in done.stdout
    assert done.stdout.rstrip().endswith("1 run: no findings; 1 error")


def test_an_unreadable_folder_exits_2_with_the_os_error(inputs, monkeypatch):
    from click.testing import CliRunner

    from lrdiag.cli import cli

    locked = inputs / "locked"
    locked.mkdir()
    (locked / "metrics.csv").write_text("step,loss\n0,1\n")
    if os.geteuid() != 0:  # a real unreadable folder where permissions bind
        locked.chmod(0)
        try:
            done = lrdiag("analyze", "locked", cwd=inputs)
        finally:
            locked.chmod(0o755)
        assert done.returncode == 2 and "locked: cannot read this folder: Permission denied" in done.stdout
        return
    # root reads everything: the same refusal, made by the OS calls that reading a folder uses
    real_scandir, real_listdir = os.scandir, os.listdir

    def refuse(function):
        def call(path=".", *args):
            if os.path.realpath(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return function(path, *args)
        return call

    monkeypatch.chdir(inputs)
    monkeypatch.setattr(os, "scandir", refuse(real_scandir))
    monkeypatch.setattr(os, "listdir", refuse(real_listdir))
    result = CliRunner().invoke(cli, ["analyze", "locked"])
    assert result.exit_code == 2, result.output
    assert "locked: cannot read this folder: Permission denied" in result.output


def test_damaged_but_readable_logs_fail_with_fail_on_problems_or_its_config_key(inputs):
    plain = lrdiag("analyze", "damaged.csv", cwd=inputs)
    assert plain.returncode == 0 and "problem: damaged.csv: line 4" in plain.stdout
    assert lrdiag("analyze", "damaged.csv", "--fail-on-problems", cwd=inputs).returncode == 1
    assert lrdiag("analyze", "damaged.csv", "--fail-on-problems", "--exit-zero", cwd=inputs).returncode == 0
    assert lrdiag("analyze", "good.csv", "--fail-on-problems", cwd=inputs).returncode == 0
    (inputs / "lrdiag.toml").write_text("fail-on-problems = true\n")
    assert lrdiag("analyze", "damaged.csv", cwd=inputs).returncode == 1
    (inputs / "lrdiag.toml").write_text("fail-on-problems = \"yes\"\n")
    done = lrdiag("analyze", "damaged.csv", cwd=inputs)
    assert done.returncode == 2 and "fail-on-problems: must be true or false" in done.stderr


@pytest.mark.parametrize("candidate, says", [
    ("unread", "no file of this run could be read: unread/metrics.csv: line 2"),
    ("garbage/metrics.csv", "no file of this run could be read"),
    ("empty", "the folder is empty"),
])
def test_gate_with_an_unreadable_candidate_exits_2_with_the_read_error(inputs, candidate, says):
    done = lrdiag("gate", candidate, "--baseline", BASELINE, cwd=inputs)
    assert done.returncode == 2, done.stdout
    assert says in done.stderr and "REGRESSED" not in done.stdout


@pytest.mark.parametrize("baseline, says", [
    ("garbage/metrics.csv", "no file of this run could be read"),
    ("unread", "no file of this run could be read: unread/metrics.csv: line 2"),
    ("nologs", "no training logs found there"),
])
def test_gate_with_an_unreadable_baseline_exits_2_with_the_read_error(inputs, baseline, says):
    done = lrdiag("gate", BASELINE, "--baseline", baseline, cwd=inputs)
    assert done.returncode == 2
    assert says in done.stderr and "not an lrdiag baseline file" not in done.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_gate_with_a_baseline_file_it_may_not_open_shows_the_os_error(inputs):
    saved = inputs / "baseline.json"
    assert lrdiag("baseline", "save", BASELINE, "-o", saved, cwd=inputs).returncode == 0
    saved.chmod(0)
    done = lrdiag("gate", BASELINE, "--baseline", saved, cwd=inputs)
    assert done.returncode == 2 and "cannot read the baseline: Permission denied" in done.stderr


def test_recommend_on_garbage_exits_2_and_never_says_keep_the_schedule(inputs):
    for path in ("garbage/metrics.csv", "unread", "empty"):
        done = lrdiag("recommend", path, cwd=inputs)
        assert done.returncode == 2, done.stdout
        assert "keep the schedule" not in done.stdout


def test_baseline_save_and_report_refuse_unreadable_input(inputs):
    done = lrdiag("baseline", "save", "unread", "-o", "b.json", cwd=inputs)
    assert done.returncode == 2 and "no file of this run could be read" in done.stderr
    assert not (inputs / "b.json").exists()
    done = lrdiag("report", "good.csv", "unread", "-o", "r.html", cwd=inputs)
    assert done.returncode == 2 and "no file of this run could be read" in done.stderr


CRASHING = textwrap.dedent('''
    import torch

    class Crashing:
        def setup(self, seed, device):
            raise RuntimeError("the dataset is gone")

        def step(self, step):
            return 0.0

    def plain(seed, device):
        from lrdiag.recommend.trainer import Setup

        return Setup(model=torch.nn.Linear(1, 1), batches=[torch.zeros(1, 1)], loss=lambda model, x: model(x).sum(),
                     optimizer=lambda parameters: torch.optim.SGD(parameters, lr=0.1))

    class Sleepy:
        def setup(self, seed, device):
            import time
            time.sleep(60)

        def step(self, step):
            return 0.0
''')


@pytest.mark.parametrize("attribute, extra, says", [
    ("Crashing", [], "crashed: RuntimeError: the dataset is gone"),
    ("Sleepy", ["--timeout", "1"], "timed out after 1 s"),
])
def test_recommend_gives_no_verdict_when_every_replay_failed(inputs, attribute, extra, says):
    (inputs / "trainers.py").write_text(CRASHING)
    done = lrdiag("recommend", EXAMPLE, "--trainer", f"trainers.py:{attribute}", "--steps", "5", "--seeds", "1",
                  "--device", "cpu", "--out", "replays", *extra, cwd=inputs, timeout=240)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no verdict: the control (the logged schedule) failed in seed 0" in done.stdout
    assert says in done.stdout
    assert "verdict: no candidate confirmed" not in done.stdout and "keep the schedule" not in done.stdout
    assert "control (the logged schedule): no findings" not in done.stdout


def test_from_checkpoint_with_a_trainer_that_cannot_load_one_is_a_usage_error_before_any_replay(inputs):
    (inputs / "trainers.py").write_text(CRASHING)
    for attribute in ("Crashing", "plain"):  # a class without the method; a function whose Setup has none
        done = lrdiag("recommend", EXAMPLE, "--trainer", f"trainers.py:{attribute}", "--from-checkpoint", "10",
                      "--out", "replays", cwd=inputs)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"lrdiag: error: --from-checkpoint needs a trainer that restores a checkpoint, and "
            f"{inputs / 'trainers.py'}:{attribute} has no load_checkpoint (docs/replay.md shows one)"]
        assert not (inputs / "replays").exists()
