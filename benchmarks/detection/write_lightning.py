"""Lightning: a LightningModule around the run's model, trained by pl.Trainer and logged by its
CSVLogger or TensorBoardLogger with a LearningRateMonitor, as users set them up:
self.log("train_loss", on_step=True, on_epoch=True) every `log_every_n_steps` batches (or
on_epoch only for per-epoch logging), self.log("val_loss") at each validation, the LR per step.
A corrupted batch or a NaN enters in training_step, a one-step LR jump in on_before_optimizer_step."""

from __future__ import annotations

import logging
import random

import torch

from detection import tasks
from detection.write_torch import build


def write(plan, run_dir):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    rng = random.Random(plan.seed * 7 + 2)
    pl.seed_everything(plan.seed, verbose=False)
    net, train, val, loss_fn, opt, sched = build(plan)
    events = {int(k): v for k, v in plan.events.items()}
    per_epoch_only = plan.cadence == "epoch"

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.scheduled = None

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            event = events.get(self.global_step)
            if event and event[0] in ("corrupt", "nan"):
                xb, yb = tasks.apply_event(event, xb, yb)
            loss, _ = loss_fn(self.net, xb, yb)
            self.log("train_loss", loss, on_step=not per_epoch_only, on_epoch=True)
            return loss

        def on_before_optimizer_step(self, optimizer):
            event = events.get(self.global_step)
            if event and event[0] == "lr":
                self.scheduled = [group["lr"] for group in optimizer.param_groups]
                for group in optimizer.param_groups:
                    group["lr"] *= event[1]

        def on_train_batch_end(self, outputs, batch, batch_idx):
            if self.scheduled is not None:
                for group, lr in zip(opt.param_groups, self.scheduled):
                    group["lr"] = lr
                self.scheduled = None

        def validation_step(self, batch, batch_idx):
            loss, extra = loss_fn(self.net, *batch)
            self.log("val_loss", loss)
            if "acc" in extra:
                self.log("val_acc", extra["acc"])

        def configure_optimizers(self):
            if sched is None:
                return opt
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "step",
                                                           "frequency": plan.eval_every, "strict": False}}
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    logger_cls = rng.choice((CSVLogger, TensorBoardLogger))
    logger = logger_cls(str(run_dir), name="lightning_logs", version=0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*train), batch_size=plan.batch, shuffle=True,
                                         drop_last=True, generator=torch.Generator().manual_seed(plan.seed + 1))
    val_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*val), batch_size=len(val[1]))
    trainer = pl.Trainer(max_steps=plan.steps, logger=logger, callbacks=[LearningRateMonitor(logging_interval="step")],
                         log_every_n_steps=1 if plan.cadence == "step" else plan.log_every,
                         val_check_interval=plan.eval_every, check_val_every_n_epoch=None,
                         gradient_clip_val=plan.clip, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", devices=1,
                         deterministic=True)
    trainer.fit(Module(), loader, val_loader)
    train_tags = ["train_loss"] if per_epoch_only else ["train_loss_step", "train_loss_epoch"]
    lr_tags = [f"lr-{type(opt).__name__}"]
    return ({"train_loss": train_tags, "val_loss": ["val_loss"], "lr": lr_tags, "grad_norm": []},
            {"unit": "step", "per_epoch": plan.steps_per_epoch, "offset": 0})
