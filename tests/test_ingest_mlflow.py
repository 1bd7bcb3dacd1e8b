"""MLflow stores: the file store (`mlruns/`), the SQLite store and a tracking server, written by the
real mlflow package and compared point for point with its own API; the real stores in real_logs."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from lrdiag.detect.base import clean
from lrdiag.errors import LrdiagError
from lrdiag.ingest import mlflow_files, mlflow_server, mlflow_sqlite
from lrdiag.ingest.discover import find_runs
from lrdiag.ingest.runs import read_run
from lrdiag.series.model import ReadResult

REAL_MLFLOW = Path(__file__).parents[2] / "shared" / "real_logs" / "mlflow"
HUGE = sys.float_info.max


def needs_real(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def log_runs(client) -> dict[str, str]:
    """The runs every store test writes, through MlflowClient: {run name: run id}."""
    experiment = client.create_experiment("exp one")
    run = client.create_run(experiment, run_name="r1").info.run_id
    for step in range(5):
        client.log_metric(run, "train/loss", 1.0 / (step + 1), step=step)
    client.log_metric(run, "train/loss", float("nan"), step=5)
    client.log_metric(run, "train/loss", float("inf"), step=6)
    client.log_metric(run, "val loss", 2.0, step=2)
    client.log_metric(run, "val loss", 2.5, step=2)  # the same step again: the last logged wins
    client.set_terminated(run)
    second = client.create_run(experiment, run_name="r2").info.run_id
    client.log_metric(second, "lr", 0.1, step=0)
    client.log_metric(second, "lr", 0.05, step=1)
    client.create_run(experiment, run_name="no metrics")  # a parent of nested runs looks like this
    deleted = client.create_run(experiment, run_name="deleted").info.run_id
    client.log_metric(deleted, "loss", 1.0)
    client.delete_run(deleted)
    gone = client.create_experiment("gone")
    client.log_metric(client.create_run(gone, run_name="in a deleted experiment").info.run_id, "loss", 1.0)
    client.delete_experiment(gone)
    return {"r1": run, "r2": second}


@pytest.fixture(scope="module")
def file_store(tmp_path_factory):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # mlflow 3 keeps the file store behind this switch
    root = tmp_path_factory.mktemp("store") / "mlruns"
    client = MlflowClient(root.as_uri())
    return root, client, log_runs(client)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    database = tmp_path_factory.mktemp("sqlite") / "mlflow.db"
    client = MlflowClient(f"sqlite:///{database}")
    return database, client, log_runs(client)


def assert_same_points(series, history, inf_as_huge: bool = False) -> None:
    """Our series equals the package's history, ordered by step with logged order kept within a step."""
    history = sorted(history, key=lambda metric: metric.step)  # sorted() is stable
    expected = np.array([metric.value for metric in history])
    if inf_as_huge:  # SQL has no Inf: MLflow stores and returns +-float max, lrdiag reads back +-Inf
        expected = np.where(np.abs(expected) >= HUGE, np.sign(expected) * np.inf, expected)
    assert series.steps.tolist() == [metric.step for metric in history]
    np.testing.assert_array_equal(series.values, expected)
    assert series.wall_times.tolist() == [metric.timestamp / 1000.0 for metric in history]


# --- file store -----------------------------------------------------------------------------------

def test_file_store_every_point_equals_mlflow_client_history(file_store):
    root, client, ids = file_store
    runs = {spec.name: read_run(spec) for spec in find_runs([str(root)])}
    assert sorted(runs) == ["exp one/r1", "exp one/r2"]  # no deleted run, no run without metrics
    for name, run_id in ids.items():
        run = runs[f"exp one/{name}"]
        assert run.problems == [] and run.source == "mlflow_file_store"
        for key, series in run.series.items():
            assert_same_points(series, client.get_metric_history(run_id, key))
    assert set(runs["exp one/r1"].series) == {"train/loss", "val loss"}  # a key with '/' is a nested folder
    assert math.isnan(runs["exp one/r1"].series["train/loss"].values[5])
    assert runs["exp one/r1"].series["train/loss"].values[6] == math.inf


def test_file_store_step_logged_twice_keeps_both_and_the_last_wins(file_store):
    root, _, _ = file_store
    [spec] = [spec for spec in find_runs([str(root)]) if spec.name == "exp one/r1"]
    series = read_run(spec).series["val loss"]
    assert series.values.tolist() == [2.0, 2.5]
    steps, values = clean(series)
    assert steps.tolist() == [2] and values.tolist() == [2.5]


def test_file_store_deleted_runs_and_trash_are_skipped(file_store):
    root, _, _ = file_store
    assert (root / ".trash").is_dir() and any((root / ".trash").iterdir())
    names = [spec.name for spec in find_runs([str(root)])]
    assert not any("deleted" in name or "gone" in name for name in names)
    assert find_runs([str(root / ".trash")]) == []


def test_file_store_experiment_or_run_folder_given_directly(file_store):
    root, _, ids = file_store
    [run_folder] = root.glob(f"*/{ids['r1']}")
    assert [spec.name for spec in find_runs([str(run_folder.parent)])] == ["exp one/r1", "exp one/r2"]
    assert [spec.name for spec in find_runs([str(run_folder)])] == ["exp one/r1"]
    assert [spec.name for spec in find_runs([str(root.parent)])] == ["mlruns/exp one/r1", "mlruns/exp one/r2"]


def copy_of_run(file_store, tmp_path) -> Path:
    root, _, ids = file_store
    [run_folder] = root.glob(f"*/{ids['r1']}")
    shutil.copytree(run_folder.parent, tmp_path / "exp")
    return tmp_path / "exp" / ids["r1"]


def test_cut_metric_line_keeps_the_points_before_it_with_a_problem(file_store, tmp_path):
    run_folder = copy_of_run(file_store, tmp_path)
    metric = run_folder / "metrics" / "train" / "loss"
    whole = metric.read_bytes()
    metric.write_bytes(whole + b"1796040703999 0.12")  # a writer killed in the middle of a line
    run = read_run(next(spec for spec in find_runs([str(tmp_path / "exp")]) if spec.name.endswith("r1")))
    assert len(run.series["train/loss"]) == whole.count(b"\n") == 7
    [problem] = run.problems
    assert problem.file == str(metric) and problem.where == "line 8" and "cut short" in problem.message


def test_bad_metric_lines_are_problems_and_the_other_lines_stay(file_store, tmp_path):
    run_folder = copy_of_run(file_store, tmp_path)
    metric = run_folder / "metrics" / "train" / "loss"
    lines = metric.read_bytes().splitlines(keepends=True)
    metric.write_bytes(b"".join(lines[:2] + [b"garbage\n", b"1796040703999 abc 3\n", b"1796040703999 NA 3\n"]
                                + lines[2:]))
    run = read_run(next(spec for spec in find_runs([str(tmp_path / "exp")]) if spec.name.endswith("r1")))
    assert len(run.series["train/loss"]) == 7  # NA is not a value MLflow writes: no point, not a NaN
    assert [(problem.where, problem.file) for problem in run.problems] == [
        ("line 3", str(metric)), ("line 4", str(metric)), ("line 5", str(metric))]


def test_fifos_in_a_run_folder_are_problems_never_opened_blocking(file_store, tmp_path):
    run_folder = copy_of_run(file_store, tmp_path)
    os.mkfifo(run_folder / "metrics" / "grad_norm")
    (run_folder / "tags" / "mlflow.runName").unlink()
    os.mkfifo(run_folder / "tags" / "mlflow.runName")  # the run's name then comes from meta.yaml
    [spec] = [spec for spec in find_runs([str(tmp_path / "exp")]) if spec.where == str(run_folder)]
    run = read_run(spec)
    assert len(run.series["train/loss"]) == 7 and "grad_norm" not in run.series
    [problem] = run.problems
    assert problem.file == str(run_folder / "metrics" / "grad_norm") and "FIFO" in problem.message


def test_meta_yaml_fields_read_as_yaml_reads_them(file_store):
    yaml = pytest.importorskip("yaml")
    root, _, _ = file_store
    written = list(root.rglob("meta.yaml"))
    assert len(written) >= 5  # experiments, runs and the trash of the store the fixture wrote
    metas = written + list(REAL_MLFLOW.rglob("meta.yaml"))  # the real stores too, where they are
    for path in metas:
        expected = yaml.safe_load(path.read_text())
        ours = mlflow_files.read_meta(path)
        for key, value in expected.items():
            if isinstance(value, (str, int)):
                assert ours[key] == str(value), (path, key)


def test_meta_yaml_quoting_and_folded_values(tmp_path):
    meta = tmp_path / "meta.yaml"
    meta.write_text("artifact_location: file:///x\nexperiment_id: '7'\nname: 'it''s a very long experiment name\n"
                    "  folded onto a second line'\nlifecycle_stage: active\ntags: []\nother: \"tab\\there\"\n")
    assert mlflow_files.read_meta(meta) == {"artifact_location": "file:///x", "experiment_id": "7",
                                            "name": "it's a very long experiment name folded onto a second line",
                                            "lifecycle_stage": "active", "tags": "", "other": "tab\there"}


# (store, {run name: {key: points}}) from the SOURCES.tsv notes; the test also counts lines itself.
REAL_FILE_STORES = {
    "GhadeerElmkaiel__SegFormer": {"SegformerB3FisheyeGenerate/f67368c47c034f66a565105fb0eb7697": {
        "learning_rate": 16000, "momentum": 16000, "train/loss": 15960, "train/decode.loss_seg": 15960,
        "train/decode.acc_seg": 15960}},
    "CHRISTIANDAGATTI__Deep_Learning_Diplo": {
        "NaiveMeliChallenge_experiment_5Cat/gaudy-dolphin-859": dict.fromkeys(
            ["train_loss", "validation_loss", "train_bas", "validation_bas"], 200),
        "NaiveMeliChallenge_experiment_5Cat/amusing-snipe-392": dict.fromkeys(
            ["train_loss", "validation_loss", "train_bas", "validation_bas"], 80)},
    "BozzoloLu__GAN": {"Classical GAN/Run_0 (07cd61a8)": {"Generator loss": 270, "Discriminator loss": 270},
                       "Classical GAN/Run_0 (71597c39)": {"Generator loss": 270, "Discriminator loss": 270}},
    "ai4os-hub__ai4os-yolov8-torch": {
        f"/srv/yolov8_api/models/{name}": {
            **dict.fromkeys(["lr/pg0", "lr/pg1", "lr/pg2", "train/box_loss", "train/cls_loss", "train/dfl_loss",
                             "val/box_loss", "val/cls_loss", "val/dfl_loss"], 56),
            **dict.fromkeys(["metrics/mAP50B", "metrics/mAP50-95B", "metrics/precisionB", "metrics/recallB"], 57)}
        for name in ("20240212_144531", "20240212_152236")},
    "Galjoentopper__Bot_kilo": {
        "Default/gru_20250817_203926": {**dict.fromkeys(["train_loss", "val_loss", "learning_rate",
                                                          "consecutive_bad_batches"], 48),
                                        **dict.fromkeys(["best_val_loss", "final_learning_rate", "total_epochs"], 2)},
        "Default/gru_20250817_184428": {**dict.fromkeys(["train_loss", "val_loss", "learning_rate",
                                                          "consecutive_bad_batches"], 47),
                                        **dict.fromkeys(["best_val_loss", "final_learning_rate", "total_epochs"], 2)}},
}


@pytest.mark.parametrize("store", sorted(REAL_FILE_STORES))
def test_real_file_store_every_run_and_point(store):
    root = needs_real(REAL_MLFLOW / store / "mlruns")
    specs = find_runs([str(root)])
    assert {spec.name: spec.store for spec in specs} == dict.fromkeys(REAL_FILE_STORES[store], "mlflow")
    for spec in specs:
        run = read_run(spec)
        assert run.problems == []
        assert {key: len(series) for key, series in run.series.items()} == REAL_FILE_STORES[store][spec.name]
        for key, series in run.series.items():  # an independent count: the lines of each metric file
            assert len(series) == (Path(spec.where) / "metrics" / key).read_bytes().count(b"\n")
            assert (np.diff(series.steps) >= 0).all()


def test_real_ultralytics_step_logged_twice_the_final_validation_wins():
    root = needs_real(REAL_MLFLOW / "ai4os-hub__ai4os-yolov8-torch" / "mlruns")
    for spec in find_runs([str(root)]):
        series = read_run(spec).series["metrics/mAP50B"]
        last_line = (Path(spec.where) / "metrics" / "metrics" / "mAP50B").read_text().splitlines()[-1].split()
        assert series.steps[-2:].tolist() == [55, 55] and series.values[-1] == float(last_line[1])
        steps, values = clean(series)
        assert steps[-1] == 55 and values[-1] == float(last_line[1]) and len(steps) == 56


def test_real_mlflow3_store_models_are_not_runs_and_the_repeated_step_0_sorts_first():
    root = needs_real(REAL_MLFLOW / "Galjoentopper__Bot_kilo" / "mlruns")
    assert any((root / "0" / "models").glob("m-*/metrics/train_loss"))  # four-field lines live there
    specs = find_runs([str(root)])
    assert all("/models/" not in spec.where for spec in specs) and len(specs) == 2
    for spec in specs:
        series = read_run(spec).series["train_loss"]
        lines = (Path(spec.where) / "metrics" / "train_loss").read_text().splitlines()
        assert lines[-1].split()[2] == "0"  # the last line repeats step 0, out of time order
        assert series.steps[:2].tolist() == [0, 0] and series.steps[-1] == int(lines[-2].split()[2])
    model = next((root / "0" / "models").glob("m-*"))
    fields = (model / "metrics" / "train_loss").read_text().split()
    assert len(fields) == 4  # timestamp value step run_id
    models = mlflow_files.read(str(model))  # read when given alone, though discovery never takes it for a run
    assert models.problems == [] and models.series["train_loss"].values.tolist() == [float(fields[1])]


def test_real_nested_runs_parents_without_metrics_are_skipped():
    root = needs_real(REAL_MLFLOW / "BozzoloLu__GAN" / "mlruns")
    run_folders = [meta.parent for meta in root.glob("1/*/meta.yaml")]
    assert len(run_folders) == 4  # two parents, two children
    assert sorted(Path(spec.where) for spec in find_runs([str(root)])) == sorted(
        folder for folder in run_folders if (folder / "metrics").is_dir() and any((folder / "metrics").iterdir()))


# --- SQLite store -----------------------------------------------------------------------------------

def test_sqlite_every_point_equals_mlflow_client_history(sqlite_store):
    database, client, ids = sqlite_store
    runs = {spec.name: read_run(spec) for spec in find_runs([str(database)])}
    assert sorted(runs) == ["exp one/r1", "exp one/r2"]  # no deleted run or experiment, no run without metrics
    for name, run_id in ids.items():
        run = runs[f"exp one/{name}"]
        assert run.problems == [] and run.source == "mlflow_sqlite" and run.files == [str(database)]
        for key, series in run.series.items():
            assert_same_points(series, client.get_metric_history(run_id, key), inf_as_huge=True)
    values = runs["exp one/r1"].series["train/loss"].values
    assert math.isnan(values[5]) and values[6] == math.inf
    assert clean(runs["exp one/r1"].series["val loss"])[1].tolist() == [2.5]


def test_sqlite_steps_a_hand_edit_made_no_int64_are_problems_never_the_whole_run_lost(sqlite_store, tmp_path):
    """MLflow writes BIGINT steps; a REAL one past int64 made numpy's int64 cast raise (the run lost as a reader
    bug), a fractional one was cut silently, text went through. Now each is named as the text readers name theirs."""
    database, client, ids = sqlite_store
    edited = tmp_path / "mlflow.db"
    shutil.copy(database, edited)
    with closing(sqlite3.connect(edited)) as connection, connection:
        rowids = [row[0] for row in connection.execute(
            "SELECT rowid FROM metrics WHERE run_uuid = ? AND key = 'train/loss' ORDER BY rowid", (ids["r1"],))]
        for rowid, step in zip(rowids[1:], (1e20, 2.5, "two")):
            connection.execute("UPDATE metrics SET step = ? WHERE rowid = ?", (step, rowid))
    [spec] = [spec for spec in find_runs([str(edited)]) if spec.name == "exp one/r1"]
    run = read_run(spec)
    history = sorted(client.get_metric_history(ids["r1"], "train/loss"), key=lambda metric: metric.step)
    assert len(run.series["train/loss"]) == len(history) - 2  # 1e20 and "two" skipped, 2.5 read as step 2
    assert [(problem.file, problem.where, problem.message) for problem in run.problems] == [
        (str(edited), "metric 'train/loss'", "a step that is no number; point skipped"),
        (str(edited), "metric 'train/loss'", "'step' value 1e+20 is outside the range of a step (a 64-bit integer); "
                                             "point skipped"),
        (str(edited), "metric 'train/loss'", "'step' value 2.5 is not a whole number; read as step 2")]
    untouched = read_run(next(spec for spec in find_runs([str(edited)]) if spec.name == "exp one/r2"))
    assert untouched.problems == [] and untouched.series


def test_sqlite_database_found_in_a_folder(sqlite_store):
    database, _, _ = sqlite_store
    assert [spec.name for spec in find_runs([str(database.parent)])] == ["exp one/r1", "exp one/r2"]


def test_sqlite_locked_database_is_a_problem_naming_it_and_a_writer_is_never_locked_out(sqlite_store, tmp_path):
    database, _, _ = sqlite_store
    copy = tmp_path / "mlflow.db"
    shutil.copy(database, copy)
    specs = find_runs([str(copy)])
    writer = sqlite3.connect(copy, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # a writer in the middle of committing
    try:
        run = read_run(specs[0])
    finally:
        writer.execute("ROLLBACK")
    [problem] = run.problems
    assert problem.file == str(copy) and "locked" in problem.message and run.series == {}
    read_run(specs[0])
    writer.execute("BEGIN EXCLUSIVE")  # lrdiag holds no lock once a run is read
    writer.execute("ROLLBACK")
    writer.close()


def test_sqlite_unknown_schema_is_a_problem_naming_its_version(tmp_path):
    database = tmp_path / "mlflow.db"
    with sqlite3.connect(database) as connection:
        connection.executescript("CREATE TABLE alembic_version (version_num VARCHAR(32));"
                                 "INSERT INTO alembic_version VALUES ('abc123');"
                                 "CREATE TABLE metrics (key TEXT, value FLOAT, timestamp INT, run_uuid TEXT);")
    [spec] = find_runs([str(database)])
    [problem] = read_run(spec).problems
    assert problem.file == str(database)
    assert "alembic version abc123" in problem.message and "metrics.is_nan" in problem.message


def test_a_folder_holding_stores_and_logs_finds_each_once(file_store, sqlite_store, tmp_path):
    root, _, _ = file_store
    database, _, _ = sqlite_store
    shutil.copytree(root, tmp_path / "project" / "mlruns")
    shutil.copy(database, tmp_path / "project" / "mlflow.db")
    (tmp_path / "project" / "lightning").mkdir()
    (tmp_path / "project" / "lightning" / "metrics.csv").write_text("step,train_loss\n0,1.0\n1,0.5\n")
    artifacts = next((tmp_path / "project" / "mlruns").glob("*/*/artifacts"))
    (artifacts / "metrics.csv").write_text("step,loss\n0,1.0\n")  # inside the store: the store's, not a run
    specs = find_runs([str(tmp_path / "project")])
    assert [(spec.name, spec.store) for spec in specs] == [
        ("exp one/r1", "mlflow_sqlite"), ("exp one/r2", "mlflow_sqlite"), ("lightning", ""),
        ("mlruns/exp one/r1", "mlflow"), ("mlruns/exp one/r2", "mlflow")]


def test_other_sqlite_databases_are_not_claimed(tmp_path):
    database = tmp_path / "cache.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE metrics (x)")
    assert mlflow_sqlite.claim(database) is None
    assert find_runs([str(tmp_path)]) == []


REAL_SQLITE = {
    # store: (runs, {run name: {key: points}} for a few of them), from the SOURCES.tsv notes
    "KhuzaimahAziz__thesis_seismology": (8, {"MLF_Test/upbeat-hen-871": {"train_loss": 48, "val_loss": 2, "epoch": 50},
                                             "MLF_Test/orderly-ram-15": {"train_loss": 24, "epoch": 25, "val_loss": 1}}),
    # 30 runs: 3 deleted (2 of them with metrics), 1 (deleted) without metrics
    "Pooyash1998__Toy_sft": (27, {"granite-350M-sft/lora-sft-lr5e-05-r16-20260616-131808": {
        "loss": 187, "grad_norm": 187, "learning_rate": 187, "eval_loss": 19, "epoch": 207, "train_loss": 1}}),
}


@pytest.mark.parametrize("store", sorted(REAL_SQLITE))
def test_real_sqlite_store_every_run_and_point(store):
    database = needs_real(REAL_MLFLOW / store / "mlruns.db")
    specs = find_runs([str(database)])
    count, some = REAL_SQLITE[store]
    assert len(specs) == count == len({spec.run for spec in specs})
    runs = {spec.name: read_run(spec) for spec in specs}
    with sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True) as connection:
        deleted = {row[0] for row in connection.execute("SELECT run_uuid FROM runs WHERE lifecycle_stage = 'deleted'")}
        for spec in specs:
            run = runs[spec.name]
            assert run.problems == [] and spec.run not in deleted
            counts = dict(connection.execute("SELECT key, COUNT(*) FROM metrics WHERE run_uuid = ? GROUP BY key",
                                             (spec.run,)).fetchall())
            assert {key: len(series) for key, series in run.series.items()} == counts
    for name, expected in some.items():
        assert {key: len(runs[name].series[key]) for key in expected} == expected


def test_real_sqlite_epoch_on_repeated_steps_is_no_metric_role():
    database = needs_real(REAL_MLFLOW / "KhuzaimahAziz__thesis_seismology" / "mlruns.db")
    run = read_run(next(spec for spec in find_runs([str(database)]) if spec.name == "MLF_Test/upbeat-hen-871"))
    epoch = run.series["epoch"]
    assert len(np.unique(epoch.steps)) < len(epoch) and epoch.role is None
    assert run.primary("train_loss").tag == "train_loss" and run.primary("val_loss").tag == "val_loss"


# --- tracking server --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--default-artifact-root", str(folder / "art")],
        stdout=open(folder / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        client = MlflowClient(url)
        ids = log_runs(client)
        from mlflow.entities import Metric

        long_run = client.create_run(client.get_experiment_by_name("exp one").experiment_id, run_name="long").info.run_id
        points = 30_000  # more than one get-history page of 25 000
        for start in range(0, points, 1000):
            client.log_batch(long_run, metrics=[Metric("loss", 1.0 / (step + 1), 1_700_000_000_000 + step, step)
                                                for step in range(start, start + 1000)])
        ids["long"] = long_run
        yield url, client, ids, points
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def test_server_every_point_equals_mlflow_client_history(server):
    url, client, ids, points = server
    specs = find_runs([f"mlflow+{url}"])
    assert sorted(spec.name for spec in specs) == ["exp one/long", "exp one/r1", "exp one/r2"]
    runs = {spec.name: read_run(spec) for spec in specs}
    for name, run_id in ids.items():
        run = runs[f"exp one/{name}"]
        assert run.problems == [] and run.source == "mlflow_server"
        for key, series in run.series.items():
            assert_same_points(series, client.get_metric_history(run_id, key))
    assert len(runs["exp one/long"].series["loss"]) == points
    assert math.isnan(runs["exp one/r1"].series["train/loss"].values[5])


def test_server_url_with_an_experiment_name_or_id(server):
    url, client, _, _ = server
    assert len(find_runs([f"mlflow+{url}/exp%20one"])) == 3
    experiment_id = client.get_experiment_by_name("exp one").experiment_id
    assert len(find_runs([f"mlflow+{url}/{experiment_id}"])) == 3
    with pytest.raises(LrdiagError, match="no experiment named 'nope'"):
        find_runs([f"mlflow+{url}/nope"])


def test_server_down_is_one_clear_error_exit_2(tmp_path):
    url = f"mlflow+http://127.0.0.1:{free_port()}"
    with pytest.raises(LrdiagError, match="cannot reach the server"):
        find_runs([url])
    result = subprocess.run([sys.executable, "-m", "lrdiag", "analyze", url], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and url in result.stderr


def test_server_that_never_answers_times_out_with_one_error(monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    monkeypatch.setattr(mlflow_server, "TIMEOUT_S", 0.5)
    try:
        with pytest.raises(LrdiagError, match="no answer within 0.5 s"):
            find_runs([f"mlflow+http://127.0.0.1:{listener.getsockname()[1]}"])
    finally:
        listener.close()


def test_server_failing_mid_history_keeps_the_points_that_came(server):
    """A proxy in front of the real server drops the connection when the second history page is asked for."""
    import http.server

    url, _, ids, points = server

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if "get-history" in self.path and "page_token" in self.path:
                self.connection.close()  # the server went away in the middle of the read
                return
            with urllib.request.urlopen(url + self.path, timeout=30) as upstream:
                answer(self, upstream.read())

        def log_message(self, *args):
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        run = mlflow_server.read(f"http://127.0.0.1:{proxy.server_address[1]}", ids["long"])
    finally:
        proxy.shutdown()
    assert len(run.series["loss"]) == 25_000 < points
    [problem] = run.problems
    assert "after 25000 points" in problem.message and "'loss'" in problem.where


def serve(handler_class) -> tuple[str, object]:
    import http.server

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd


def answer(handler, body: bytes) -> None:
    """A test server's 200 answer of a JSON body."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_server_asking_for_credentials_gets_mlflows_environment_variables(server, monkeypatch):
    """A proxy in front of the real server that wants the token MLflow's client would send."""
    import http.server

    url, _, _, _ = server

    class Guarded(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.forward(None)

        def do_POST(self):
            self.forward(self.rfile.read(int(self.headers["Content-Length"])))

        def forward(self, body):
            if self.headers.get("Authorization") != "Bearer s3cret":
                self.send_error(401, "Unauthorized")
                return
            request = urllib.request.Request(url + self.path, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as upstream:
                answer(self, upstream.read())

        def log_message(self, *args):
            pass

    proxy, httpd = serve(Guarded)
    try:
        monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
        with pytest.raises(LrdiagError, match="HTTP 401.*MLFLOW_TRACKING_TOKEN"):
            find_runs([f"mlflow+{proxy}"])
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "s3cret")
        specs = find_runs([f"mlflow+{proxy}"])
        assert len(specs) == 3 and read_run(specs[0]).problems == []
    finally:
        httpd.shutdown()


def test_a_server_history_point_that_is_no_point_is_a_problem_never_the_whole_run_lost():
    """A step past int64, a step that is no integer, a point without a value: counted in one problem, the other
    points kept (was an OverflowError, a ValueError or a KeyError: the run lost as a reader bug)."""
    import http.server

    history = [{"step": "0", "value": 0.5, "timestamp": "1700000000000"}, {"step": "99999999999999999999", "value": 0.4},
               {"step": "1e3", "value": 1.0}, {"step": 3}, {"step": 2, "value": "NaN", "timestamp": 1700000000002},
               {"value": 0.25}]

    class Server(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            answer(self, json.dumps({"metrics": history} if "get-history" in self.path else {
                "run": {"info": {"run_id": "r"}, "data": {"metrics": [{"key": "loss"}]}}}).encode())

        def log_message(self, *args):
            pass

    url, httpd = serve(Server)
    try:
        result = mlflow_server.read(url, "r")
    finally:
        httpd.shutdown()
    loss = result.series["loss"]
    assert loss.steps.tolist() == [0, 0, 2] and loss.values[[0, 1]].tolist() == [0.5, 0.25] and np.isnan(loss.values[2])
    assert [(problem.where, problem.message) for problem in result.problems] == [
        ("run r, metric 'loss'", "3 points with no value, or a step that is no number a step can be (a 64-bit "
                                 "integer), skipped")]


def test_a_web_server_that_is_not_mlflow_is_one_error(tmp_path):
    import functools
    import http.server

    url, httpd = serve(functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path)))
    try:
        with pytest.raises(LrdiagError, match="answered HTTP"):
            find_runs([f"mlflow+{url}"])
    finally:
        httpd.shutdown()


def test_not_an_mlflow_url_is_still_a_missing_path():
    with pytest.raises(LrdiagError, match="no such file or folder"):
        find_runs(["mlflow:/nowhere"])


# --- with and without pandas: the same points and problems either way ---------------------------------------

def assert_same_reads(first, second) -> None:
    """Two reads of one run: the same keys, problems, notes, and steps, values and wall times bit for bit."""
    assert first.problems == second.problems and first.notes == second.notes
    assert list(first.series) == list(second.series)
    for key, series in first.series.items():
        other = second.series[key]
        for field in ("steps", "values", "wall_times"):
            mine, theirs = getattr(series, field), getattr(other, field)
            assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes(), (key, field)


def file_store_both_ways(where: str, monkeypatch) -> tuple:
    """mlflow_files.read of one run folder by the split parser alone, then by pandas' wherever it can."""
    monkeypatch.setattr(mlflow_files, "SMALL_BYTES", 1 << 62)
    plain = mlflow_files.read(where)
    monkeypatch.setattr(mlflow_files, "SMALL_BYTES", 0)
    monkeypatch.setattr(mlflow_files, "PLAIN_BUDGET", -1)
    return plain, mlflow_files.read(where)


def pandas_series_of(rows: list[tuple]) -> dict:
    """What mlflow_sqlite grouped a run's rows into with pandas before 110b50f: the reference for series_of."""
    import pandas as pd

    from lrdiag.series.model import Series

    frame = pd.DataFrame.from_records(rows, columns=["key", "value", "step", "timestamp", "is_nan"])
    values = frame["value"].to_numpy(np.float64, copy=True)
    values[values >= HUGE] = np.inf
    values[values <= -HUGE] = -np.inf
    values[frame["is_nan"].to_numpy(bool)] = np.nan
    frame["value"] = values
    series = {}
    for key, points in frame.groupby("key", sort=True):
        points = points.sort_values("step", kind="stable")
        series[key] = Series(key, points["step"].to_numpy(np.int64), points["value"].to_numpy(),
                             points["timestamp"].to_numpy(np.float64) / 1000.0)
    return series


def odd_metrics(folder: Path) -> Path:
    """A run folder whose metric files hold what MLflow writes and what damage leaves: NaN/Inf, MLflow 3's
    four fields, MLflow < 0.9's two, a nested key, repeated steps, blanks, bad and cut lines."""
    metrics = folder / "metrics"
    (metrics / "train").mkdir(parents=True)
    files = {
        "loss": b"1700000000000 0.5 0\n1700000000001 nan 1\n1700000000002 inf 2\n1700000000003 -inf 3\n"
                b"1700000000004 -0.0 4\n1700000000005 5e-324 5\n1700000000006 1.7976931348623157e+308 6\n",
        "train/acc": b"1700000000000 0.25 3\n1700000000001 0.5 1\n1700000000002 0.75 1\n",  # unsorted, repeated
        "mlflow3": b"1700000000000 1.5 0 0123456789abcdef0123456789abcdef\n1700000000001 2.5 1 0123456789abcdef\n",
        "old": b"1500000000000 3.0\n1500000000001 4.0\n",
        "blanks": b"1700000000000  0.5 0\n 1700000000001 0.5 1\n1700000000002\t0.5 2\n1700000000003 0.5 3\r\n\n"
                  b"1700000000004 0.5 4 \n",
        "damaged": b"garbage\n1700000000000 abc 1\n1700000000001 NA 2\n1 2 3 4 5\n1700000000002 0.5 2.5\n"
                   b"1700000000003 0.5 3\n1700000000004 0.",
        "empty": b"",
        "big": b"".join(b"%d %r %d\n" % (1700000000000 + step, 1 / (step + 1), step // 2) for step in range(3000)),
    }
    for name, data in files.items():
        (metrics / name).write_bytes(data)
    return folder


def test_odd_metric_files_read_the_same_with_and_without_pandas(tmp_path, monkeypatch):
    plain, with_pandas = file_store_both_ways(str(odd_metrics(tmp_path / "run")), monkeypatch)
    assert_same_reads(plain, with_pandas)
    assert sorted(plain.series) == ["big", "blanks", "damaged", "empty", "loss", "mlflow3", "old", "train/acc"]
    assert len(plain.series["empty"]) == 0 and len(plain.series["big"]) == 3000
    loss = plain.series["loss"].values
    assert np.isnan(loss[1]) and loss[2:4].tolist() == [np.inf, -np.inf] and math.copysign(1, loss[4]) == -1
    assert plain.series["train/acc"].steps.tolist() == [1, 1, 3] and plain.series["old"].steps.tolist() == [0, 0]
    assert len(plain.series["blanks"]) == 5 and plain.series["damaged"].steps.tolist() == [3]
    assert [problem.where for problem in plain.problems] == ["line 7", "line 1", "line 4", "line 2", "line 3", "line 5"]


def test_a_step_past_int64_is_a_problem_and_a_value_past_a_float_an_infinity_never_the_whole_run_lost(
        tmp_path, monkeypatch):
    """Was an OverflowError (numpy's int64 cast, or pandas' parser) that lost the whole run as a reader
    bug; now, with pandas and without, the line is a problem and every other point stays."""
    metrics = tmp_path / "run" / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "loss").write_bytes(b"1700000000000 0.5 0\n1700000000001 0.4 99999999999999999999\n"
                                   b"1700000000002 " + b"9" * 400 + b" 2\n1700000000003 1e400 3\n"
                                   b"1700000000004 0.25 -9223372036854775809\n1700000000005 0.125 5\n")
    plain, with_pandas = file_store_both_ways(str(tmp_path / "run"), monkeypatch)
    assert_same_reads(plain, with_pandas)
    loss = plain.series["loss"]
    assert loss.steps.tolist() == [0, 2, 3, 5] and loss.values.tolist() == [0.5, np.inf, np.inf, 0.125]
    assert [(problem.where, problem.message) for problem in plain.problems] == [
        (f"line {line}", f"'step' value {step} is outside the range of a step (a 64-bit integer); line skipped")
        for line, step in ((2, "99999999999999999999"), (5, "-9223372036854775809"))]


def test_file_stores_read_the_same_with_and_without_pandas(file_store, monkeypatch):
    root, _, ids = file_store
    runs = [spec for spec in find_runs([str(root)])]
    runs += [spec for spec in find_runs([str(REAL_MLFLOW)]) if spec.store == "mlflow"] if REAL_MLFLOW.is_dir() else []
    assert len(runs) >= 2
    for spec in runs:
        assert_same_reads(*file_store_both_ways(spec.where, monkeypatch))


def test_sqlite_stores_group_rows_as_pandas_did(sqlite_store):
    database, _, _ = sqlite_store
    databases = [database, *sorted(REAL_MLFLOW.glob("*/*.db"))]
    runs = [spec for path in databases for spec in find_runs([str(path)])]
    assert len(runs) >= 2
    for spec in runs:
        with sqlite3.connect(f"{Path(spec.where).as_uri()}?mode=ro", uri=True) as connection:
            rows = connection.execute(mlflow_sqlite._POINTS, (spec.run,)).fetchall()
        assert_same_reads(ReadResult("s", mlflow_sqlite.series_of(rows)), ReadResult("s", pandas_series_of(rows)))
    rows = [("b", 1.0, 2, 10, 0), ("a", HUGE, 1, 11, 0), ("b", 0.0, 2, 12, 1), ("a", -HUGE, 0, 13, 0),
            ("b", 3.0, 1, 14, False), ("a/x", 5, 0, 15, True), ("é", 1.5, -1, 16, 0)]
    assert_same_reads(ReadResult("s", mlflow_sqlite.series_of(rows)), ReadResult("s", pandas_series_of(rows)))
    assert mlflow_sqlite.series_of([]) == {}


def test_a_process_parses_metric_files_without_pandas_up_to_its_budget(tmp_path):
    """Small files never import pandas; a process imports it only once it has split PLAIN_BUDGET bytes."""
    code = f"""
import sys
from lrdiag.ingest import mlflow_files
mlflow_files.PLAIN_BUDGET = 200_000
run = mlflow_files.read({str(odd_metrics(tmp_path / 'run'))!r})
assert 'pandas' not in sys.modules, 'a small run imported pandas'
for _ in range(3):
    assert mlflow_files.read({str(tmp_path / 'run')!r}).series.keys() == run.series.keys()
assert 'pandas' in sys.modules, 'pandas never imported past the budget'
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
