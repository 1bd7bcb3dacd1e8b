"""Replays: a fix confirmed on the example trainer on the CPU, and failures that stay one replay's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lrdiag.cli import cli
from lrdiag.errors import LrdiagError
from lrdiag.ingest.discover import find_runs
from lrdiag.ingest.runs import read_run
from lrdiag.recommend import harness
from lrdiag.recommend.candidates import Candidate, horizon_of
from lrdiag.detect.engine import Engine
from lrdiag.detect.rulefile import builtin_rules_dir, load_rules
from lrdiag.series.model import Run, Series
from lrdiag.series.roles import assign_roles

EXAMPLE = Path(__file__).parent.parent / "sample_logs" / "example_spiky"
EXAMPLE_TRAINER = "lrdiag.examples.spiky_mlp:trainer"

# A class-form trainer in a file of its own: least squares by SGD. It hangs when its LR is
# HANG_LR, which only the hung candidate sets; an LR of 1e4 makes it diverge to inf/NaN.
TRAINER_FILE = textwrap.dedent('''
    import time
    import torch

    HANG_LR = 0.0123

    class LeastSquares:
        def setup(self, seed, device):
            data = torch.Generator().manual_seed(0)
            self.inputs = torch.randn(128, 8, generator=data)
            self.targets = self.inputs @ torch.randn(8, 1, generator=data) + 0.1 * torch.randn(128, 1, generator=data)
            self.model = torch.nn.Linear(8, 1)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
            return self.optimizer

        def step(self, step):
            if self.optimizer.param_groups[0]["lr"] == HANG_LR:
                time.sleep(3600)
            loss = ((self.model(self.inputs) - self.targets) ** 2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            return float(loss)
''')


def _constant_code(lr: float) -> str:
    return ("from torch.optim.lr_scheduler import LambdaLR\n"
            f"for group in opt.param_groups:\n    group[\"lr\"] = {lr!r}\n"
            "scheduler = LambdaLR(opt, lambda step: 1.0)\n")


@pytest.fixture(scope="module")
def engine():
    return Engine(load_rules([builtin_rules_dir()]))


@pytest.fixture()
def least_squares(tmp_path) -> tuple[Run, str]:
    path = tmp_path / "least_squares.py"
    path.write_text(TRAINER_FILE)
    steps = np.arange(40)
    series = {"train/loss": Series("train/loss", steps, np.exp(-0.05 * steps)),
              "lr": Series("lr", steps, np.full(40, 0.01))}
    assign_roles(series)
    return Run("least-squares", "test", [], series), f"{path}:LeastSquares"


def test_a_replay_confirms_a_fix_on_the_example_on_the_cpu(tmp_path, engine):
    out = tmp_path / "replays"
    began = time.monotonic()
    result = CliRunner().invoke(cli, ["recommend", str(EXAMPLE), "--trainer", EXAMPLE_TRAINER, "--steps", "100",
                                      "--seeds", "2", "--device", "cpu", "--out", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - began < 60
    [entry] = json.loads(result.stdout)["runs"]
    replay = entry["replay"]
    assert replay["control"]["findings"].get("LRD101") == 2  # the control reproduces the spikes in both seeds
    confirmed = [c for c in entry["candidates"] if c["confirmed"]]
    assert confirmed, [(c["name"], c["replay"]["reason"]) for c in entry["candidates"]]
    assert entry["candidates"][0]["confirmed"]  # confirmed ones rank first
    for candidate in confirmed:
        for seed in (0, 1):
            logdir = out / candidate["name"] / f"seed{seed}"
            # The replay's own log, read back as any run, holds none of what the candidate addresses.
            run = read_run(find_runs([str(logdir)])[0])
            assert run.series["train/loss"].steps.size == 100
            assert not {f.rule for f in engine.run(run)} & set(candidate["addresses"])
        seeds = candidate["replay"]["seeds"]
        assert np.mean([s["horizon_loss"] - s["control_loss"] for s in seeds]) <= replay["control"]["spread"]
    lower = next(c for c in entry["candidates"] if c["name"] == "lower-peak")
    assert lower["confirmed"] is False and "LRD101" in lower["replay"]["reason"]  # half the LR still spikes


def test_a_replay_logs_the_candidates_own_schedule(tmp_path, engine):
    run = read_run(find_runs([str(EXAMPLE)])[0])
    horizon = horizon_of(run)
    code = ("from torch.optim.lr_scheduler import LinearLR\nfor group in opt.param_groups:\n    group[\"lr\"] = 0.01\n"
            "scheduler = LinearLR(opt, start_factor=0.1, total_iters=30)\n")
    candidate = Candidate("linear", "", {}, code, ["LRD101"])
    harness.replay(run, horizon, [candidate], engine,
                   harness.Plan(EXAMPLE_TRAINER, steps=20, seeds=1, device="cpu", out=str(tmp_path), start=10))
    replayed = read_run(find_runs([str(tmp_path / "linear" / "seed0")])[0])
    lr = replayed.series["lr"]
    assert lr.steps.tolist() == list(range(10, 30))  # --from-checkpoint 10: steps 10..29 of the run
    np.testing.assert_allclose(lr.values, 0.01 * (0.1 + 0.9 * np.minimum(np.arange(10, 30), 30) / 30), rtol=1e-6)
    control = read_run(find_runs([str(tmp_path / "control" / "seed0")])[0])
    np.testing.assert_allclose(control.series["lr"].values, 0.15, rtol=1e-6)  # the logged constant LR


def test_a_trainer_that_does_not_import_exits_2_with_one_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_for_lrdiag\n")
    for spec, says in (("no_such_module_for_lrdiag:trainer", "No module named 'no_such_module_for_lrdiag'"),
                       (f"{broken}:trainer", "No module named 'no_such_module_for_lrdiag'"),
                       ("lrdiag.examples.spiky_mlp:no_such_function", "has no attribute 'no_such_function'")):
        done = subprocess.run([sys.executable, "-m", "lrdiag", "recommend", str(EXAMPLE), "--trainer", spec,
                               "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lrdiag: error: --trainer") and says in lines[0], done.stderr
        assert "Traceback" not in done.stderr


def test_a_candidate_that_goes_nan_is_marked_failed_and_the_others_go_on(tmp_path, engine, least_squares):
    run, spec = least_squares
    diverging = Candidate("diverging", "", {}, _constant_code(1e4), ["LRD101"])
    gentle = Candidate("gentle", "", {}, _constant_code(0.005), ["LRD101"])
    summary = harness.replay(run, horizon_of(run), [diverging, gentle], engine,
                             harness.Plan(spec, steps=40, seeds=2, device="cpu", out=str(tmp_path / "replays")))
    assert diverging.replay["status"] == "failed" and diverging.confirmed is False
    assert "the training loss became" in diverging.replay["reason"]
    assert gentle.replay["status"] != "failed"
    assert all(s["status"] == "ok" and s["horizon_loss"] is not None for s in gentle.replay["seeds"])
    assert summary["ranking"][-1] == "diverging"


def test_a_hung_replay_times_out_and_the_others_go_on(tmp_path, engine, least_squares):
    run, spec = least_squares
    hung = Candidate("hung", "", {}, _constant_code(0.0123), ["LRD101"])
    gentle = Candidate("gentle", "", {}, _constant_code(0.005), ["LRD101"])
    began = time.monotonic()
    harness.replay(run, horizon_of(run), [hung, gentle], engine,
                   harness.Plan(spec, steps=40, seeds=1, device="cpu", out=str(tmp_path / "replays"), timeout=5))
    assert time.monotonic() - began < 40
    assert hung.replay["status"] == "failed" and "timed out after 5 s" in hung.replay["reason"]
    assert gentle.replay["seeds"][0]["status"] == "ok"


def test_a_replay_that_crashes_reports_why(tmp_path, engine, least_squares):
    run, spec = least_squares
    crashing = Candidate("crashing", "", {}, "scheduler = undefined_name\n", ["LRD101"])
    harness.replay(run, horizon_of(run), [crashing], engine,
                   harness.Plan(spec, steps=10, seeds=1, device="cpu", out=str(tmp_path / "replays")))
    assert crashing.replay["status"] == "failed"
    assert "NameError" in crashing.replay["reason"] and "undefined_name" in crashing.replay["reason"]


def test_a_run_without_a_logged_lr_cannot_be_replayed(tmp_path, engine, least_squares):
    run, spec = least_squares
    del run.series["lr"]
    with pytest.raises(LrdiagError, match="logs no learning rate"):
        harness.replay(run, horizon_of(run), [Candidate("x", "", {}, _constant_code(0.1), [])], engine,
                       harness.Plan(spec, steps=5, seeds=1, device="cpu", out=str(tmp_path / "replays")))


def test_gpu_utilisation_is_read_from_nvidia_smi(tmp_path, monkeypatch):
    from lrdiag.recommend.executors import GpuMonitor

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '37, 1024'\necho '41, 2048'\n")  # two GPUs, as nvidia-smi prints them
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with GpuMonitor(interval=0.05) as monitor:
        time.sleep(0.3)
    summary = monitor.summary()
    assert summary["utilization_mean_pct"] == 39.0 and summary["memory_max_mib"] == 3072.0


def test_function_trainer_goes_round_its_batches_again_and_names_an_exhausted_generator():
    import torch

    from lrdiag.recommend.trainer import FunctionTrainer, Setup

    seen = []

    def loss(model, batch):
        seen.append(batch)
        return model(torch.ones(1, 1)).sum()

    def make(batches):
        return lambda seed, device: Setup(model=torch.nn.Linear(1, 1), batches=batches, loss=loss,
                                          optimizer=lambda params: torch.optim.SGD(params, lr=0.1))

    listed = FunctionTrainer(make([0, 1, 2]))
    listed.setup(0, "cpu")
    for step in range(7):
        listed.step(step)
    assert seen == [0, 1, 2, 0, 1, 2, 0]  # a list, like a DataLoader, is iterated epoch after epoch
    once = FunctionTrainer(make(iter([5, 6])))
    once.setup(0, "cpu")
    once.step(0), once.step(1)
    with pytest.raises(ValueError, match="a generator can be iterated once only"):
        once.step(2)


def test_loop_changes_are_proposed_but_never_replayed_as_schedules(tmp_path):
    # A one-step bad batch under a calm LR is the data's: recommend proposes clipping and the batch
    # to inspect, changes to the training loop that the replay cannot apply. They must not be
    # replayed as schedules (each would fail, and with no schedule left the run had no verdict).
    bad_batch = Path(__file__).parents[1] / "sample_logs" / "tensorboard" / "mlp_sgd_bad_batch_spike"
    result = CliRunner().invoke(cli, ["recommend", str(bad_batch), "--trainer", EXAMPLE_TRAINER, "--steps", "20",
                                      "--seeds", "1", "--device", "cpu", "--out", str(tmp_path / "r"),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)["runs"]
    kinds = {c["kind"] for c in entry["candidates"]}
    assert kinds and "schedule" not in kinds
    assert "replay" not in entry and all("replay" not in c and c["confirmed"] is None for c in entry["candidates"])
    assert json.loads(result.stdout)["errors"] == []
