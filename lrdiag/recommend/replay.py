"""One replay: a trainer run for a few steps under one schedule and one seed, logged as TensorBoard events.

A replay runs in a worker process of its own (executors.py), so that a hung one can be killed and
a crashed one takes nothing else down; it never raises, it reports. Tags: `train/loss` and `lr`
every step, `val/loss` every `eval_every` steps when the trainer can evaluate, so that
`lrdiag analyze` and the rules engine read a replay as they read any run.
"""

from __future__ import annotations

import math
import os
import random
import time
import traceback
import warnings
from dataclasses import dataclass

import numpy as np

CONTROL = "control"


@dataclass
class Job:
    label: str  # "control" or a candidate's name
    code: str | None  # the candidate's scheduler code; None for the control
    seed: int
    steps: int
    trainer: str  # the --trainer spec, file paths absolute
    device: str
    logdir: str
    first_step: int = 0  # the run's first step: the schedule's step 0
    start: int = 0  # schedule step to start at (--from-checkpoint)
    control_lr: tuple[list[int], list[float]] | None = None  # the logged LR that the control replays
    eval_every: int = 0  # 0: evaluate at the horizon only


def outcome(job: Job, status: str, reason: str = "", **figures) -> dict:
    """What a replay reports: status is ok, nan, failed or timeout."""
    return {"label": job.label, "seed": job.seed, "status": status, "reason": reason, "logdir": job.logdir,
            "horizon_loss": None, "steps_done": 0, "seconds": None, **figures}


def partial(logdir: str) -> str:
    """Where a replay logs until it ends: moved to `logdir` in one rename, so that a log folder is whole."""
    return logdir.rstrip("/\\") + ".partial"


def control_scheduler(opt, steps: list[int], values: list[float], first_step: int):
    """The original schedule from its log: the logged LR at every step, interpolated between points."""
    from torch.optim.lr_scheduler import LambdaLR

    for group in opt.param_groups:
        group["lr"] = 1.0  # LambdaLR multiplies this by the lambda: the logged LR itself
    logged_steps, logged_values = np.asarray(steps, float), np.asarray(values, float)
    return LambdaLR(opt, lambda step: float(np.interp(first_step + step, logged_steps, logged_values)))


def run(job: Job) -> dict:
    """Train, log, and report; every failure becomes the outcome's reason."""
    began = time.perf_counter()
    try:
        return _run(job, began)
    except BaseException as error:  # noqa: BLE001 - a replay's crash is its result, never the harness's
        where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        at = f" (at {os.path.basename(where.filename)}:{where.lineno})" if where else ""
        return outcome(job, "failed", f"crashed: {type(error).__name__}: {error}{at}".replace("\n", " "),
                       seconds=time.perf_counter() - began)


def _run(job: Job, began: float) -> dict:
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from lrdiag.recommend.candidates import build_scheduler
    from lrdiag.recommend.trainer import load

    torch.set_num_threads(1)  # concurrency comes from running replays side by side
    random.seed(job.seed)
    np.random.seed(job.seed)
    torch.manual_seed(job.seed)
    trainer = load(job.trainer)()
    opt = trainer.setup(job.seed, job.device)
    if job.start:
        loader = getattr(trainer, "load_checkpoint", None)
        if loader is None:
            raise TypeError("--from-checkpoint needs the trainer to define load_checkpoint")
        loader(job.start)
    for group in opt.param_groups:
        # A restored optimizer keeps its old scheduler's base LR, which a new scheduler would adopt.
        group.pop("initial_lr", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's deprecated step(0), stepping before the optimizer
        if job.code is None:
            scheduler = control_scheduler(opt, *job.control_lr, job.first_step)
        else:
            scheduler = build_scheduler(job.code, opt)
        plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if job.start and not plateau:  # the schedule resumes at the checkpoint's step; a plateau one has no clock
            for _ in range(job.start):
                scheduler.step()
    evaluate = getattr(trainer, "evaluate", None)
    setup_seconds = time.perf_counter() - began
    writing = partial(job.logdir)
    os.makedirs(writing, exist_ok=True)
    writer = SummaryWriter(writing)
    losses = np.full(job.steps, np.nan)
    status, reason, done = "ok", "", 0
    try:
        for index in range(job.steps):
            step = job.first_step + job.start + index
            lr = opt.param_groups[0]["lr"]
            loss = float(trainer.step(job.start + index))
            writer.add_scalar("lr", lr, step)
            writer.add_scalar("train/loss", loss, step)
            losses[index], done = loss, index + 1
            if not math.isfinite(loss):
                status, reason = "nan", f"the training loss became {loss} at step {step}"
                break
            if index < job.steps - 1:  # OneCycleLR refuses a step past its total
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    scheduler.step(loss) if plateau else scheduler.step()
            if evaluate and job.eval_every and (index + 1) % job.eval_every == 0 and index < job.steps - 1:
                writer.add_scalar("val/loss", float(evaluate()), step)
        horizon = None
        if status == "ok":
            if evaluate:
                horizon = float(evaluate())
                writer.add_scalar("val/loss", horizon, job.first_step + job.start + job.steps - 1)
            else:
                horizon = float(np.median(losses[-max(1, job.steps // 10):]))
            if not math.isfinite(horizon):
                status, reason = "nan", f"the horizon loss is {horizon}"
    finally:
        writer.close()
        os.replace(writing, job.logdir)
    if job.device.startswith("cuda"):
        torch.cuda.synchronize()
    return outcome(job, status, reason, horizon_loss=horizon if status == "ok" else None, steps_done=done,
                   seconds=time.perf_counter() - began, setup_seconds=setup_seconds)
