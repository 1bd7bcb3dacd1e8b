"""Plain PyTorch loop logged with torch.utils.tensorboard.SummaryWriter, as a training script does:
the batch loss every step, or the mean of the last N batch losses every N steps, or the epoch
mean once per epoch (x = epoch); validation loss (and accuracy) at each evaluation; the LR."""

from __future__ import annotations

import math
import random

import torch

from detection import tasks

TAG_STYLES = ({"loss": "train/loss", "val_loss": "val/loss", "lr": "lr", "acc": "val/acc", "grad_norm": "grad_norm"},
              {"loss": "Loss/train", "val_loss": "Loss/val", "lr": "learning_rate", "acc": "Accuracy/val",
               "grad_norm": "train/grad_norm"},
              {"loss": "loss", "val_loss": "val_loss", "lr": "lr", "acc": "val_accuracy", "grad_norm": "grad_norm"})


def build(plan):
    """(net, train, val, loss_fn, optimizer, scheduler), seeded by the plan."""
    torch.manual_seed(plan.seed)
    g = torch.Generator().manual_seed(plan.seed)
    train, val = tasks.data(plan.family, plan.n_train, 256, g, plan.label_noise, wide=plan.big)
    net = tasks.model(plan.family, big=plan.big)
    opt = tasks.optimizer(plan.optimizer, net.parameters(), plan.lr, plan.momentum)
    return net, train, val, tasks.loss_fn(plan.family), opt, tasks.scheduler(opt, plan.schedule, plan.steps, plan.sched_params)


def steps(plan, net, train, val, loss_fn, opt, sched):
    """Train, yielding (step, batch loss, LR used, grad norm, evaluation dict or None)."""
    x_all, y_all = train
    per_epoch = plan.steps_per_epoch
    g = torch.Generator().manual_seed(plan.seed + 1)
    events = {int(k): v for k, v in plan.events.items()}
    params = [p for p in net.parameters() if p.requires_grad]
    perm = None
    net.train()
    for step in range(plan.steps):
        i = step % per_epoch
        if i == 0:
            perm = torch.randperm(len(y_all), generator=g)
        idx = perm[i * plan.batch:(i + 1) * plan.batch]
        xb, yb = x_all[idx], y_all[idx]
        event = events.get(step)
        if event and event[0] in ("corrupt", "nan"):
            xb, yb = tasks.apply_event(event, xb, yb)
        scheduled = [group["lr"] for group in opt.param_groups]
        if event and event[0] == "lr":
            for group in opt.param_groups:
                group["lr"] *= event[1]
        loss, _ = loss_fn(net, xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, plan.clip or math.inf)
        lr_used = opt.param_groups[0]["lr"]
        opt.step()
        for group, lr in zip(opt.param_groups, scheduled):
            group["lr"] = lr
        evaluation = None
        if plan.eval_every and (step + 1) % plan.eval_every == 0:
            evaluation = tasks.evaluate(net, plan.family, val)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if evaluation is not None:
                sched.step(evaluation["loss"])
        elif sched is not None:
            sched.step()
        yield step, loss.item(), lr_used, norm.item(), evaluation


def write(plan, run_dir):
    """Train and log; returns the tags by role and how steps map to the logged x."""
    from torch.utils.tensorboard import SummaryWriter

    rng = random.Random(plan.seed * 7 + 1)
    tags = dict(rng.choice(TAG_STYLES))
    log_grad_norm = rng.random() < 0.5
    writer = SummaryWriter(str(run_dir))
    built = build(plan)
    per_epoch, pending = plan.steps_per_epoch, []
    for step, loss, lr, norm, evaluation in steps(plan, *built):
        pending.append(loss)
        x = step // per_epoch if plan.cadence == "epoch" else step
        if (plan.cadence == "step" or (plan.cadence == "every" and len(pending) == plan.log_every)
                or (plan.cadence == "epoch" and (step + 1) % per_epoch == 0)):
            writer.add_scalar(tags["loss"], sum(pending) / len(pending), x)
            writer.add_scalar(tags["lr"], lr, x)
            if log_grad_norm:
                writer.add_scalar(tags["grad_norm"], norm, x)
            pending = []
        if evaluation is not None:
            writer.add_scalar(tags["val_loss"], evaluation["loss"], x)
            if "acc" in evaluation:
                writer.add_scalar(tags["acc"], evaluation["acc"], x)
    writer.close()
    return {"train_loss": [tags["loss"]], "val_loss": [tags["val_loss"]], "lr": [tags["lr"]],
            "grad_norm": [tags["grad_norm"]] if log_grad_norm else []}, _x_of(plan)


def _x_of(plan):
    """Logged x of loop step s: {'unit': 'step'|'epoch', 'per_epoch': n, 'offset': 0}."""
    return {"unit": "epoch" if plan.cadence == "epoch" else "step", "per_epoch": plan.steps_per_epoch, "offset": 0}
