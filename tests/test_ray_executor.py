"""The Ray executor against a real local Ray instance on 127.0.0.1 (CPU tasks), not a mock."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from lrdiag.ingest.discover import find_runs  # noqa: E402
from lrdiag.ingest.runs import read_run  # noqa: E402
from lrdiag.recommend import executors, harness  # noqa: E402
from lrdiag.recommend.candidates import horizon_of, propose  # noqa: E402
from lrdiag.detect.engine import Engine  # noqa: E402
from lrdiag.detect.rulefile import builtin_rules_dir, load_rules  # noqa: E402
from lrdiag.recommend.replay import Job  # noqa: E402

EXAMPLE = Path(__file__).parent.parent / "sample_logs" / "example_spiky"
SLEEPER = textwrap.dedent('''
    import time
    import torch

    class Sleeper:
        def setup(self, seed, device):
            self.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            return self.optimizer

        def step(self, step):
            time.sleep(3600)
''')


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A Ray instance of this test module's own, on the loopback interface, torn down after it."""
    # Its workers inherit TMPDIR: the scratch folder of a replay killed at its timeout stays in
    # pytest's temporary folders, not in /tmp. Ray's own files keep their usual, short path
    # (its socket paths must stay under 107 characters).
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("ray-workers"))
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, configure_logging=False, _temp_dir="/tmp/ray")
        yield ray
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved


def test_ray_replays_confirm_like_local_ones_and_gather_their_logs(local_ray, tmp_path):
    assert ray.cluster_resources()["CPU"] == 2
    run = read_run(find_runs([str(EXAMPLE)])[0])
    engine = Engine(load_rules([builtin_rules_dir()]))
    candidates = [c for c in propose(run, engine.run(run)) if c.name in ("warmup-cosine", "lower-peak")]
    summary = harness.replay(run, horizon_of(run), candidates, engine,
                             harness.Plan("lrdiag.examples.spiky_mlp:trainer", steps=60, seeds=1, device="cpu",
                                          executor="ray", out=str(tmp_path)))
    assert summary["executor"] == "ray" and summary["replays"] == 3
    assert summary["control"]["statuses"] == ["ok"]
    for name in ("control", "warmup-cosine", "lower-peak"):
        # Written on the Ray worker, sent back as bytes, and read here as any TensorBoard run.
        replayed = read_run(find_runs([str(tmp_path / name / "seed0")])[0])
        assert replayed.series["train/loss"].steps.tolist() == list(range(60))
    assert summary["control"]["findings"].get("LRD101") == 1
    by_name = {c.name: c for c in candidates}
    assert by_name["warmup-cosine"].replay["status"] == "confirmed", by_name["warmup-cosine"].replay["reason"]
    assert by_name["lower-peak"].replay["status"] == "not confirmed"


def test_a_ray_replay_that_hangs_is_cancelled_at_its_timeout(local_ray, tmp_path):
    path = tmp_path / "sleeper.py"
    path.write_text(SLEEPER)
    jobs = [Job("sleeper", None, 0, 5, f"{path}:Sleeper", "cpu", str(tmp_path / "sleeper"), control_lr=([0], [0.1])),
            Job("control", None, 0, 20, "lrdiag.examples.spiky_mlp:trainer", "cpu", str(tmp_path / "control"),
                control_lr=([0, 19], [0.1, 0.1]))]
    hung, fine = executors.run_jobs(jobs, "ray", timeout=15)
    assert hung["status"] == "timeout" and "timed out after 15 s" in hung["reason"]
    assert fine["status"] == "ok" and np.isfinite(fine["horizon_loss"])
    assert any(Path(fine["logdir"]).glob("events.out.tfevents.*"))
