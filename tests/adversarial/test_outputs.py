"""Outputs that never destroy: reports and baselines are written through a temporary file and an atomic
rename, never over an input, never through a link; `recommend --out` removes only what lrdiag wrote.
And text output that is inert: no name from a log can start a line of lrdiag's output with `::`.

Every hostile input is made here, at test time; each test checks, by checksum, that no user file was lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "sample_logs" / "example_spiky"
TRAINER = "lrdiag.examples.spiky_mlp:trainer"


def lrdiag(*args, cwd: Path, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrdiag", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def checksums(folder: Path) -> dict[str, str]:
    """Every file under `folder` (links not followed) and its SHA-256."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and not path.is_symlink()}


@pytest.fixture
def logs(tmp_path) -> Path:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").write_text("step,loss\n" + "".join(f"{s},{1 / (s + 1)}\n" for s in range(60)))
    return tmp_path


@pytest.mark.parametrize("command", [["report", "run", "-o"], ["baseline", "save", "run", "-o"]])
def test_an_output_that_is_one_of_the_inputs_is_refused(logs, command):
    os.link(logs / "run" / "metrics.csv", logs / "hardlink.csv")  # the same file by another name
    before = checksums(logs)
    for output in ("run/metrics.csv", "hardlink.csv", "./run/../run/metrics.csv"):
        done = lrdiag(*command, output, cwd=logs)
        assert done.returncode == 2, done.stderr
        assert "is one of the inputs" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert checksums(logs) == before


@pytest.mark.parametrize("command", [["report", "run", "-o"], ["baseline", "save", "run", "-o"]])
def test_an_output_that_is_a_symlink_is_refused_and_its_target_kept(logs, command):
    (logs / "precious.txt").write_text("the user's own file\n")
    (logs / "out.html").symlink_to(logs / "precious.txt")
    (logs / "dangling.html").symlink_to(logs / "nowhere" / "file")
    before = checksums(logs)
    for output in ("out.html", "dangling.html"):
        done = lrdiag(*command, output, cwd=logs)
        assert done.returncode == 2 and "symbolic link" in done.stderr, done.stderr
    assert checksums(logs) == before and not (logs / "nowhere").exists()


def test_a_report_that_fails_while_writing_leaves_the_old_file_whole(logs, monkeypatch, capsys):
    from lrdiag.cli import main

    old = "<html>the report of last week</html>\n"
    (logs / "report.html").write_text(old)
    monkeypatch.chdir(logs)

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(SystemExit) as exited:
        main(["report", "run", "-o", "report.html", "--jobs", "1"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == "lrdiag: error: report.html: cannot write the report: No space left on device"
    assert (logs / "report.html").read_text() == old
    assert sorted(path.name for path in logs.iterdir()) == ["report.html", "run"]  # no temporary file left


def test_outputs_are_replaced_atomically_with_an_ordinary_mode(logs):
    done = lrdiag("report", "run", "-o", "report.html", cwd=logs)
    assert done.returncode == 0, done.stderr
    mode = (logs / "report.html").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    inode = (logs / "report.html").stat().st_ino
    assert lrdiag("report", "run", "-o", "report.html", cwd=logs).returncode == 0
    assert (logs / "report.html").stat().st_ino != inode  # a new file renamed over the old, never truncated


def _recommend(cwd: Path, out: str, *extra) -> subprocess.CompletedProcess:
    return lrdiag("recommend", EXAMPLE, "--trainer", TRAINER, "--steps", "5", "--seeds", "1", "--device", "cpu",
                  "--jobs", "2", "--out", out, *extra, cwd=cwd, timeout=300)


def test_recommend_out_refuses_a_folder_it_did_not_make_and_keeps_every_file(tmp_path):
    users = tmp_path / "replays" / "control" / "seed0"
    users.mkdir(parents=True)
    (users / "events.out.tfevents.1.mine").write_bytes(b"the user's own training log")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("keep me\n")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "control").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "link_out").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "a_file").write_text("not a folder\n")
    before = checksums(tmp_path)
    for out, says in (("replays", "holds files that lrdiag did not write"),
                      ("linked", "holds files that lrdiag did not write"),
                      ("link_out", "symbolic link"),
                      ("a_file", "is a file"),
                      ("a_file/sub", "cannot create the folder")):
        done = _recommend(tmp_path, out)
        assert done.returncode == 2, (out, done.stdout, done.stderr)
        assert says in done.stderr and "Traceback" not in done.stderr, (out, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
    assert checksums(tmp_path) == before


def test_recommend_out_removes_only_what_it_wrote(tmp_path):
    first = _recommend(tmp_path, "replays")
    assert first.returncode == 0, first.stdout + first.stderr
    manifest = json.loads((tmp_path / "replays" / ".lrdiag-manifest").read_text())
    assert manifest["files"] and all(name.split("/")[1] == "seed0" for name in manifest["files"])
    assert {path.relative_to(tmp_path / "replays").as_posix() for path in (tmp_path / "replays").rglob("*")
            if path.is_file()} == {*manifest["files"], ".lrdiag-manifest"}
    (tmp_path / "replays" / "notes.txt").write_text("my notes on these replays\n")
    second = _recommend(tmp_path, "replays")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (tmp_path / "replays" / "notes.txt").read_text() == "my notes on these replays\n"
    again = json.loads((tmp_path / "replays" / ".lrdiag-manifest").read_text())["files"]
    assert len(again) == len(manifest["files"])  # the old logs went; the new ones replaced them, one run each
    # A user's file inside a log folder lrdiag made: not removed, and the replay refuses to merge into it.
    (tmp_path / "replays" / "control" / "seed0" / "mine.txt").write_text("mine\n")
    third = _recommend(tmp_path, "replays")
    assert third.returncode == 2 and "control/seed0 holds files that lrdiag did not write" in third.stderr
    assert (tmp_path / "replays" / "control" / "seed0" / "mine.txt").read_text() == "mine\n"
    assert (tmp_path / "replays" / "notes.txt").exists()


def test_a_hostile_manifest_cannot_make_lrdiag_delete_outside_its_folder(tmp_path):
    (tmp_path / "victim.txt").write_text("precious\n")
    out = tmp_path / "replays"
    (out / "control").mkdir(parents=True)
    (out / "control" / "seed0").symlink_to(tmp_path, target_is_directory=True)
    for listed in (["../victim.txt"], [str(tmp_path / "victim.txt")], ["control/seed0/victim.txt"]):
        (out / ".lrdiag-manifest").write_text(json.dumps({"kind": "lrdiag-output", "files": listed}))
        done = _recommend(tmp_path, "replays")
        assert done.returncode == 2 and "nothing was removed" in done.stderr, done.stderr
        assert (tmp_path / "victim.txt").read_text() == "precious\n"


INJECTED = "\n::error ::pwned"
MASK = "\n::add-mask::x"


@pytest.fixture
def hostile(tmp_path) -> Path:
    """A run folder, a file and JSON keys whose names hold newlines, carriage returns and terminal codes
    followed by GitHub workflow commands; and a clean baseline to gate them against."""
    run = tmp_path / f"run{INJECTED}"
    run.mkdir()
    steps = range(40)
    history = {"loss": [1 / (s + 1) for s in steps], f"val_loss{MASK}": [1.2 / (s + 1) for s in steps],
               f"acc\r::warning ::cr\x1b[2J": [s / 40 for s in steps], "lr": [0.1] * 40}
    (run / "history.json").write_text(json.dumps(history))
    (run / f"metrics{INJECTED}.csv").write_text("step,val_loss\n" + "".join(f"{s},nan\n" for s in steps))
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "history.json").write_text(json.dumps({"loss": [0.5 / (s + 1) for s in steps],
                                                                 "val_loss": [0.6 / (s + 1) for s in steps]}))
    return tmp_path


def _commands(run: str) -> list[list[str]]:
    analyze = [["analyze", run, "--format", f] for f in ("text", "junit", "github", "markdown", "json")]
    gate = [["gate", run, "--baseline", "base", "--format", f] for f in ("text", "junit", "github", "markdown")]
    others = [["recommend", run], ["report", run, "-o", "r.html"], ["analyze", run, "nowhere\n::error ::x"]]
    return analyze + gate + others


def test_no_name_from_a_log_can_start_a_line_with_a_workflow_command(hostile):
    run = f"run{INJECTED}"
    for command in _commands(run):
        done = lrdiag(*command, cwd=hostile, env={"GITHUB_STEP_SUMMARY": str(hostile / "summary.md")})
        assert done.returncode in (0, 1, 2) and "Traceback" not in done.stderr, (command, done.stderr)
        github = "github" in command
        for line in (done.stdout + done.stderr).splitlines():
            if github and line.startswith(("::error ", "::warning ", "::notice ")):
                continue  # lrdiag's own annotations, their data escaped (%0A)
            assert not line.lstrip().startswith("::"), (command, line)
            assert "\x1b" not in line and "\r" not in line, (command, line)
        if "text" in command or command[0] == "recommend":
            assert "\\n::error ::pwned" in done.stdout + done.stderr, (command, done.stdout)
    summary = (hostile / "summary.md").read_text()
    assert not any(line.startswith("::") for line in summary.splitlines())


def test_json_output_keeps_the_names_exact(hostile):
    done = lrdiag("analyze", f"run{INJECTED}", "--format", "json", cwd=hostile)
    (run,) = json.loads(done.stdout)["runs"]
    assert run["run"] == f"run{INJECTED}"
    assert f"val_loss{MASK}" in run["metrics"]
    assert not any(line.startswith("::") for line in done.stdout.splitlines())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_out_is_refused_before_any_replay(tmp_path):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0o555)
    try:
        done = _recommend(tmp_path, "locked/replays")
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert done.returncode == 2 and "cannot create the folder: Permission denied" in done.stderr
