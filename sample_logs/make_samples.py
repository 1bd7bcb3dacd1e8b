"""Make the sample training logs in sample_logs/ by really training tiny PyTorch models.

Every run trains a small model (MLP, small CNN, LSTM, tiny transformer, tiny box detector) on
data generated here (two moons, gaussian blobs, a random teacher network, sine windows, a random
Markov "language", 12x12 and 16x16 shape images) on the CPU, and writes its log the way one real
tool writes it:

    tensorboard/<run>/events.out.tfevents.1735689600.sample   torch.utils.tensorboard.SummaryWriter
    lightning_csv/<run>/version_0/metrics.csv, hparams.yaml  Lightning CSVLogger (+LearningRateMonitor)
    keras_csv/<run>/training.log                             Keras CSVLogger
    trainer_state/<run>/trainer_state.json                   Hugging Face Trainer
    detectron2/<run>/metrics.json                            detectron2 JSONWriter

A pathology always comes from a real mechanism in the training (a corrupted batch, a one-step
LR spike, a cyclic LR with a huge amplitude, a step decay to ~0, dead ReLUs, a tiny noisy
training set, a far too high LR), never from numbers drawn into the log. manifest.json says,
for every run, what a diagnosis should find and where, in the x units of the file (the `step`
of TensorBoard, Lightning and Hugging Face, the Keras `epoch`, the detectron2 `iteration`).

    python sample_logs/make_samples.py                # every run, into sample_logs/
    python sample_logs/make_samples.py --only NAME    # one run (its folder name), manifest updated
    python sample_logs/make_samples.py --out /tmp/x   # somewhere else
    python sample_logs/make_samples.py --list         # the run names

Losses, learning rates and steps are deterministic (fixed seeds, one thread, deterministic
algorithms); wall times and runtimes are the real ones, so those bytes change on every run.
Needs torch and tensorboard only.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

# The TensorBoard event file gets this fixed name (the writer embeds time, host and pid).
TB_FILE_NAME = "events.out.tfevents.1735689600.sample"

# --------------------------------------------------------------------------------------------
# Data: all generated from a seed, nothing downloaded.
# --------------------------------------------------------------------------------------------


def two_moons(n, noise, g, flip=0.0):
    """Two interleaved half circles; `flip` of the labels are flipped (label noise)."""
    t = torch.rand(n, generator=g) * math.pi
    y = torch.randint(0, 2, (n,), generator=g)
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    x = torch.where(y[:, None] == 0, upper, lower) + noise * torch.randn(n, 2, generator=g)
    if flip:
        flipped = torch.rand(n, generator=g) < flip
        y = torch.where(flipped, 1 - y, y)
    return x, y


def blobs(n, k, dim, spread, g, probs=None, centers=None):
    """Gaussian blobs around k random centers; returns (x, y, centers)."""
    if centers is None:
        centers = 2.0 * torch.randn(k, dim, generator=g)
    p = torch.full((k,), 1.0 / k) if probs is None else torch.tensor(probs)
    y = torch.multinomial(p, n, replacement=True, generator=g)
    x = centers[y] + spread * torch.randn(n, dim, generator=g)
    return x, y, centers


def teacher_regression(n, din, g, noise=0.1, scale=1.0, teacher=None):
    """y = teacher(x) + noise for a fixed random tanh network; returns (x, y, teacher)."""
    if teacher is None:
        w1 = scale * torch.randn(din, 32, generator=g) / math.sqrt(din)
        w2 = torch.randn(32, 1, generator=g) / math.sqrt(32)
        teacher = (w1, w2)
    x = torch.randn(n, din, generator=g)
    y = torch.tanh(x @ teacher[0]) @ teacher[1] + noise * torch.randn(n, 1, generator=g)
    return x, y, teacher


def sine_windows(n, length, g, noise=0.05):
    """Windows of noisy sines with random frequency/phase/amplitude; target: the next value."""
    freq = 0.1 + 0.4 * torch.rand(n, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    amp = 0.5 + torch.rand(n, 1, generator=g)
    t = torch.arange(length + 1, dtype=torch.float32)[None, :]
    s = amp * torch.sin(freq * t + phase) + noise * torch.randn(n, length + 1, generator=g)
    return s[:, :length, None], s[:, length:]


def markov_chain(vocab, g):
    """A fixed random order-2 Markov chain: next-token probabilities for each (prev2, prev1)."""
    return torch.softmax(2.5 * torch.randn(vocab * vocab, vocab, generator=g), dim=1)


def markov_tokens(n, length, chain, g):
    """Sequences from `chain` (a tiny 'language' a bigram model cannot fully learn)."""
    vocab = chain.shape[1]
    seq = torch.empty(n, length, dtype=torch.long)
    seq[:, :2] = torch.randint(0, vocab, (n, 2), generator=g)
    for i in range(2, length):
        seq[:, i] = torch.multinomial(chain[seq[:, i - 2] * vocab + seq[:, i - 1]], 1, generator=g)[:, 0]
    return seq


def shape_images(n, g, size=12, noise=0.35):
    """1 x size x size images of one of 4 shapes at a random place: -, |, \\, box outline."""
    y = torch.randint(0, 4, (n,), generator=g)
    x = noise * torch.randn(n, 1, size, size, generator=g)
    pos = torch.randint(0, size - 5, (n, 2), generator=g)
    for i in range(n):
        r, c = int(pos[i, 0]), int(pos[i, 1])
        k = int(y[i])
        if k == 0:
            x[i, 0, r + 2, c:c + 5] += 1
        elif k == 1:
            x[i, 0, r:r + 5, c + 2] += 1
        elif k == 2:
            for j in range(5):
                x[i, 0, r + j, c + j] += 1
        else:
            x[i, 0, r, c:c + 5] += 1
            x[i, 0, r + 4, c:c + 5] += 1
            x[i, 0, r:r + 5, c] += 1
            x[i, 0, r:r + 5, c + 4] += 1
    return x, y


def box_images(n, g, size=16, noise=0.25):
    """One object per image (filled square, ring or plus) with its box in [0, 1] coordinates."""
    cls = torch.randint(0, 3, (n,), generator=g)
    x = noise * torch.randn(n, 1, size, size, generator=g)
    boxes = torch.empty(n, 4)
    for i in range(n):
        w = int(torch.randint(4, 9, (1,), generator=g))
        r = int(torch.randint(0, size - w + 1, (1,), generator=g))
        c = int(torch.randint(0, size - w + 1, (1,), generator=g))
        k = int(cls[i])
        if k == 0:
            x[i, 0, r:r + w, c:c + w] += 1
        elif k == 1:
            x[i, 0, r, c:c + w] += 1
            x[i, 0, r + w - 1, c:c + w] += 1
            x[i, 0, r:r + w, c] += 1
            x[i, 0, r:r + w, c + w - 1] += 1
        else:
            x[i, 0, r + w // 2, c:c + w] += 1
            x[i, 0, r:r + w, c + w // 2] += 1
        boxes[i] = torch.tensor([c, r, c + w, r + w], dtype=torch.float32) / size
    return x, (cls, boxes)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class SmallCNN(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 3 * 3, 32)
        self.fc2 = nn.Linear(32, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class LSTMRegressor(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class TinyTransformerLM(nn.Module):
    """Causal 2-layer transformer language model."""

    def __init__(self, vocab, length, d=32, layers=2):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.02 * torch.randn(length, d))
        layer = nn.TransformerEncoderLayer(d, 2, 2 * d, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        n = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n)
        h = self.enc(self.tok(x) + self.pos[:n], mask=mask, is_causal=True)
        return self.head(h)


class TinyDetector(nn.Module):
    """A one-object 'detector': CNN backbone, a class head and a box-regression head."""

    def __init__(self, classes=3):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU())
        self.cls = nn.Linear(64, classes)
        self.box = nn.Linear(64, 4)

    def forward(self, x):
        h = self.backbone(x)
        return self.cls(h), self.box(h)


# Loss functions: (model, x, y) -> (loss to backprop, {extra per-batch scalars}).


def ce_loss(model, x, y):
    logits = model(x)
    acc = (logits.argmax(1) == y).float().mean().item()
    return F.cross_entropy(logits, y), {"acc": acc}


def mse_loss(model, x, y):
    return F.mse_loss(model(x), y), {}


def mse_mae_loss(model, x, y):
    pred = model(x)
    return F.mse_loss(pred, y), {"mae": (pred - y).abs().mean().item()}


def lm_loss(model, x, _y):
    logits = model(x[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)), {}


def det_loss(model, x, y):
    cls, boxes = y
    logits, pred = model(x)
    loss_cls = F.cross_entropy(logits, cls)
    loss_box_reg = F.smooth_l1_loss(pred, boxes, beta=0.1)
    return loss_cls + loss_box_reg, {"loss_cls": loss_cls.item(), "loss_box_reg": loss_box_reg.item()}


# --------------------------------------------------------------------------------------------
# The one training loop
# --------------------------------------------------------------------------------------------


@dataclass
class History:
    """What a run did, step by step; the writers turn it into one tool's log format.

    Step s (0-based) is the s-th optimizer step: loss[s] is the loss of the batch of step s,
    computed before its update; lr[s] the LR that update used; an evaluation at step s ran
    after the update of step s.
    """

    steps_per_epoch: int
    batch_size: int
    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    next_lr: list = field(default_factory=list)  # the scheduler's LR after step s (for step s+1)
    grad_norm: list = field(default_factory=list)
    parts: dict = field(default_factory=dict)
    wall: list = field(default_factory=list)
    step_time: list = field(default_factory=list)
    data_time: list = field(default_factory=list)
    evals: dict = field(default_factory=dict)  # step -> {"loss": ..., "acc": ..., "runtime": ...}
    n_val: int = 0

    @property
    def steps(self):
        return len(self.loss)

    def epoch_mean(self, values, epoch):
        """Mean over the batches of one epoch, in float32 like the tools' running means."""
        a, b = epoch * self.steps_per_epoch, (epoch + 1) * self.steps_per_epoch
        return torch.tensor(values[a:b], dtype=torch.float32).mean().item()


def _take(y, idx):
    return tuple(t[idx] for t in y) if isinstance(y, tuple) else y[idx]


def _len(y):
    return len(y[0]) if isinstance(y, tuple) else len(y)


@torch.no_grad()
def evaluate(model, loss_fn, val):
    model.eval()
    t0 = time.perf_counter()
    loss, extra = loss_fn(model, *val)
    model.train()
    return {"loss": loss.item(), **extra, "runtime": time.perf_counter() - t0}


def fit(model, opt, train, loss_fn, *, steps, batch_size, seed, sched=None, clip=None, val=None,
        eval_every=None, lr_spikes=None, corrupt=None, stop_on_nonfinite=False):
    """Plain minibatch SGD loop over shuffled epochs (drop_last), recording a History.

    lr_spikes {step: factor}: that one step's update uses factor x the scheduled LR.
    corrupt {step: fn(x, y) -> (x, y)}: that one step's batch is replaced by fn's output.
    clip: max gradient norm (the norm recorded is the one before clipping).
    stop_on_nonfinite: stop before recording a non-finite loss (detectron2 raises there).
    """
    x_all, y_all = train
    n = _len(y_all)
    per_epoch = n // batch_size
    eval_every = eval_every or per_epoch
    g = torch.Generator().manual_seed(seed)
    h = History(steps_per_epoch=per_epoch, batch_size=batch_size, n_val=_len(val[1]) if val else 0)
    params = [p for p in model.parameters() if p.requires_grad]
    lr_spikes, corrupt = lr_spikes or {}, corrupt or {}
    perm = None
    model.train()
    for step in range(steps):
        t0 = time.perf_counter()
        i = step % per_epoch
        if i == 0:
            perm = torch.randperm(n, generator=g)
        idx = perm[i * batch_size:(i + 1) * batch_size]
        xb, yb = x_all[idx], _take(y_all, idx)
        if step in corrupt:
            xb, yb = corrupt[step](xb, yb)
        t1 = time.perf_counter()
        scheduled = [pg["lr"] for pg in opt.param_groups]
        for pg in opt.param_groups:
            pg["lr"] *= lr_spikes.get(step, 1.0)
        loss, extra = loss_fn(model, xb, yb)
        if stop_on_nonfinite and not math.isfinite(loss.item()):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        lr_used = opt.param_groups[0]["lr"]
        opt.step()
        for pg, lr in zip(opt.param_groups, scheduled):
            pg["lr"] = lr
        if sched is not None:
            sched.step()
        h.loss.append(loss.item())
        h.lr.append(lr_used)
        h.next_lr.append(opt.param_groups[0]["lr"])
        h.grad_norm.append(norm.item())
        for k, v in extra.items():
            h.parts.setdefault(k, []).append(v)
        h.data_time.append(t1 - t0)
        h.step_time.append(time.perf_counter() - t0)
        h.wall.append(time.time())
        if val is not None and (step + 1) % eval_every == 0:
            h.evals[step] = evaluate(model, loss_fn, val)
    return h


def warmup_cosine(opt, warmup, total):
    def f(s):
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def warmup_linear(opt, warmup, total):
    """transformers.get_linear_schedule_with_warmup."""
    def f(s):
        if s < warmup:
            return s / max(1, warmup)
        return max(0.0, (total - s) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def warmup_multistep(opt, warmup, milestones, warmup_factor=0.001):
    """detectron2 WarmupMultiStepLR: linear warmup from warmup_factor, x0.1 at each milestone."""
    def f(s):
        w = 1.0 if s >= warmup else warmup_factor * (1 - s / warmup) + s / warmup
        return w * 0.1 ** sum(s >= m for m in milestones)
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


# --------------------------------------------------------------------------------------------
# Writers: one a format, each writing what the real tool writes. Each returns the files it
# wrote and `Written`: every metric as the (x, value) points that went into the file, which
# the manifest is computed from (a spike is recorded where it shows in the logged points).
# --------------------------------------------------------------------------------------------


class Written(dict):
    """metric -> ([x, ...], [value, ...]) as written."""

    def add(self, metric, x, value):
        xs, ys = self.setdefault(metric, ([], []))
        xs.append(x)
        ys.append(value)


def _fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def write_tensorboard(run_dir, h, tags, every=1, new_style=False):
    """torch.utils.tensorboard.SummaryWriter, as a training script calls it.

    tags: {source: tag}; source is loss, lr, grad_norm, a per-batch extra (acc) or val_<key>.
    Train scalars at every `every`-th step (s % every == 0), evaluations when they ran.
    new_style=True writes TF2-style tensor scalars instead of simple_value.
    """
    from torch.utils.tensorboard import SummaryWriter

    _fresh(run_dir)
    w = SummaryWriter(run_dir)
    out = Written()
    series = {"loss": h.loss, "lr": h.lr, "grad_norm": h.grad_norm, **h.parts}

    def add(tag, value, step, walltime):
        w.add_scalar(tag, value, step, walltime=walltime, new_style=new_style)
        out.add(tag, step, value)

    for s in range(h.steps):
        if s % every == 0:
            for src, tag in tags.items():
                if src in series:
                    add(tag, series[src][s], s, h.wall[s])
        if s in h.evals:
            for src, tag in tags.items():
                if src.startswith("val_") and src[4:] in h.evals[s]:
                    add(tag, h.evals[s][src[4:]], s, h.wall[s] + h.evals[s]["runtime"])
    w.close()
    # The writer names the file events.out.tfevents.<time>.<host>.<pid>.<n>: give it a fixed name.
    (written,) = glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    os.rename(written, os.path.join(run_dir, TB_FILE_NAME))
    return [os.path.join(run_dir, TB_FILE_NAME)], out


def write_lightning_csv(run_dir, h, hparams, log_every_n_steps=50, lr_monitor=None,
                        step_metrics=("loss",), epoch_metrics=("loss",), val_metrics=("loss", "acc")):
    """Lightning CSVLogger (+ LearningRateMonitor) for a LightningModule that calls
    self.log("train_<m>", ..., on_step=True, on_epoch=True) and self.log("val_<m>", ...).

    Lightning logs step metrics when (batch + 1) % log_every_n_steps == 0 with step = the number
    of batches done before (the 0-based batch index); LearningRateMonitor logs on a row of its
    own without epoch; at epoch end come the validation row and then the train epoch-mean row,
    both at the epoch's last batch index. Header: the sorted union of keys; other cells empty.
    """
    vdir = os.path.join(run_dir, "version_0")
    _fresh(run_dir)
    os.makedirs(vdir)
    series = {"loss": h.loss, **h.parts}
    rows = []
    for e in range(h.steps // h.steps_per_epoch):
        for s in range(e * h.steps_per_epoch, (e + 1) * h.steps_per_epoch):
            if (s + 1) % log_every_n_steps == 0:
                if lr_monitor:
                    rows.append({lr_monitor: h.lr[s], "step": s})
                rows.append({"epoch": e, "step": s, **{f"train_{m}_step": series[m][s] for m in step_metrics}})
        last = (e + 1) * h.steps_per_epoch - 1
        if last in h.evals:
            rows.append({"epoch": e, "step": last, **{f"val_{m}": h.evals[last][m] for m in val_metrics}})
        rows.append({"epoch": e, "step": last,
                     **{f"train_{m}_epoch": h.epoch_mean(series[m], e) for m in epoch_metrics}})
    keys = sorted(set().union(*rows))
    with open(os.path.join(vdir, "metrics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)  # csv's default \r\n line ends, as Lightning
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(vdir, "hparams.yaml"), "w") as f:  # yaml.dump sorts the keys
        for k, v in sorted(hparams.items()):
            f.write(f"{k}: {v}\n")
    out = Written()
    for row in rows:
        for k, v in row.items():
            if k not in ("epoch", "step"):
                out.add(k, row["step"], v)
    return [os.path.join(vdir, "metrics.csv"), os.path.join(vdir, "hparams.yaml")], out


def write_keras_csv(run_dir, h, train_metrics=("acc",), with_lr=True):
    """Keras CSVLogger: one row per epoch, 'epoch' then the log keys sorted. Train metrics are
    the running means over the epoch's batches; lr is what LearningRateScheduler put in logs.
    Keras names: acc -> accuracy, mae -> mae."""
    _fresh(run_dir)
    name = {"acc": "accuracy", "mae": "mae"}
    rows = []
    for e in range(h.steps // h.steps_per_epoch):
        last = (e + 1) * h.steps_per_epoch - 1
        logs = {"loss": h.epoch_mean(h.loss, e), "val_loss": h.evals[last]["loss"]}
        for m in train_metrics:
            logs[name[m]] = h.epoch_mean(h.parts[m], e)
            logs["val_" + name[m]] = h.evals[last][m]
        if with_lr:  # a float32 from the optimizer: written with float32's shortest digits
            logs["lr"] = float(f"{h.lr[last]:.7g}")
        rows.append({"epoch": e, **logs})
    path = os.path.join(run_dir, "training.log")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch"] + sorted(k for k in rows[0] if k != "epoch"))
        writer.writeheader()
        writer.writerows(rows)
    out = Written()
    for row in rows:
        for k, v in row.items():
            if k != "epoch":
                out.add(k, row["epoch"], v)
    return [path], out


def write_trainer_state(run_dir, h, *, logging_steps, eval_steps, num_train_epochs, n_params=0,
                        tokens_per_step=0, metric_for_best_model=None, max_grad_norm=1.0,
                        logging_nan_inf_filter=True):
    """Hugging Face Trainer's trainer_state.json (transformers 4.5x: json.dumps(indent=2,
    sort_keys=True)). global_step is 1-based: HF step = our step + 1. The logged loss is the
    mean of the step losses since the last log (a non-finite step loss is replaced, as the
    Trainer does, when logging_nan_inf_filter is on); learning_rate is the scheduler's LR after
    the step; grad_norm (pre-clip) only when clipping is on (max_grad_norm > 0)."""
    _fresh(run_dir)
    log_history, tr_loss, last_logged, total = [], 0.0, 0, 0.0
    best = None
    out = Written()
    for s in range(h.steps):
        gs = s + 1
        epoch = gs / h.steps_per_epoch
        step_loss = h.loss[s]
        if logging_nan_inf_filter and not math.isfinite(step_loss):
            step_loss = tr_loss / (1 + s - last_logged)  # "the average of previous logged losses"
        tr_loss += step_loss
        total += step_loss
        if gs % logging_steps == 0:
            row = {"epoch": epoch, "learning_rate": h.next_lr[s], "loss": tr_loss / (gs - last_logged), "step": gs}
            if max_grad_norm:
                row["grad_norm"] = h.grad_norm[s]
            log_history.append(row)
            tr_loss, last_logged = 0.0, gs
        if s in h.evals and gs % eval_steps == 0:
            ev = h.evals[s]
            n_batches = max(1, math.ceil(h.n_val / h.batch_size))
            row = {"epoch": epoch, "eval_loss": ev["loss"], "eval_runtime": round(ev["runtime"], 4),
                   "eval_samples_per_second": round(h.n_val / ev["runtime"], 3),
                   "eval_steps_per_second": round(n_batches / ev["runtime"], 3), "step": gs}
            log_history.append(row)
            if metric_for_best_model and math.isfinite(ev["loss"]) and (best is None or ev["loss"] < best[0]):
                best = (ev["loss"], gs)
    for row in log_history:
        for k, v in row.items():
            if k not in ("epoch", "step") and not k.endswith(("_runtime", "_per_second")):
                out.add(k, row["step"], v)
    runtime = sum(h.step_time) + sum(e["runtime"] for e in h.evals.values())
    total_flos = float(6 * n_params * tokens_per_step * h.steps)
    log_history.append({"epoch": h.steps / h.steps_per_epoch, "step": h.steps, "total_flos": total_flos,
                        "train_loss": total / h.steps, "train_runtime": round(runtime, 4),
                        "train_samples_per_second": round(h.steps * h.batch_size / runtime, 3),
                        "train_steps_per_second": round(h.steps / runtime, 3)})
    state = {
        "best_global_step": best[1] if best else None,
        "best_metric": best[0] if best else None,
        "best_model_checkpoint": f"out/checkpoint-{best[1]}" if best else None,
        "epoch": h.steps / h.steps_per_epoch,
        "eval_steps": eval_steps,
        "global_step": h.steps,
        "is_hyper_param_search": False,
        "is_local_process_zero": True,
        "is_world_process_zero": True,
        "log_history": log_history,
        "logging_steps": logging_steps,
        "max_steps": h.steps,
        "num_input_tokens_seen": 0,
        "num_train_epochs": num_train_epochs,
        "save_steps": 500,
        "stateful_callbacks": {"TrainerControl": {"args": {
            "should_epoch_stop": False, "should_evaluate": False, "should_log": False,
            "should_save": True, "should_training_stop": True}, "attributes": {}}},
        "total_flos": total_flos,
        "train_batch_size": h.batch_size,
        "trial_name": None,
        "trial_params": None,
    }
    path = os.path.join(run_dir, "trainer_state.json")
    with open(path, "w") as f:
        f.write(json.dumps(state, indent=2, sort_keys=True) + "\n")  # NaN is written as NaN
    return [path], out


def write_detectron2(run_dir, h, max_iter, period=20, window=20):
    """detectron2 JSONWriter: a JSON line every `period` iterations (iteration = 0-based index
    of the last one) and at the last. Losses, time and data_time are medians over the last
    `window` iterations (their smoothing hint); lr is the latest; eta from the median time."""
    _fresh(run_dir)

    def median(v, s, w=window):
        return torch.tensor(v[max(0, s - w + 1):s + 1], dtype=torch.float64).median().item()

    lines, out = [], Written()
    for s in range(h.steps):
        if (s + 1) % period == 0 or s == max_iter - 1:
            row = {"data_time": median(h.data_time, s), "eta_seconds": median(h.step_time, s, 1000) * (max_iter - s - 1),
                   "iteration": s, "lr": h.lr[s], "time": median(h.step_time, s), "total_loss": median(h.loss, s)}
            for k, v in h.parts.items():
                row[k] = median(v, s)
            lines.append(json.dumps(row, sort_keys=True))
            for k in ("total_loss", "lr", *h.parts):
                out.add(k, s, row[k])
    path = os.path.join(run_dir, "metrics.json")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return [path], out


# --------------------------------------------------------------------------------------------
# What the manifest records, computed from the written points.
# --------------------------------------------------------------------------------------------


def spike_point(written, metric, after, within):
    """The logged x in [after, after + within] where the metric is highest: where a spike
    caused at step `after` shows in the file."""
    xs, ys = written[metric]
    cands = [(y, x) for x, y in zip(xs, ys) if after <= x <= after + within]
    return max(cands)[1]


def first_nonfinite(written, metric):
    xs, ys = written[metric]
    return next(x for x, y in zip(xs, ys) if not math.isfinite(y))


def best_x(written, metric):
    xs, ys = written[metric]
    return min(zip(ys, xs))[1]


def divergence(written, val_metric, train_metric):
    """train_val_divergence at the val minimum; best_step_range: where val is within 2% of it."""
    xs, ys = written[val_metric]
    best = min(ys)
    near = [x for x, y in zip(xs, ys) if y <= 1.02 * best]
    return {"category": "train_val_divergence", "metric": val_metric, "train_metric": train_metric,
            "best_step": best_x(written, val_metric), "best_step_range": [near[0], near[-1]]}


def rise_start(written, metric, factor=3.0, window=5):
    """Where a lasting rise starts: the first x after which the running median (window
    points) stays above factor x its lowest value before that x. Non-finite counts as high."""
    xs, ys = written[metric]
    ys = [y if math.isfinite(y) else float("inf") for y in ys]
    med = [sorted(ys[max(0, i - window + 1):i + 1])[len(ys[max(0, i - window + 1):i + 1]) // 2] for i in range(len(ys))]
    for i in range(1, len(med)):
        low = min(med[:i])
        if all(m > factor * low for m in med[i:]):
            return xs[i], max(ys[i:]) / ys[0]
    raise ValueError(f"{metric}: no lasting rise")


# --------------------------------------------------------------------------------------------
# Runs: one small function each. Each trains, writes, and returns its manifest entry.
# --------------------------------------------------------------------------------------------

RUNS = {}


def run(fmt, name):
    def register(fn):
        RUNS[f"{fmt}/{name}"] = fn
        return fn
    return register


def seeded(seed):
    """Seed torch (model init) and return a generator for the data of this run."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def entry(files, out, model, optimizer, logging, expect, notes, x="step"):
    """A manifest entry; logging is "every step", "every N steps" or "per epoch", then details."""
    rate = re.match(r"every step|every \d+ (steps|iterations)|per epoch", logging).group(0)
    return {"files": [os.path.relpath(f, out) for f in files], "x": x, "model": model,
            "optimizer": optimizer, "logging": rate.replace("iterations", "steps"), "logging_detail": logging,
            "healthy": not expect, "expect": expect, "notes": notes}


# ---- TensorBoard -----------------------------------------------------------------------------


@run("tensorboard", "mlp_adam_moons")
def tb_mlp_adam_moons(out, run_dir):
    g = seeded(1)
    train, val = two_moons(2000, 0.2, g), two_moons(500, 0.2, g)
    model = mlp([2, 64, 64, 2])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    h = fit(model, opt, train, ce_loss, steps=1500, batch_size=32, seed=1, val=val, eval_every=50)
    files, _ = write_tensorboard(run_dir, h, {"loss": "train/loss", "lr": "lr", "val_loss": "val/loss", "val_acc": "val/acc"})
    return entry(files, out, "MLP 2-64-64-2", "Adam lr=1e-3", "every step", [],
                 "Healthy baseline: two moons, batch 32; train loss every step, val every 50 steps.")


@run("tensorboard", "cnn_sgd_warmup_cosine")
def tb_cnn_sgd_warmup_cosine(out, run_dir):
    g = seeded(2)
    train, val = shape_images(6000, g, noise=0.5), shape_images(500, g, noise=0.5)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9, weight_decay=5e-4)
    h = fit(model, opt, train, ce_loss, steps=1240, batch_size=32, seed=2, sched=warmup_cosine(opt, 100, 1240),
            val=val, eval_every=124)
    files, _ = write_tensorboard(run_dir, h, {"loss": "Loss/train", "lr": "learning_rate", "val_loss": "Loss/val",
                                              "val_acc": "Accuracy/val"}, new_style=True)
    return entry(files, out, "small CNN (2 conv + 2 fc) on 12x12 shape images", "SGD momentum 0.9, lr 0.05, "
                 "linear warmup 100 steps then cosine to 0", "every step", [],
                 "Healthy: warmup + cosine schedule, noisy images (loss ends ~0.12), val every 124 steps. Scalars written with "
                 "new_style=True (TF2 tensor scalars, no simple_value).")


@run("tensorboard", "mlp_adam_converged_early")
def tb_mlp_adam_converged_early(out, run_dir):
    g = seeded(3)
    w = torch.randn(8, 1, generator=g)  # a linear target with a lot of signal, noise 0.1
    x, xv = torch.randn(4000, 8, generator=g), torch.randn(500, 8, generator=g)
    y, yv = x @ w + 0.1 * torch.randn(4000, 1, generator=g), xv @ w + 0.1 * torch.randn(500, 1, generator=g)
    model = mlp([8, 64, 64, 1])
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    h = fit(model, opt, (x, y), mse_loss, steps=2000, batch_size=64, seed=3, val=(xv, yv), eval_every=50)
    files, _ = write_tensorboard(run_dir, h, {"loss": "train/loss", "lr": "lr", "val_loss": "val/loss"})
    return entry(files, out, "MLP 8-64-64-1 regression (linear target + noise)", "Adam lr=3e-3", "every step", [],
                 "Healthy, converged early: the loss falls ~200x (~4 -> ~0.02) in the first 150 steps, close "
                 "to the noise floor (0.01 = noise 0.1^2), then stays nearly flat (creeping to ~0.011) for the "
                 "remaining 1850 steps. Converged, not stalled.")


@run("tensorboard", "mlp_sgd_bad_batch_spike")
def tb_mlp_sgd_bad_batch_spike(out, run_dir):
    g = seeded(4)
    x, y, centers = blobs(6000, 5, 10, 2.5, g)
    xv, yv, _ = blobs(1000, 5, 10, 2.5, g, centers=centers)
    model = mlp([10, 64, 5])
    opt = torch.optim.SGD(model.parameters(), 0.02, momentum=0.9)
    k = 700

    def garbage(xb, yb):  # a batch that skipped normalisation and whose labels got shuffled
        perm = torch.randperm(len(yb), generator=torch.Generator().manual_seed(0))
        return xb * 5, yb[perm]

    h = fit(model, opt, (x, y), ce_loss, steps=1400, batch_size=64, seed=4, val=(xv, yv), eval_every=100,
            corrupt={k: garbage})
    files, w = write_tensorboard(run_dir, h, {"loss": "train/loss", "lr": "lr", "val_loss": "val/loss"})
    return entry(files, out, "MLP 10-64-5 on gaussian blobs", "SGD momentum 0.9, lr 0.02", "every step",
                 [{"category": "spike", "metric": "train/loss", "step": spike_point(w, "train/loss", k, 0), "tolerance": 0}],
                 f"One corrupted batch at step {k} (inputs x5, labels shuffled): the loss of that batch is ~100x "
                 "the usual; the update it causes leaves the loss raised for ~30 steps, then it recovers.")


@run("tensorboard", "mlp_adam_cyclic_lr_oscillation")
def tb_mlp_adam_cyclic_lr_oscillation(out, run_dir):
    g = seeded(5)
    x, y, teacher = teacher_regression(4000, 8, g, noise=0.02)
    xv, yv, _ = teacher_regression(500, 8, g, noise=0.02, teacher=teacher)
    model = mlp([8, 64, 64, 1])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=1e-4, max_lr=0.1, step_size_up=100, cycle_momentum=False)
    h = fit(model, opt, (x, y), mse_loss, steps=1600, batch_size=64, seed=5, sched=sched, val=(xv, yv), eval_every=25)
    files, _ = write_tensorboard(run_dir, h, {"loss": "train/loss", "lr": "lr", "val_loss": "val/loss"})
    return entry(files, out, "MLP 8-64-64-1 regression", "Adam, CyclicLR triangular 1e-4..0.1, 200-step period",
                 "every step",
                 [{"category": "oscillation", "metric": "train/loss", "step_start": 200, "step_end": 1599, "period": 200},
                  {"category": "oscillation", "metric": "val/loss", "step_start": 200, "step_end": 1599, "period": 200}],
                 "A cyclic LR whose peak (0.1) is ~30x too high for Adam: every cycle the loss climbs while "
                 "the LR is high and falls back while it is low, a 3-10x swing with a 200-step period, for "
                 "the whole run.")


@run("tensorboard", "lstm_sgd_tiny_lr_stall")
def tb_lstm_sgd_tiny_lr_stall(out, run_dir):
    g = seeded(6)
    train, val = sine_windows(3000, 20, g), sine_windows(500, 20, g)
    model = LSTMRegressor(32)
    opt = torch.optim.SGD(model.parameters(), 1e-5)
    h = fit(model, opt, train, mse_loss, steps=1000, batch_size=32, seed=6, val=val, eval_every=100)
    files, _ = write_tensorboard(run_dir, h, {"loss": "train/loss", "lr": "lr", "val_loss": "val/loss"}, every=10)
    return entry(files, out, "LSTM(32) next-value regression on sine windows", "SGD lr=1e-5 (meant 1e-1)",
                 "every 10 steps",
                 [{"category": "stall", "metric": "train/loss", "step_start": 0},
                  {"category": "stall", "metric": "val/loss", "step_start": 99}],
                 "LR 10^4 too small: the loss stays at its initial level (~0.5) for the whole run while the "
                 "same model at lr 0.1 reaches ~0.011 in these 1000 steps.")


@run("tensorboard", "mlp_adam_overfit_tiny_data")
def tb_mlp_adam_overfit_tiny_data(out, run_dir):
    g = seeded(7)
    train, val = two_moons(100, 0.25, g, flip=0.1), two_moons(1000, 0.25, g, flip=0.1)
    model = mlp([2, 256, 256, 2])
    opt = torch.optim.Adam(model.parameters(), 6e-4)
    h = fit(model, opt, train, ce_loss, steps=1500, batch_size=20, seed=7, val=val, eval_every=10)
    files, w = write_tensorboard(run_dir, h, {"loss": "train/loss", "val_loss": "val/loss", "val_acc": "val/acc"})
    return entry(files, out, "MLP 2-256-256-2 (66k params) on 100 noisy points", "Adam lr=6e-4, batch 20",
                 "every step (val every 10 steps)",
                 [divergence(w, "val/loss", "train/loss")],
                 "Overfitting: two moons with 10% flipped labels, 100 training points; the big MLP memorises "
                 "them: train loss keeps falling, val loss falls for ~140 steps, bottoms out and then rises "
                 "for the rest.")


@run("tensorboard", "mlp_sgd_warmup_nan")
def tb_mlp_sgd_warmup_nan(out, run_dir):
    g = seeded(8)
    x, y, teacher = teacher_regression(4000, 8, g, noise=0.1)
    model = mlp([8, 64, 64, 1])
    opt = torch.optim.SGD(model.parameters(), 3.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 500))
    h = fit(model, opt, (x, y), mse_loss, steps=400, batch_size=64, seed=8, sched=sched)
    files, w = write_tensorboard(run_dir, h, {"loss": "train/loss", "lr": "lr"})
    step, ratio = rise_start(w, "train/loss")
    return entry(files, out, "MLP 8-64-64-1 regression", "SGD, linear warmup to lr=3.0 (far too high)", "every step",
                 [{"category": "explosion", "metric": "train/loss", "step_start": step, "tolerance": 50},
                  {"category": "nonfinite", "metric": "train/loss", "step": first_nonfinite(w, "train/loss")}],
                 "LR warmup to a peak ~30x too high, no clipping: once the LR passes the stability limit the "
                 "loss grows exponentially, overflows to inf and then stays nan (training went on).")


@run("tensorboard", "mlp_sgd_warmup_explosion")
def tb_mlp_sgd_warmup_explosion(out, run_dir):
    g = seeded(9)
    x, y, teacher = teacher_regression(4000, 8, g, noise=0.1)
    xv, yv, _ = teacher_regression(500, 8, g, noise=0.1, teacher=teacher)
    model = mlp([8, 64, 64, 1])
    opt = torch.optim.SGD(model.parameters(), 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, 0.02 + s / 800))
    h = fit(model, opt, (x, y), mse_loss, steps=1000, batch_size=64, seed=9, sched=sched, val=(xv, yv), eval_every=50)
    files, w = write_tensorboard(run_dir, h, {"loss": "Loss/train", "lr": "learning_rate", "val_loss": "Loss/val"},
                                 every=10, new_style=True)
    step, ratio = rise_start(w, "Loss/train")
    return entry(files, out, "MLP 8-64-64-1 regression", "SGD, linear warmup 0.02 -> 1.0 over 800 steps",
                 "every 10 steps",
                 [{"category": "explosion", "metric": "Loss/train", "step_start": step, "tolerance": 150,
                   "max_over_initial": round(ratio, 1)}],
                 "Warmup to a peak LR ~3x above the stability limit: the loss first falls to ~0.02, then, as "
                 "the LR keeps rising, grows steadily to many times its initial value; it stays finite. "
                 "new_style=True tensor scalars.")


# ---- Lightning CSVLogger -------------------------------------------------------------------


@run("lightning_csv", "mlp_adam_bs4_noisy")
def pl_mlp_adam_bs4_noisy(out, run_dir):
    g = seeded(10)
    x, y, centers = blobs(800, 3, 4, 1.6, g)
    xv, yv, _ = blobs(400, 3, 4, 1.6, g, centers=centers)
    model = mlp([4, 32, 3])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    h = fit(model, opt, (x, y), ce_loss, steps=2000, batch_size=4, seed=10, val=(xv, yv))
    files, _ = write_lightning_csv(run_dir, h, {"lr": 0.001, "batch_size": 4, "hidden": 32}, log_every_n_steps=1)
    return entry(files, out, "MLP 4-32-3 on overlapping blobs", "Adam lr=1e-3, batch size 4",
                 "every step (log_every_n_steps=1), val per epoch", [],
                 "Healthy but NOISY: with batches of 4 the step loss jumps between ~0 and >1 all the time; "
                 "the epoch means (train_loss_epoch, val_loss) fall steadily. No spike beyond that noise.")


@run("lightning_csv", "mlp_sgd_lr_spikes")
def pl_mlp_sgd_lr_spikes(out, run_dir):
    g = seeded(11)
    x, y, centers = blobs(6400, 5, 10, 2.5, g)
    xv, yv, _ = blobs(1000, 5, 10, 2.5, g, centers=centers)
    model = mlp([10, 64, 5])
    opt = torch.optim.SGD(model.parameters(), 0.02, momentum=0.9)
    ks = [527, 1107, 1607]
    h = fit(model, opt, (x, y), ce_loss, steps=2000, batch_size=64, seed=11, val=(xv, yv), lr_spikes={k: 100 for k in ks})
    files, w = write_lightning_csv(run_dir, h, {"lr": 0.02, "momentum": 0.9, "batch_size": 64},
                                   log_every_n_steps=10, lr_monitor="lr-SGD")
    return entry(files, out, "MLP 10-64-5 on gaussian blobs", "SGD momentum 0.9, lr 0.02", "every 10 steps, val per epoch",
                 [{"category": "spike", "metric": "train_loss_step", "step": spike_point(w, "train_loss_step", k, 10),
                   "tolerance": 10} for k in ks],
                 f"Three one-step LR spikes (x100) at steps {ks}: each update throws the weights off, the loss "
                 "jumps, and recovers over ~30 steps. The spikes fall between logged steps (the lr-SGD column, "
                 "logged every 10 steps, does not show them); expect steps are the logged steps where the "
                 "loss jump shows. The epoch means (train_loss_epoch) of the three epochs hit are only "
                 "1.6-2.3x their neighbours: milder bumps, not listed.")


@run("lightning_csv", "cnn_sgd_steplr_stall")
def pl_cnn_sgd_steplr_stall(out, run_dir):
    g = seeded(12)
    train, val = shape_images(2000, g), shape_images(400, g)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), 0.02, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=150, gamma=0.01)
    h = fit(model, opt, train, ce_loss, steps=1240, batch_size=32, seed=12, sched=sched, val=val)
    files, _ = write_lightning_csv(run_dir, h, {"lr": 0.02, "momentum": 0.9, "step_size": 150, "gamma": 0.01},
                                   log_every_n_steps=10, lr_monitor="lr-SGD")
    return entry(files, out, "small CNN on 12x12 shape images", "SGD momentum 0.9 lr 0.02, StepLR(step_size=150, gamma=0.01) per step",
                 "every 10 steps, val per epoch",
                 [{"category": "stall", "metric": "train_loss_step", "step_start": 150},
                  {"category": "stall", "metric": "val_loss", "step_start": 185}],
                 "Step decay to ~0 far too early: StepLR meant per epoch but stepped per batch, so the LR drops "
                 "to 2e-4 at step 150 and 2e-6 at step 300 while the loss is still high; it stays flat from "
                 "there (lr-SGD column shows the drops).")


@run("lightning_csv", "mlp_adam_overfit")
def pl_mlp_adam_overfit(out, run_dir):
    g = seeded(13)
    x, y, centers = blobs(100, 3, 2, 1.3, g)
    xv, yv, _ = blobs(1000, 3, 2, 1.3, g, centers=centers)
    model = mlp([2, 256, 256, 3])
    opt = torch.optim.Adam(model.parameters(), 2e-4)
    h = fit(model, opt, (x, y), ce_loss, steps=5 * 300, batch_size=20, seed=13, val=(xv, yv))
    files, w = write_lightning_csv(run_dir, h, {"lr": 0.0002, "batch_size": 20, "hidden": 256}, log_every_n_steps=5)
    return entry(files, out, "MLP 2-256-256-3 on 100 points of overlapping blobs", "Adam lr=2e-4",
                 "every 5 steps (= once per epoch), val per epoch (300 epochs)",
                 [divergence(w, "val_loss", "train_loss_epoch")],
                 "Overfitting: 3 overlapping classes, 100 training points, a big MLP: train loss falls all "
                 "run, val loss bottoms out after some epochs and rises steadily after.")


@run("lightning_csv", "mlp_adam_cyclic_lr_oscillation")
def pl_mlp_adam_cyclic_lr_oscillation(out, run_dir):
    g = seeded(14)
    x, y, teacher = teacher_regression(4000, 8, g, noise=0.02)
    xv, yv, _ = teacher_regression(500, 8, g, noise=0.02, teacher=teacher)
    model = mlp([8, 64, 64, 1])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=1e-4, max_lr=0.1, step_size_up=150, cycle_momentum=False)
    h = fit(model, opt, (x, y), mse_loss, steps=2000, batch_size=32, seed=14, sched=sched, val=(xv, yv))
    files, _ = write_lightning_csv(run_dir, h, {"lr": 0.1, "base_lr": 0.0001, "step_size_up": 150},
                                   log_every_n_steps=10, lr_monitor="lr-Adam", val_metrics=("loss",))
    return entry(files, out, "MLP 8-64-64-1 regression", "Adam, CyclicLR triangular 1e-4..0.1, 300-step period",
                 "every 10 steps, val per epoch (125 steps)",
                 [{"category": "oscillation", "metric": "train_loss_step", "step_start": 300, "step_end": 1999,
                   "period": 300}],
                 "Cyclic LR with a far too high peak: the loss swings up and down with the LR (period 300 "
                 "steps) for the whole run; lr-Adam shows the triangle wave.")


# ---- Keras CSVLogger -----------------------------------------------------------------------


@run("keras_csv", "cnn_adam_per_epoch")
def keras_cnn_adam_per_epoch(out, run_dir):
    g = seeded(15)
    train, val = shape_images(2000, g), shape_images(400, g)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    h = fit(model, opt, train, ce_loss, steps=62 * 25, batch_size=32, seed=15, val=val)
    files, _ = write_keras_csv(run_dir, h)
    return entry(files, out, "small CNN on 12x12 shape images", "Adam lr=1e-3", "per epoch (25 epochs)", [],
                 "Healthy, few points: one row per epoch.", x="epoch")


@run("keras_csv", "mlp_adam_overfit")
def keras_mlp_adam_overfit(out, run_dir):
    g = seeded(16)
    x, y, centers = blobs(100, 3, 2, 1.3, g)
    xv, yv, _ = blobs(1000, 3, 2, 1.3, g, centers=centers)
    model = mlp([2, 256, 256, 3])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    h = fit(model, opt, (x, y), ce_loss, steps=5 * 120, batch_size=20, seed=16, val=(xv, yv))
    files, w = write_keras_csv(run_dir, h)
    return entry(files, out, "MLP 2-256-256-3 on 100 points of overlapping blobs", "Adam lr=1e-3", "per epoch (120 epochs)",
                 [divergence(w, "val_loss", "loss")],
                 "Overfitting: overlapping classes, 100 training points, a big MLP: loss keeps falling, "
                 "val_loss is lowest early and rises after (best_step is an epoch).", x="epoch")


@run("keras_csv", "cnn_sgd_dead_relu_stall")
def keras_cnn_sgd_dead_relu_stall(out, run_dir):
    g = seeded(17)
    train, val = shape_images(2000, g), shape_images(400, g)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), 0.5, momentum=0.9)
    h = fit(model, opt, train, ce_loss, steps=62 * 20, batch_size=32, seed=17, val=val)
    files, _ = write_keras_csv(run_dir, h)
    return entry(files, out, "small CNN on 12x12 shape images (4 balanced classes)", "SGD momentum 0.9, lr 0.5 (~25x too high)",
                 "per epoch (20 epochs)",
                 [{"category": "stall", "metric": "loss", "step_start": 1, "level": round(math.log(4), 3)},
                  {"category": "stall", "metric": "val_loss", "step_start": 0, "level": round(math.log(4), 3)}],
                 "Stuck at a trivial level: the first big updates kill every ReLU (dead units give no gradient), "
                 "after which only the output bias learns, so the net predicts the class prior: loss ~ln 4 = "
                 "1.386, accuracy ~0.25, flat for all epochs.", x="epoch")


@run("keras_csv", "mlp_sgd_lr_growth_nan")
def keras_mlp_sgd_lr_growth_nan(out, run_dir):
    g = seeded(18)
    x, y, teacher = teacher_regression(2000, 8, g, noise=0.1)
    xv, yv, _ = teacher_regression(500, 8, g, noise=0.1, teacher=teacher)
    model = mlp([8, 64, 64, 1])
    opt = torch.optim.SGD(model.parameters(), 0.01)
    per_epoch = 2000 // 32
    # LearningRateScheduler(lambda epoch: 0.01 * 1.5 ** epoch): the LR grows every epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.5 ** (s // per_epoch))
    h = fit(model, opt, (x, y), mse_mae_loss, steps=per_epoch * 20, batch_size=32, seed=18, sched=sched, val=(xv, yv))
    files, w = write_keras_csv(run_dir, h, train_metrics=("mae",))
    return entry(files, out, "MLP 8-64-64-1 regression", "SGD, LearningRateScheduler lr = 0.01 * 1.5**epoch",
                 "per epoch (20 epochs)",
                 [{"category": "nonfinite", "metric": "loss", "step": first_nonfinite(w, "loss")},
                  {"category": "nonfinite", "metric": "val_loss", "step": first_nonfinite(w, "val_loss")}],
                 "An LR that grows 1.5x per epoch: fine for a while, then past the stability limit the loss "
                 "overflows within the epoch and the epoch means are nan from then on (Keras writes 'nan').",
                 x="epoch")


# ---- Hugging Face trainer_state.json -------------------------------------------------------


@run("trainer_state", "transformer_adamw_linear")
def hf_transformer_adamw_linear(out, run_dir):
    g = seeded(19)
    chain = markov_chain(12, g)
    train, val = markov_tokens(1600, 16, chain, g), markov_tokens(200, 16, chain, g)
    model = TinyTransformerLM(12, 16)
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=0.01)
    steps = 800
    h = fit(model, opt, (train, torch.zeros(1600)), lm_loss, steps=steps, batch_size=16, seed=19, clip=1.0,
            sched=warmup_linear(opt, 80, steps), val=(val, torch.zeros(200)), eval_every=100)
    n_params = sum(p.numel() for p in model.parameters())
    files, _ = write_trainer_state(run_dir, h, logging_steps=10, eval_steps=100, num_train_epochs=8,
                                   n_params=n_params, tokens_per_step=16 * 16, metric_for_best_model="eval_loss")
    return entry(files, out, "tiny causal transformer LM (2 layers, d=32) on an order-2 Markov language",
                 "AdamW lr 3e-3, linear warmup 80 steps then linear decay to 0, max_grad_norm 1.0",
                 "every 10 steps (logging_steps=10, mean of the 10 step losses), eval every 100", [],
                 "Healthy: loss falls from ln 12 = 2.48 towards the language's entropy, eval_loss with it.")


@run("trainer_state", "lstm_adamw_lr_spike")
def hf_lstm_adamw_lr_spike(out, run_dir):
    g = seeded(20)
    train, val = sine_windows(3000, 20, g), sine_windows(500, 20, g)
    model = LSTMRegressor(32)
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=0.01)
    steps, k = 1000, 500
    h = fit(model, opt, train, mse_loss, steps=steps, batch_size=32, seed=20, clip=1.0, sched=warmup_linear(opt, 50, steps),
            val=val, eval_every=100, lr_spikes={k: 100})
    files, w = write_trainer_state(run_dir, h, logging_steps=10, eval_steps=100, num_train_epochs=11)
    # HF steps are 1-based: the update of our step k is HF step k+1, its effect from k+2 on.
    return entry(files, out, "LSTM(32) next-value regression on sine windows",
                 "AdamW lr 3e-3, warmup 50 then linear decay, max_grad_norm 1.0", "every 10 steps (mean of 10 steps)",
                 [{"category": "spike", "metric": "loss", "step": spike_point(w, "loss", k + 1, 10), "tolerance": 10}],
                 f"One optimizer step (HF step {k + 1}) with 100x the LR: Adam's normalised update moves every "
                 "weight by ~0.3, the loss jumps and recovers over ~30 steps. The logged loss is a 10-step mean, "
                 "so the spike shows damped in the log.")


@run("trainer_state", "lstm_sgd_no_clip_nan")
def hf_lstm_sgd_no_clip_nan(out, run_dir):
    g = seeded(21)
    train, val = sine_windows(3000, 20, g), sine_windows(500, 20, g)
    model = LSTMRegressor(32)
    opt = torch.optim.SGD(model.parameters(), 1.0)
    steps = 400
    h = fit(model, opt, train, mse_loss, steps=steps, batch_size=32, seed=21, sched=warmup_linear(opt, 100, steps),
            val=val, eval_every=50)
    files, w = write_trainer_state(run_dir, h, logging_steps=10, eval_steps=50, num_train_epochs=5, max_grad_norm=0,
                                   logging_nan_inf_filter=False)
    return entry(files, out, "LSTM(32) next-value regression on sine windows",
                 "SGD lr 1.0 (warmup 100 steps), max_grad_norm=0 (no clipping)", "every 10 steps, eval every 50",
                 [{"category": "explosion", "metric": "loss", "step_start": rise_start(w, "loss", window=1)[0],
                   "tolerance": 10},
                  {"category": "explosion", "metric": "eval_loss", "step_start": rise_start(w, "eval_loss", window=1)[0],
                   "tolerance": 50},
                  {"category": "nonfinite", "metric": "loss", "step": first_nonfinite(w, "loss")},
                  {"category": "nonfinite", "metric": "eval_loss", "step": first_nonfinite(w, "eval_loss")}],
                 "Too high an LR with clipping turned off: as the warmup reaches lr ~1 the weights blow up, "
                 "the loss jumps to ~1e21, overflows to inf and turns nan (written as NaN, "
                 "logging_nan_inf_filter=False); no grad_norm key since clipping is off.")


@run("trainer_state", "lstm_sgd_clipped_explosion")
def hf_lstm_sgd_clipped_explosion(out, run_dir):
    g = seeded(22)
    train, val = sine_windows(3000, 20, g), sine_windows(500, 20, g)
    model = LSTMRegressor(32)
    opt = torch.optim.SGD(model.parameters(), 10.0)
    steps = 800
    h = fit(model, opt, train, mse_loss, steps=steps, batch_size=32, seed=22, clip=1.0,
            sched=warmup_linear(opt, steps, steps + 1), val=val, eval_every=100)
    files, w = write_trainer_state(run_dir, h, logging_steps=10, eval_steps=100, num_train_epochs=9)
    step, ratio = rise_start(w, "loss")
    eval_step, eval_ratio = rise_start(w, "eval_loss", window=1)
    return entry(files, out, "LSTM(32) next-value regression on sine windows",
                 "SGD lr 10 (warmup over the whole run), max_grad_norm 1.0", "every 10 steps, eval every 100",
                 [{"category": "explosion", "metric": "loss", "step_start": step, "tolerance": 50,
                   "max_over_initial": round(ratio, 1)},
                  {"category": "explosion", "metric": "eval_loss", "step_start": eval_step, "tolerance": 100,
                   "max_over_initial": round(eval_ratio, 1)}],
                 "Far too high an LR, kept finite by gradient clipping: every step moves the weights by ~lr, "
                 "so as the warmup raises the LR the loss grows steadily to tens of times its initial value "
                 "without ever becoming nan.")


# ---- detectron2 metrics.json ---------------------------------------------------------------


def _detector_run(seed, base_lr, lr_spikes=None, max_iter=1000):
    g = seeded(seed)
    train = box_images(3000, g)
    model = TinyDetector()
    opt = torch.optim.SGD(model.parameters(), base_lr, momentum=0.9, weight_decay=1e-4)
    sched = warmup_multistep(opt, 100, [700, 900])
    return fit(model, opt, train, det_loss, steps=max_iter, batch_size=16, seed=seed, sched=sched,
               lr_spikes=lr_spikes, stop_on_nonfinite=True)


DETECTOR = "tiny one-object detector: CNN backbone + class head (CE) + box head (smooth L1) on 16x16 images"


@run("detectron2", "detector_sgd_warmup_multistep")
def d2_detector_healthy(out, run_dir):
    h = _detector_run(23, 0.02)
    files, _ = write_detectron2(run_dir, h, 1000)
    return entry(files, out, DETECTOR, "SGD momentum 0.9 base_lr 0.02, WarmupMultiStepLR (warmup 100, x0.1 at 700, 900)",
                 "every 20 iterations (medians of 20)", [],
                 "Healthy: losses fall steadily; the LR steps show as small further drops.", x="iteration")


@run("detectron2", "detector_lr_spikes")
def d2_detector_lr_spikes(out, run_dir):
    ks = [300, 600]
    h = _detector_run(24, 0.02, lr_spikes={k: 20 for k in ks})
    files, w = write_detectron2(run_dir, h, 1000)
    return entry(files, out, DETECTOR, "SGD momentum 0.9 base_lr 0.02, WarmupMultiStepLR", "every 20 iterations (medians of 20)",
                 [{"category": "spike", "metric": "total_loss", "step": spike_point(w, "total_loss", k, 40), "tolerance": 20}
                  for k in ks],
                 f"Two one-iteration LR spikes (x20) at iterations {ks}; momentum carries the bad update over "
                 "several iterations, the losses jump and recover over ~50-100 iterations. detectron2 writes "
                 "20-iteration medians, so a spike shows only because it lasts; expect steps are the logged "
                 "iterations where it shows.", x="iteration")


@run("detectron2", "detector_tiny_lr_stall")
def d2_detector_tiny_lr_stall(out, run_dir):
    h = _detector_run(25, 2e-5)
    files, _ = write_detectron2(run_dir, h, 1000)
    return entry(files, out, DETECTOR, "SGD momentum 0.9 base_lr 2e-5 (1000x too small), WarmupMultiStepLR",
                 "every 20 iterations (medians of 20)",
                 [{"category": "stall", "metric": "total_loss", "step_start": 19}],
                 "LR far too small: total_loss stays within a few % of its initial value for all 1000 iterations.",
                 x="iteration")


# --------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)), help="where to write (default: beside this script)")
    ap.add_argument("--only", action="append", help="only this run: its folder name or format/name; may repeat")
    ap.add_argument("--list", action="store_true", help="list the runs and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(RUNS))
        return 0
    keys = list(RUNS)
    if args.only:  # a run's folder name, or format/name
        keys = [k for k in RUNS if k in args.only or k.split("/")[1] in args.only]
        missing = [n for n in args.only if not any(n in (k, k.split("/")[1]) for k in keys)]
        if missing:
            ap.error(f"unknown run(s) {missing}; see --list")

    torch.set_num_threads(1)  # determinism and a fair time budget
    torch.use_deterministic_algorithms(True)
    manifest_path = os.path.join(args.out, "manifest.json")
    manifest = {"runs": {}}
    if args.only and os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    t_all = time.perf_counter()
    for key in keys:
        t0 = time.perf_counter()
        e = RUNS[key](args.out, os.path.join(args.out, key))
        manifest["runs"][key] = {"format": key.split("/")[0], **e}
        print(f"{key}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    order = list(RUNS)
    manifest["runs"] = {k: manifest["runs"][k] for k in sorted(manifest["runs"], key=lambda k: order.index(k) if k in order else len(order))}
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2, allow_nan=False)
        f.write("\n")
    print(f"total {time.perf_counter() - t_all:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
