"""Cold start: `lrdiag --version` imports no heavy library, and `lrdiag analyze` imports only what its inputs need.

Each command runs in a fresh interpreter under `python -X importtime`, which names every module imported; the
test fails on the modules, never on a time (benchmarks/bench_coldstart.py prints the CPU seconds).
"""

from __future__ import annotations

import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_logs"
REAL = ROOT.parent / "shared" / "real_logs"
# Libraries that cost 0.05 s to seconds of CPU to import, none of which a command needs before it reads input.
HEAVY = ("numpy", "pandas", "scipy", "google.protobuf", "tensorboard", "torch", "ray", "matplotlib", "pyarrow",
         "grpc", "mlflow", "wandb", "keras", "transformers", "lightning", "pytorch_lightning", "yaml", "requests")
# An analysis needs numpy for the series; an event file of plain scalars (SummaryWriter's) is decoded without
# protobuf (lrdiag.ingest.eventwire), and small CSV and JSON logs without pandas (which loads pyarrow when installed).
NOT_FOR_EVENTS = tuple(name for name in HEAVY if name != "numpy")


def imported(*args: str) -> set[str]:
    """The modules `python -X importtime -m lrdiag ARGS` imports."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lrdiag", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


def heavy(modules: set[str], names=HEAVY) -> list[str]:
    return sorted(name for name in names if any(m == name or m.startswith(name + ".") for m in modules))


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("analyze", "--help")])
def test_version_and_help_import_no_heavy_library(args):
    modules = imported(*args)
    assert "lrdiag.cli" in modules  # the parse found the imports
    assert heavy(modules) == []


def test_analyze_of_a_small_event_file_run_imports_no_pandas_scipy_protobuf_or_frameworks():
    modules = imported("analyze", str(SAMPLES / "example_spiky"))
    assert "lrdiag.ingest.tfevents" in modules
    assert heavy(modules, NOT_FOR_EVENTS) == []


@pytest.mark.parametrize(("run", "reader"), [("lightning_csv/mlp_adam_overfit", "csvlog"),
                                             ("keras_csv/mlp_adam_overfit", "csvlog"),
                                             ("trainer_state/transformer_adamw_linear", "jsonlog"),
                                             ("detectron2/detector_lr_spikes", "jsonlog")])
def test_analyze_of_a_small_csv_or_json_run_imports_no_pandas(run, reader):
    """A CSV under csvlog.PLAIN_BYTES is parsed by the csv module and numpy, a small JSON log by json.loads and
    numpy: pandas (and pyarrow, which it loads) cost more to import (0.3-0.7 s of CPU) than the whole analysis of
    a small run."""
    modules = imported("analyze", str(SAMPLES / run))
    assert f"lrdiag.ingest.{reader}" in modules
    assert heavy(modules, NOT_FOR_EVENTS) == []


def loss_points(count: int = 300) -> list[tuple[int, float, int]]:
    """(wall time ms, loss, step) of a short run: a decaying loss."""
    return [(1_700_000_000_000 + 1000 * step, 2.0 / (1 + step / 50), step) for step in range(count)]


def mlflow_file_run(root: Path) -> Path:
    """One run of an MLflow file store, as MLflow writes it: meta.yaml files and one line a logged point."""
    experiment = root / "mlruns" / "1"
    run = experiment / "0123456789abcdef0123456789abcdef"
    (run / "metrics" / "train").mkdir(parents=True)
    (experiment / "meta.yaml").write_text(f"artifact_location: {experiment.as_uri()}\nexperiment_id: '1'\n"
                                          "lifecycle_stage: active\nname: cold\n")
    (run / "meta.yaml").write_text(f"artifact_uri: {run.as_uri()}/artifacts\nexperiment_id: '1'\nlifecycle_stage: "
                                   f"active\nrun_id: {run.name}\nrun_name: small\nrun_uuid: {run.name}\n")
    for key in ("train/loss", "lr"):
        (run / "metrics" / key).write_text("".join(f"{time} {loss!r} {step}\n" for time, loss, step in loss_points()))
    return run


def mlflow_database(root: Path) -> Path:
    """An MLflow SQLite database holding one run, with the columns lrdiag reads of MLflow's schema."""
    database = root / "mlflow.db"
    with sqlite3.connect(database) as connection:
        connection.executescript(
            "CREATE TABLE alembic_version (version_num VARCHAR(32));"
            "INSERT INTO alembic_version VALUES ('1b5f0d9ad7c1');"
            "CREATE TABLE experiments (experiment_id INTEGER, name TEXT, lifecycle_stage TEXT);"
            "INSERT INTO experiments VALUES (1, 'cold', 'active');"
            "CREATE TABLE runs (run_uuid TEXT, name TEXT, experiment_id INTEGER, lifecycle_stage TEXT, start_time INT);"
            "INSERT INTO runs VALUES ('r1', 'small', 1, 'active', 0);"
            "CREATE TABLE tags (key TEXT, value TEXT, run_uuid TEXT);"
            "CREATE TABLE metrics (key TEXT, value FLOAT, timestamp BIGINT, run_uuid TEXT, step BIGINT,"
            " is_nan BOOLEAN);")
        connection.executemany("INSERT INTO metrics VALUES (?, ?, ?, 'r1', ?, 0)",
                               [(key, loss, time, step) for key in ("train/loss", "lr")
                                for time, loss, step in loss_points()])
    return database


def wandb_run(root: Path) -> Path:
    """A W&B run folder: its .wandb file framed as wandb writes it, the records built with lrdiag's own classes."""
    from lrdiag.ingest.wandb_local import _record_class

    Record = _record_class()
    records = [Record(run={"run_id": "abc", "project": "cold", "display_name": "small"}).SerializeToString()]
    for time, loss, step in loss_points():
        items = [{"key": "train/loss", "value_json": repr(loss)}, {"key": "_step", "value_json": str(step)},
                 {"key": "_timestamp", "value_json": repr(time / 1000)}]
        records.append(Record(history={"item": items}).SerializeToString())
    data = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
    for record in records:  # all FULL records, none crossing a 32 KiB block (padded with zeros as wandb does)
        if len(data) % 32768 + 7 + len(record) > 32768:
            data += bytes(32768 - len(data) % 32768)
        data += struct.pack("<IHB", zlib.crc32(record, zlib.crc32(b"\x01")), len(record), 1) + record
    folder = root / "wandb" / "offline-run-20260101_000000-abc"
    folder.mkdir(parents=True)
    (folder / "run-abc.wandb").write_bytes(data)
    return folder


@pytest.mark.parametrize("store", ["mlflow file store", "mlflow.db", "wandb"])
def test_analyze_of_a_small_mlflow_or_wandb_run_imports_no_pandas(store, tmp_path):
    """Small MLflow metric files are split by numpy (mlflow_files.SMALL_BYTES, PLAIN_BUDGET), SQLite rows and W&B
    keys are grouped with a dict and numpy: pandas' import would cost more than the whole analysis (0.46-0.6 s
    of CPU against 0.23 s). A W&B run needs protobuf for its records."""
    where, reader = {"mlflow file store": (mlflow_file_run, "mlflow_files"),
                     "mlflow.db": (mlflow_database, "mlflow_sqlite"), "wandb": (wandb_run, "wandb_local")}[store]
    from lrdiag.ingest.discover import find_runs
    from lrdiag.ingest.runs import read_run

    folder = where(tmp_path)
    [spec] = find_runs([str(folder)])
    run = read_run(spec)
    assert spec.name == "cold/small" and run.problems == [] and len(run.series["train/loss"]) == 300
    modules = imported("analyze", str(folder))
    assert f"lrdiag.ingest.{reader}" in modules and "lrdiag.detect.base" in modules  # read, then analyzed
    allowed = ("google.protobuf",) if store == "wandb" else ()
    assert heavy(modules, tuple(name for name in NOT_FOR_EVENTS if name not in allowed)) == []


@pytest.mark.parametrize("run", ["mlflow/BozzoloLu__GAN/mlruns/1/07cd61a82ecc46bb9b61d1142c15ea42",
                                 "mlflow/KhuzaimahAziz__thesis_seismology/mlruns.db",
                                 "wandb/A-Ijishakin__beta-tcvae/wandb/run-20240515_162319-ufljc7ut"])
def test_analyze_of_a_small_real_mlflow_or_wandb_run_imports_no_pandas(run):
    if not (REAL / run).exists():
        pytest.skip(f"{REAL / run} is absent")
    modules = imported("analyze", str(REAL / run))
    assert heavy(modules, tuple(name for name in NOT_FOR_EVENTS if name != "google.protobuf")) == []


def test_the_gates_smoothing_without_scipy_is_scipys_mirror_median_filter_exactly():
    """gate.baseline smooths short curves with numpy (robust.median_filter), long ones with scipy: gates and saved
    baselines must not change with the path taken."""
    from scipy.ndimage import median_filter as scipy_median_filter

    from lrdiag.gate.baseline import smoothed, window
    from lrdiag.series.model import Series

    rng = np.random.default_rng(0)
    for points in (0, 1, 2, 3, 49, 50, 150, 151, 1000, 5049, 19_999):
        values = np.round(rng.standard_normal(points), 1)  # ties, as logged losses have
        steps, curve, size = smoothed(Series("loss", np.arange(points, dtype=np.int64), values))
        assert size == window(points)
        expected = scipy_median_filter(values, size=size, mode="mirror") if points else values
        np.testing.assert_array_equal(curve, expected)
