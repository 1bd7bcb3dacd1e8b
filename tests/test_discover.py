"""Run discovery: which folders and files are runs, what they are named, train/validation splits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrdiag.errors import LrdiagError
from lrdiag.ingest.discover import find_runs
from lrdiag.ingest.runs import read_run

REAL_LOGS = Path(__file__).parents[2] / "shared" / "real_logs"
ALLENNLP = REAL_LOGS / "tfevents" / "FRMiner-Training-Results__log_"


def write_scalars(folder: Path, tag: str, values: list[float]) -> Path:
    """An event file written by torch's SummaryWriter, one point per step."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for step, value in enumerate(values):
        writer.add_scalar(tag, value, step)
    writer.close()
    [path] = folder.glob("*tfevents*")
    return path


def names(runs) -> list[str]:
    return [run.name for run in runs]


@pytest.mark.parametrize(("train", "validation", "tag"), [
    ("train", "validation", "epoch_loss"),  # Keras TensorBoard callback
    ("train", "val", "epoch_loss"),
    ("train", "eval", "epoch_loss"),
    ("learn", "test", "Logloss"),  # CatBoost
])
def test_sibling_train_and_validation_folders_are_one_run_with_prefixed_tags(tmp_path, train, validation, tag):
    write_scalars(tmp_path / "exp" / train, tag, [1.0, 0.5, 0.25])
    write_scalars(tmp_path / "exp" / validation, tag, [2.0, 1.5, 1.75])
    [spec] = find_runs([str(tmp_path)])
    assert spec.name == "exp"
    assert sorted(spec.files.values()) == sorted([f"{train}/", f"{validation}/"])
    run = read_run(spec)
    assert run.problems == []
    assert sorted(run.series) == sorted([f"{train}/{tag}", f"{validation}/{tag}"])
    np.testing.assert_array_equal(run.series[f"{train}/{tag}"].values, [1.0, 0.5, 0.25])
    np.testing.assert_array_equal(run.series[f"{validation}/{tag}"].values, [2.0, 1.5, 1.75])
    assert run.series[f"{train}/{tag}"].role == "train_loss"
    assert run.series[f"{validation}/{tag}"].role == "val_loss"
    assert run.primary("train_loss").tag == f"{train}/{tag}"
    assert run.primary("val_loss").tag == f"{validation}/{tag}"


def test_a_train_folder_without_a_validation_sibling_is_a_run_of_its_own(tmp_path):
    write_scalars(tmp_path / "exp" / "train", "epoch_loss", [1.0, 0.5])
    [spec] = find_runs([str(tmp_path)])
    assert spec.name == "exp/train"
    assert list(spec.files.values()) == [""]
    assert list(read_run(spec).series) == ["epoch_loss"]


def test_real_allennlp_train_and_validation_folders_linked_into_one_experiment_are_one_run(tmp_path):
    train, validation = Path(f"{ALLENNLP}train"), Path(f"{ALLENNLP}validation")
    if not (train.is_dir() and validation.is_dir()):
        pytest.skip(f"{REAL_LOGS} is absent")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "train").symlink_to(train, target_is_directory=True)
    (tmp_path / "exp" / "validation").symlink_to(validation, target_is_directory=True)
    [spec] = find_runs([str(tmp_path)])
    assert spec.name == "exp"
    run = read_run(spec)
    assert run.problems == []
    assert {"train/loss", "validation/loss", "train/accuracy", "validation/accuracy"} <= set(run.series)
    assert run.series["train/loss"].role == "train_loss"
    assert run.series["validation/loss"].role == "val_loss"
    assert run.series["validation/accuracy"].role == "val_acc"
    assert not np.array_equal(run.series["train/loss"].values, run.series["validation/loss"].values)
    assert not [tag for tag in run.series if not tag.startswith(("train/", "validation/"))]


def test_symlinked_run_folders_are_found_and_link_cycles_end(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_scalars(elsewhere, "loss", [1.0, 0.75])
    runs = tmp_path / "runs"
    write_scalars(runs / "a", "loss", [3.0, 2.0])
    (runs / "b").symlink_to(elsewhere, target_is_directory=True)
    (runs / "a" / "back_to_runs").symlink_to(runs, target_is_directory=True)  # a cycle
    (runs / "a" / "itself").symlink_to(runs / "a", target_is_directory=True)
    specs = find_runs([str(runs)])
    assert names(specs) == ["a", "b"]
    np.testing.assert_array_equal(read_run(specs[1]).series["loss"].values, [1.0, 0.75])


def test_run_names_are_paths_relative_to_the_argument_and_nested_runs_are_separate(tmp_path):
    project = tmp_path / "project"
    write_scalars(project, "loss", [1.0])
    write_scalars(project / "lr_0.1" / "seed_1", "loss", [2.0])
    write_scalars(project / "lr_0.1" / "seed_2", "loss", [3.0])
    write_scalars(project / "lr_0.01", "loss", [4.0])
    assert names(find_runs([str(project)])) == ["lr_0.01", "lr_0.1/seed_1", "lr_0.1/seed_2", "project"]
    assert names(find_runs([str(tmp_path)])) == ["project", "project/lr_0.01", "project/lr_0.1/seed_1",
                                                 "project/lr_0.1/seed_2"]
    nested = {spec.name: spec for spec in find_runs([str(project / "lr_0.1")])}
    assert sorted(nested) == ["seed_1", "seed_2"]
    np.testing.assert_array_equal(read_run(nested["seed_2"]).series["loss"].values, [3.0])
    # each run holds only its own folder's files, not its sub-runs'
    root_run = {spec.name: spec for spec in find_runs([str(project)])}["project"]
    assert [path.parent for path in root_run.files] == [project]


def test_a_log_file_given_directly_is_one_run_named_as_given(tmp_path):
    path = write_scalars(tmp_path / "exp", "loss", [1.0, 0.5])
    [spec] = find_runs([str(path)])
    assert spec.name == str(path)
    assert spec.files == {path: ""}
    np.testing.assert_array_equal(read_run(spec).series["loss"].values, [1.0, 0.5])


def test_a_missing_path_is_a_user_error_naming_it(tmp_path):
    missing = tmp_path / "no_such_run"
    with pytest.raises(LrdiagError, match="no_such_run"):
        find_runs([str(missing)])


def test_folders_without_logs_are_not_runs_and_files_that_are_not_logs_are_ignored(tmp_path):
    (tmp_path / "empty").mkdir()
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "model.pt").write_bytes(bytes(range(256)) * 4)
    (checkpoints / "README.md").write_text("# My run\n\nloss went down\n")
    (checkpoints / "config.json").write_text(json.dumps({"lr": 0.1, "epochs": 10, "optimizer": "adam"}))
    run = tmp_path / "run"
    event_file = write_scalars(run, "loss", [1.0])
    (run / "config.json").write_text(json.dumps({"lr": 0.1, "batch_size": 32}))
    (run / "README.md").write_text("notes\n")
    (run / "model.pt").write_bytes(b"\x80\x02}q\x00.")
    [spec] = find_runs([str(tmp_path)])
    assert spec.name == "run"
    assert list(spec.files) == [event_file]
    assert find_runs([str(checkpoints)]) == []
    assert find_runs([str(tmp_path / "empty")]) == []


def _unprivileged() -> list[str] | None:
    """A command prefix under which a folder's permissions bind: none needed for an ordinary user; for root,
    setpriv without the capabilities that let root read any folder (dac_override, dac_read_search); None when
    root cannot drop them here (no setpriv, or a container that forbids it)."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--inh-caps=-all", "--bounding-set", "-dac_override,-dac_read_search"]
    if not shutil.which("setpriv"):
        return None
    probe = subprocess.run([*prefix, sys.executable, "-c", "pass"], capture_output=True)
    return prefix if probe.returncode == 0 else None


@pytest.mark.parametrize("beside", [True, False], ids=["next-to-a-good-run", "only-content"])
def test_a_subfolder_that_cannot_be_listed_is_an_error_naming_it_never_skipped(tmp_path, beside):
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root, and setpriv cannot drop the capabilities that let root read any folder")
    runs = tmp_path / "runs"
    if beside:
        write_scalars(runs / "good", "loss", [1.0, 0.5, 0.25])
    locked = runs / "team" / "locked"
    write_scalars(locked / "seed1", "loss", [1.0, 0.5])
    locked.chmod(0)
    try:
        done = subprocess.run([*prefix, sys.executable, "-m", "lrdiag", "analyze", "runs"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert ("error: team/locked: no file of this run could be read: runs/team/locked: cannot read this folder: "
            "Permission denied") in done.stdout
    assert done.stdout.rstrip().endswith(f"{'1 run' if beside else '0 runs'}: no findings; 1 error")
    assert "Traceback" not in done.stderr


def test_reading_a_found_run_uses_the_readers_discovery_chose_and_sniffs_no_file_again(tmp_path, monkeypatch):
    from lrdiag.ingest import discover

    run = tmp_path / "run"
    write_scalars(run, "loss", [1.0, 0.5])
    (run / "metrics.csv").write_text("step,acc\n0,0.5\n1,0.75\n")
    (run / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "grad_norm": 2.0}]}))
    [spec] = find_runs([str(run)])
    assert sorted(spec.readers.values()) == ["lrdiag.ingest.csvlog", "lrdiag.ingest.jsonlog", "lrdiag.ingest.tfevents"]
    sniffed = []
    monkeypatch.setattr(discover, "reader_for", lambda path: sniffed.append(path))
    result = read_run(spec)
    assert sniffed == []
    assert sorted(result.series) == ["acc", "grad_norm", "loss"] and not result.problems
    np.testing.assert_array_equal(result.series["acc"].values, [0.5, 0.75])


@pytest.mark.parametrize("root", [Path(__file__).parents[1] / "sample_logs", REAL_LOGS], ids=["samples", "real"])
def test_every_series_of_a_read_run_is_named_by_its_key(root):
    """read_run takes a run's first file's series whole (a log of a million keys makes no second dict
    of them): every reader names a series by its key, which the rename of later files' series keeps."""
    if not root.exists():
        pytest.skip(f"{root} is absent")
    runs = find_runs([str(root)])
    assert runs
    for spec in runs:
        run = read_run(spec)
        assert all(series.tag == name for name, series in run.series.items()), spec.name
