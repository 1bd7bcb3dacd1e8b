"""The replay harness: the control and every candidate x every seed, run side by side, scored and judged.

Replays are laid out as `<out>/<control|candidate>/seed<k>/` TensorBoard runs, so that
`lrdiag analyze <out>` reads them like any other logs.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from lrdiag.detect.base import clean
from lrdiag import safeio
from lrdiag.errors import LrdiagError
from lrdiag.recommend import executors, trainer, verdict
from lrdiag.recommend.candidates import Horizon, torch_available
from lrdiag.recommend.replay import CONTROL, Job, partial
from lrdiag.series.model import Run


@dataclass
class Plan:
    trainer: str
    steps: int | None = None  # None: the run's length
    seeds: int = 3
    device: str = "auto"
    executor: str = "local"
    ray_address: str | None = None
    out: str = "lrdiag-replays"
    timeout: float = 900.0
    start: int = 0  # --from-checkpoint
    jobs: int | None = None
    eval_every: int | None = None
    gpu_fraction: float | None = None


def resolve_device(choice: str) -> list[str]:
    """The devices replays go to: every visible GPU in turn for cuda, else the CPU."""
    import torch

    available = torch.cuda.is_available()
    if choice == "cuda" and not available:
        raise LrdiagError("--device cuda: torch sees no CUDA device here (torch "
                          f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'})")
    if choice == "cpu" or not available:
        return ["cpu"]
    return [f"cuda:{index}" for index in range(torch.cuda.device_count())]


def replay(run: Run, horizon: Horizon, candidates: list, engine, plan: Plan, progress=None) -> dict:
    """Replay and judge; fills each candidate's `confirmed` and `replay`, returns the run's replay summary."""
    if not torch_available():
        raise LrdiagError("replays need torch: pip install 'lrdiag[replay]'")
    spec = trainer.resolve(plan.trainer)
    trainer.load(spec)  # a trainer that does not import stops here, with one line
    lr = run.primary("lr")
    if lr is None:
        raise LrdiagError(f"{run.name}: logs no learning rate, so its schedule (the control) cannot be replayed; "
                          "log it, or name it with --role lr=TAG")
    lr_steps, lr_values = clean(lr)
    if plan.start >= horizon.total:
        raise LrdiagError(f"--from-checkpoint {plan.start}: the run has only {horizon.total} steps")
    available = horizon.total - plan.start
    steps = min(plan.steps or available, available)
    notes = [] if not plan.steps or plan.steps <= available else [
        f"--steps {plan.steps} cut to {steps}: the candidates' schedules end with the run, at step {horizon.last}"]
    if plan.executor == "ray" and plan.device == "auto":
        devices = _ray_devices(plan)
    else:
        devices = resolve_device(plan.device)
    eval_every = plan.eval_every if plan.eval_every is not None else max(1, steps // 12)
    # Old event files would merge into the new runs: lrdiag clears what it wrote there before, and only that.
    out = safeio.claim_folder(plan.out, "--out")
    labels = [(CONTROL, None)] + [(c.name, c.code) for c in candidates]
    jobs = []
    for label, code in labels:
        for seed in range(plan.seeds):
            logdir = out / label / f"seed{seed}"
            if os.path.lexists(logdir) or os.path.lexists(partial(str(logdir))):
                raise LrdiagError(f"--out {out}: {logdir} holds files that lrdiag did not write; move them, or name "
                                  "a new or empty folder")
            jobs.append(Job(label, code, seed, steps, spec, devices[len(jobs) % len(devices)], str(logdir),
                            first_step=horizon.first, start=plan.start,
                            control_lr=(lr_steps.tolist(), lr_values.tolist()) if code is None else None,
                            eval_every=eval_every))
    concurrency = plan.jobs or (_default_concurrency(devices) if plan.executor == "local" else None)
    began = time.perf_counter()
    try:
        with executors.GpuMonitor() if devices[0].startswith("cuda") else contextlib.nullcontext() as monitor:
            outcomes = executors.run_jobs(jobs, plan.executor, concurrency, plan.timeout, plan.ray_address,
                                          plan.gpu_fraction, on_done=progress)
    finally:  # interrupted too: what the replays wrote is listed, so that the next run may clear it
        safeio.record_folder(out, _written(out, jobs), "--out")
    wall = time.perf_counter() - began
    scored = [verdict.score(outcome, engine) for outcome in outcomes]
    control = verdict.judge(candidates, scored)
    failed = _no_verdict(outcomes)
    seconds = [o["seconds"] for o in outcomes if o["status"] == "ok" and o["seconds"]]
    return {"steps": steps, "seeds": plan.seeds, "start": horizon.first + plan.start, "device": devices[0] if len(devices) == 1
            else f"{len(devices)} GPUs", "executor": plan.executor, "concurrency": concurrency, "replays": len(jobs),
            "wall_seconds": wall, "replay_seconds_median": statistics.median(seconds) if seconds else None,
            "gpu": monitor.summary() if monitor else None, "control": control, "out": str(out), "notes": notes,
            "ranking": [c.name for c in candidates], "failed": failed}


def _no_verdict(outcomes: list[dict]) -> str | None:
    """Why the replays give no verdict: the control crashed or timed out in a seed (nothing to compare
    with), or every candidate did; None when they can be judged. A replay whose loss went NaN ran:
    that is a result, not a failure."""
    broken = [o for o in outcomes if o["status"] in ("failed", "timeout")]
    control = [o for o in broken if o["label"] == CONTROL]
    if control:
        return f"the control (the logged schedule) failed in seed {control[0]['seed']}: {control[0]['reason']}"
    labels = {o["label"] for o in outcomes if o["label"] != CONTROL}
    if labels and labels <= {o["label"] for o in broken}:
        first = broken[0]
        return f"every candidate's replay failed; {first['label']} seed {first['seed']}: {first['reason']}"
    return None


def _written(out: Path, jobs: list) -> list[Path]:
    """The files the replays wrote: each finished log folder, and a killed replay's partial one moved into place."""
    files = []
    for job in jobs:
        logdir, unfinished = Path(job.logdir), Path(partial(job.logdir))
        if unfinished.is_dir() and not logdir.exists():
            os.replace(unfinished, logdir)
        files += [path for folder in (logdir, unfinished) if folder.is_dir() and not folder.is_symlink()
                  for path in folder.rglob("*") if path.is_file() and not path.is_symlink()]
    return files


def _default_concurrency(devices: list[str]) -> int:
    cores = os.cpu_count() or 1
    # Each replay process keeps one core busy feeding its GPU: as many at once as cores, shared out.
    return cores if devices[0] == "cpu" else max(len(devices), cores)


def _ray_devices(plan: Plan) -> list[str]:
    """--device auto on Ray: CUDA when the cluster has GPUs, whatever this driver machine has."""
    if not plan.ray_address:
        return resolve_device("auto")[:1]
    from lrdiag.cluster import connected

    with connected(plan.ray_address, option="--ray-address") as ray:  # the executor connects again later
        return ["cuda"] if ray.cluster_resources().get("GPU", 0) > 0 else ["cpu"]
