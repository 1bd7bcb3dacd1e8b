"""A tiny MLP trained by Adam at a high constant LR with no warmup: its loss spikes in the first steps.

At step 0 Adam's update moves every weight by about the full LR whatever its gradient (its
second-moment estimate is one gradient squared), so an LR of 0.15 throws the network far off in
its first steps; the loss jumps several-fold before it settles. A warmup lets the moment
estimates form first. The task: 4 overlapping Gaussian classes in 16 dimensions, sampled here
afresh for every batch (so the model cannot overfit, and the held-out loss measures the fit);
the task is the same for every seed, the seed sets the initialisation and the batches.

    python -m lrdiag.examples.spiky_mlp --out sample_logs/example_spiky   # the sample log
    lrdiag recommend sample_logs/example_spiky --trainer lrdiag.examples.spiky_mlp:trainer
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from lrdiag.recommend.trainer import Setup

LR = 0.15  # Adam at 0.15 with no warmup: spikes at steps 1-2 in most seeds
STEPS = 300
BATCH = 256
HIDDEN = 128
DIM, CLASSES = 16, 4
EVAL_EVERY = 25
TB_FILE_NAME = "events.out.tfevents.1735689600.example"  # fixed: the writer's own embeds time and host


def make_data(count: int, generator: torch.Generator, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    return centers[labels] + torch.randn(count, DIM, generator=generator), labels


def task() -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The class centres (close enough that classes overlap) and a held-out set, the same for every seed."""
    generator = torch.Generator().manual_seed(1234)
    centers = 0.5 * torch.randn(CLASSES, DIM, generator=generator)
    return centers, make_data(2048, generator, centers)


def batches(centers: torch.Tensor, seed: int, device: str):
    """Fresh minibatches of the task, forever, the same ones for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield tuple(t.to(device) for t in make_data(BATCH, generator, centers))


def model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(DIM, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, HIDDEN),
                               torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES))


def loss(net: torch.nn.Module, batch) -> torch.Tensor:
    inputs, labels = batch
    return F.cross_entropy(net(inputs), labels)


def trainer(seed: int, device: str) -> Setup:
    """The trainer protocol's function form (lrdiag has already seeded torch with `seed`)."""
    centers, (held_x, held_y) = task()
    held_x, held_y = held_x.to(device), held_y.to(device)
    net = model().to(device)

    def evaluate(net: torch.nn.Module) -> float:
        return float(F.cross_entropy(net(held_x), held_y))

    def load_checkpoint(step: int, net: torch.nn.Module, optimizer) -> None:
        # This example keeps no checkpoint files: the original run is deterministic, so its
        # state at `step` is re-created by training that run (constant LR) up to there.
        for group in optimizer.param_groups:
            group["lr"] = LR
        original = batches(centers, seed, device)
        for _ in range(step):
            optimizer.zero_grad(set_to_none=True)
            loss(net, next(original)).backward()
            optimizer.step()

    return Setup(model=net, batches=batches(centers, seed, device), loss=loss,
                 optimizer=lambda params: torch.optim.Adam(params, lr=LR), evaluate=evaluate,
                 load_checkpoint=load_checkpoint)


def write_sample(out: Path, seed: int = 0, steps: int = STEPS) -> None:
    """The sample log: this trainer's own training at the constant LR, as TensorBoard events."""
    from lrdiag.recommend.replay import Job, run

    if out.exists():
        shutil.rmtree(out)
    constant = ("from torch.optim.lr_scheduler import LambdaLR\n"
                f"for group in opt.param_groups:\n    group[\"lr\"] = {LR!r}\n"
                "scheduler = LambdaLR(opt, lambda step: 1.0)\n")
    result = run(Job("original", constant, seed, steps, f"{__name__}:trainer", "cpu", str(out), eval_every=EVAL_EVERY))
    if result["status"] != "ok":
        raise SystemExit(f"training failed: {result['reason']}")
    written = sorted(out.glob("events.out.tfevents.*"))
    written[0].rename(out / TB_FILE_NAME)
    print(f"wrote {out / TB_FILE_NAME}: {steps} steps, seed {seed}, held-out loss {result['horizon_loss']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sample_logs/example_spiky"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=STEPS)
    arguments = parser.parse_args()
    write_sample(arguments.out, arguments.seed, arguments.steps)


if __name__ == "__main__":
    main()
