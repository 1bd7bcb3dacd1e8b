"""Where replays run: `local` worker processes, or `ray` tasks on a cluster; each killed at its timeout.

Both keep at most `concurrency` replays running and start the next as one ends, so that a
replay's clock starts when it does. Local replays are one process each, forked from a server
that has imported torch once (a fresh interpreter costs seconds; a fork, milliseconds), and
that never touched CUDA, so each replay opens its own CUDA context and several share a GPU.
A Ray replay writes its TensorBoard files on whichever node runs it and sends them back as bytes.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from multiprocessing.connection import wait
from pathlib import Path

from lrdiag import safeio
from lrdiag.recommend import replay

EXECUTORS = ("local", "ray")
_POLL = 0.2  # seconds between looks at running replays


def run_jobs(jobs: list, executor: str = "local", concurrency: int | None = None, timeout: float = 900.0,
             ray_address: str | None = None, gpu_fraction: float | None = None, on_done=None) -> list[dict]:
    """Every job's outcome, in the order of `jobs`."""
    if executor == "ray":
        return _run_ray(jobs, concurrency, timeout, ray_address, gpu_fraction, on_done)
    return _run_local(jobs, concurrency or os.cpu_count() or 1, timeout, on_done)


def _child(job, connection) -> None:
    connection.send(replay.run(job))
    connection.close()
    # Everything is written and sent: skip the interpreter's teardown of torch, half a second.
    os._exit(0)


def _run_local(jobs: list, concurrency: int, timeout: float, on_done) -> list[dict]:
    context = multiprocessing.get_context("forkserver")
    # torch._dynamo too: the first optimizer a process builds imports it, 2 s of every replay.
    # __main__ too: else every child imports the parent's main script again (as __mp_main__).
    context.set_forkserver_preload(["__main__", "torch", "torch._dynamo", "torch.utils.tensorboard",
                                    "lrdiag.recommend.replay", "lrdiag.recommend.candidates", "lrdiag.recommend.trainer"])
    pending = list(enumerate(jobs))[::-1]
    running: dict = {}  # connection -> (process, index, job, started)
    outcomes: dict[int, dict] = {}

    def finish(index: int, result: dict) -> None:
        outcomes[index] = result
        if on_done:
            on_done(result)

    try:
        while pending or running:
            while pending and len(running) < concurrency:
                index, job = pending.pop()
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_child, args=(job, sender), daemon=True)
                process.start()
                sender.close()
                running[receiver] = (process, index, job, time.monotonic())
            for receiver in wait(list(running), timeout=_POLL):
                process, index, job, started = running.pop(receiver)
                try:
                    result = receiver.recv()
                except EOFError:  # the process died before reporting: a segfault, the OOM killer
                    process.join()
                    result = replay.outcome(job, "failed", f"the replay process died (exit code {process.exitcode})",
                                            seconds=time.monotonic() - started)
                process.join()
                receiver.close()
                finish(index, result)
            now = time.monotonic()
            for receiver, (process, index, job, started) in list(running.items()):
                if now - started > timeout:
                    process.kill()
                    process.join()
                    receiver.close()
                    del running[receiver]
                    finish(index, replay.outcome(job, "timeout", f"timed out after {timeout:g} s", seconds=now - started))
    finally:
        for process, *_ in running.values():  # interrupted: leave no replay behind
            process.kill()
    return [outcomes[index] for index in range(len(jobs))]


def _ray_replay(job) -> tuple[dict, dict[str, bytes]]:
    """A Ray task: replay into a scratch folder on the worker, return the outcome and the files."""
    scratch = tempfile.mkdtemp(prefix="lrdiag-replay-")
    try:
        result = replay.run(replace(job, logdir=scratch))
        files = {str(path.relative_to(scratch)): path.read_bytes() for path in Path(scratch).rglob("*") if path.is_file()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result["logdir"] = job.logdir
    result["node"] = os.uname().nodename
    return result, files


def _run_ray(jobs: list, concurrency: int | None, timeout: float, address: str | None,
             gpu_fraction: float | None, on_done) -> list[dict]:
    from lrdiag.cluster import connected

    with connected(address, option="--ray-address") as ray:
        return _ray_replays(ray, jobs, concurrency, timeout, gpu_fraction, on_done)


def _ray_replays(ray, jobs: list, concurrency: int | None, timeout: float, gpu_fraction: float | None,
                 on_done) -> list[dict]:
    resources = ray.cluster_resources()
    on_gpu = any(job.device.startswith("cuda") for job in jobs)
    if on_gpu:
        fraction = gpu_fraction or 1 / 8
        slots = int(resources.get("GPU", 0) / fraction) or 1
        task = ray.remote(num_gpus=fraction, num_cpus=1)(_ray_replay)
    else:
        slots = int(resources.get("CPU", 1))
        task = ray.remote(num_gpus=0, num_cpus=1)(_ray_replay)
    concurrency = concurrency or max(1, min(slots, int(resources.get("CPU", 1))))
    pending = list(enumerate(jobs))[::-1]
    running: dict = {}  # ref -> (index, job, started)
    outcomes: dict[int, dict] = {}
    while pending or running:
        while pending and len(running) < concurrency:
            index, job = pending.pop()
            # On Ray the replay gets the GPU Ray assigned to it: CUDA_VISIBLE_DEVICES names it.
            remote_job = replace(job, device="cuda" if job.device.startswith("cuda") else job.device)
            running[task.remote(remote_job)] = (index, job, time.monotonic())
        ready, _ = ray.wait(list(running), num_returns=1, timeout=_POLL)
        for ref in ready:
            index, job, started = running.pop(ref)
            try:
                result, files = ray.get(ref)
                for name, data in files.items():
                    target = Path(job.logdir) / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    safeio.write_bytes(target, data, what="replay log")
            except ray.exceptions.RayError as error:
                result = replay.outcome(job, "failed", f"the Ray task failed: {type(error).__name__}: "
                                                       f"{str(error).splitlines()[0] if str(error) else ''}",
                                        seconds=time.monotonic() - started)
            outcomes[index] = result
            if on_done:
                on_done(result)
        now = time.monotonic()
        for ref, (index, job, started) in list(running.items()):
            if now - started > timeout:
                ray.cancel(ref, force=True)
                del running[ref]
                outcomes[index] = replay.outcome(job, "timeout", f"timed out after {timeout:g} s",
                                                 seconds=now - started)
                if on_done:
                    on_done(outcomes[index])
    return [outcomes[index] for index in range(len(jobs))]


class GpuMonitor:
    """Samples GPU utilisation while replays run (nvidia-smi, else torch.cuda.utilization via NVML)."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.samples: list[float] = []
        self.memory_mib: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "GpuMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample(self) -> tuple[float, float | None] | None:
        if shutil.which("nvidia-smi"):
            try:
                text = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                       "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                      timeout=5).stdout
                rows = [[float(cell) for cell in line.split(",")] for line in text.strip().splitlines() if line]
                if rows:
                    return sum(r[0] for r in rows) / len(rows), sum(r[1] for r in rows)
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
        try:
            import torch

            return float(torch.cuda.utilization()), None
        except Exception:  # noqa: BLE001 - no NVML: no figure, never an error
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            sample = self._sample()
            if sample is None:
                return
            self.samples.append(sample[0])
            self.memory_mib.append(sample[1])
            self._stop.wait(self.interval)

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        memory = [value for value in self.memory_mib if value is not None]
        return {"utilization_mean_pct": sum(self.samples) / len(self.samples),
                "utilization_max_pct": max(self.samples), "memory_max_mib": max(memory) if memory else None,
                "samples": len(self.samples)}
