"""Cold start: `lrdiag --version` imports no heavy library, and `lrdiag analyze` imports only what its inputs need.

Each command runs in a fresh interpreter under `python -X importtime`, which names every module imported; the
test fails on the modules, never on a time (benchmarks/bench_coldstart.py prints the CPU seconds).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_logs"
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
