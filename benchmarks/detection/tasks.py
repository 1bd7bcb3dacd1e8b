"""Data, models, optimizers, schedules and step events of the benchmark's runs.

The data and the models come from sample_logs/make_samples.py (two of its own added here: a
linear classifier and a linear regression, the well-conditioned problems where heavy momentum
rings). Everything is generated from the run's seed; nothing is downloaded.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sample_logs"))

import make_samples as ms  # noqa: E402

FAMILIES = ("mlp", "cnn", "lstm", "transformer", "regression", "logistic", "linreg")
CLASSIFIERS = {"mlp", "cnn", "logistic"}  # these log an accuracy too
FLOAT_INPUTS = {"mlp", "cnn", "lstm", "regression", "logistic", "linreg"}
RELU_FAMILIES = {"mlp", "cnn", "regression"}
CLASSES = {"mlp": 5, "cnn": 4, "logistic": 5}
# An ordinary LR per optimizer and family, what a tutorial would use (bench_precision.py's table
# plus the two linear models).
ORDINARY_LR = {
    "sgd": {"mlp": 0.05, "cnn": 0.05, "lstm": 0.3, "transformer": 0.3, "regression": 0.05, "logistic": 0.1, "linreg": 0.05},
    "momentum": {"mlp": 0.01, "cnn": 0.01, "lstm": 0.03, "transformer": 0.03, "regression": 0.01, "logistic": 0.02,
                 "linreg": 0.01},
    "adam": {"mlp": 1e-3, "cnn": 1e-3, "lstm": 3e-3, "transformer": 3e-3, "regression": 1e-3, "logistic": 3e-3,
             "linreg": 3e-3},
}
ORDINARY_LR["adamw"] = ORDINARY_LR["adam"]


def data(family: str, n_train: int, n_val: int, g: torch.Generator, label_noise: float = 0.0, wide: bool = False):
    """(train, val) as (x, y) tensors. label_noise flips that share of the classes (train and val)."""
    if family in ("mlp", "logistic"):
        dim = 2 if wide else 10
        x, y, centers = ms.blobs(n_train, 5, dim, 1.3 if wide else 2.5, g)
        xv, yv, _ = ms.blobs(n_val, 5, dim, 1.3 if wide else 2.5, g, centers=centers)
        train, val = (x, y), (xv, yv)
    elif family == "cnn":
        train, val = ms.shape_images(n_train, g), ms.shape_images(n_val, g)
    elif family == "lstm":
        train, val = ms.sine_windows(n_train, 20, g), ms.sine_windows(n_val, 20, g)
    elif family == "regression":
        x, y, teacher = ms.teacher_regression(n_train, 8, g)
        xv, yv, _ = ms.teacher_regression(n_val, 8, g, teacher=teacher)
        train, val = (x, y), (xv, yv)
    elif family == "linreg":
        w = torch.randn(10, 1, generator=g)
        x, xv = torch.randn(n_train, 10, generator=g), torch.randn(n_val, 10, generator=g)
        train = (x, x @ w + 0.3 * torch.randn(n_train, 1, generator=g))
        val = (xv, xv @ w + 0.3 * torch.randn(n_val, 1, generator=g))
    else:
        chain = ms.markov_chain(12, g)
        train = (ms.markov_tokens(n_train, 16, chain, g), torch.zeros(n_train))
        val = (ms.markov_tokens(n_val, 16, chain, g), torch.zeros(n_val))
    if label_noise and family in CLASSES:
        train, val = (_flip(part, label_noise, CLASSES[family], g) for part in (train, val))
    return train, val


def _flip(part, share, classes, g):
    x, y = part
    flipped = torch.rand(len(y), generator=g) < share
    return x, torch.where(flipped, torch.randint(0, classes, (len(y),), generator=g), y)


def model(family: str, big: bool = False) -> torch.nn.Module:
    width = 256 if big else 64
    return {"mlp": lambda: ms.mlp([10, width, width, 5]) if not big else ms.mlp([2, width, width, 5]),
            "cnn": lambda: ms.SmallCNN(),
            "lstm": lambda: ms.LSTMRegressor(32),
            "transformer": lambda: ms.TinyTransformerLM(12, 16),
            "regression": lambda: ms.mlp([8, width, width, 1]),
            "logistic": lambda: torch.nn.Linear(10, 5),
            "linreg": lambda: torch.nn.Linear(10, 1)}[family]()


def loss_fn(family: str):
    if family in CLASSES:
        return ms.ce_loss
    return ms.lm_loss if family == "transformer" else ms.mse_loss


def optimizer(name: str, params, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr)
    return torch.optim.AdamW(params, lr, weight_decay=0.01)


def scheduler(opt, name: str, steps: int, params: dict):
    """A torch.optim.lr_scheduler stepped once per optimizer step (plateau: once per evaluation)."""
    lr = opt.param_groups[0]["lr"]
    sched = torch.optim.lr_scheduler
    if name == "constant":
        return None
    if name == "step":
        return sched.MultiStepLR(opt, [steps // 3, 2 * steps // 3], 0.1)
    if name == "cosine":
        return sched.CosineAnnealingLR(opt, steps)
    if name == "warmup_cosine":
        return ms.warmup_cosine(opt, max(1, steps // 20), steps)
    if name == "linear":
        return ms.warmup_linear(opt, params.get("warmup", 0), steps)
    if name == "onecycle":
        return sched.OneCycleLR(opt, lr, total_steps=steps + 1)
    if name == "cyclic":
        return sched.CyclicLR(opt, base_lr=lr * params.get("base", 0.1), max_lr=lr,
                              step_size_up=params["period"] // 2, cycle_momentum=False)
    if name == "sgdr":
        return sched.CosineAnnealingWarmRestarts(opt, params["period"], eta_min=lr * 0.01)
    if name == "plateau":
        return sched.ReduceLROnPlateau(opt, factor=0.3, patience=1)
    if name == "early_decay":  # the LR falls to ~0 at `at` (a decay milestone set far too early)
        return sched.LambdaLR(opt, lambda s: 1.0 if s < params["at"] else 1e-5)
    if name == "ramp":  # the LR grows linearly from lr / 100 to `top` x lr over the run
        return sched.LambdaLR(opt, lambda s: 0.01 + (params["top"] - 0.01) * s / steps)
    raise ValueError(name)


def apply_event(event, xb, yb):
    """A step's batch after a corruption event ('corrupt', strength) or ('nan', _)."""
    kind, value = event
    if kind == "corrupt":
        if yb.dtype == torch.long:  # labels shuffled (a batch paired with the wrong labels)
            yb = torch.roll(yb, 1)
        else:
            yb = yb * value
        return xb * value, yb
    if kind == "nan":  # a record with a missing value that no one imputed
        xb = xb.clone()
        xb.view(len(xb), -1)[0, 0] = math.nan
    return xb, yb


def evaluate(net, family, val):
    return ms.evaluate(net, loss_fn(family), val)

