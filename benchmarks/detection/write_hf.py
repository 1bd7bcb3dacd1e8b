"""Hugging Face Trainer: a tiny GPT-2 built from a config (vocabulary 16, 2 layers, never
downloaded) on an order-2 Markov language, or a small regression network, trained by
transformers.Trainer with its own logging: trainer_state.json (trainer.save_state(), the
`log_history` of logging_steps means, eval_loss, learning_rate, grad_norm) and its TensorBoard
events (report_to="tensorboard", under output_dir/runs/). The schedule is a torch scheduler given
to the Trainer; a one-step LR jump comes from a TrainerCallback; a NaN from one corrupted record
of the data set, found by the Trainer's own shuffled sampler at a step of its choosing.
logging_nan_inf_filter is left at its default (on) in most runs: a NaN step's loss is then logged
as the mean of the finite ones, or 0.0, while grad_norm shows NaN."""

from __future__ import annotations

import logging
import math
import random

import torch

from detection import tasks

VOCAB, LENGTH = 16, 16


class Records(torch.utils.data.Dataset):
    def __init__(self, **columns):
        self.columns = columns

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, index):
        return {name: column[index] for name, column in self.columns.items()}


class Regressor(torch.nn.Module):
    """tasks' regression MLP with the Trainer's calling convention."""

    def __init__(self):
        super().__init__()
        self.net = tasks.model("regression")

    def forward(self, x, labels=None):
        prediction = self.net(x)
        loss = None if labels is None else torch.nn.functional.mse_loss(prediction, labels)
        return {"loss": loss, "logits": prediction}


def write(plan, run_dir):
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    rng = random.Random(plan.seed * 7 + 3)
    transformers.set_seed(plan.seed)
    g = torch.Generator().manual_seed(plan.seed)
    if plan.family == "transformer":
        chain = tasks.ms.markov_chain(VOCAB, g)
        tokens = tasks.ms.markov_tokens(plan.n_train, LENGTH, chain, g)
        val_tokens = tasks.ms.markov_tokens(256, LENGTH, chain, g)
        train, val = Records(input_ids=tokens, labels=tokens), Records(input_ids=val_tokens, labels=val_tokens)
        net = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=32, n_layer=2, n_head=2,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    else:
        (x, y), (xv, yv) = tasks.data("regression", plan.n_train, 256, g)
        if plan.scenario == "nan_data":  # one record with a missing value that no one imputed
            x[int(torch.randint(len(x), (1,), generator=g))] = math.nan
        train, val = Records(x=x, labels=y), Records(x=xv, labels=yv)
        net = Regressor()
    opt = tasks.optimizer(plan.optimizer, net.parameters(), plan.lr, plan.momentum)
    sched = tasks.scheduler(opt, plan.schedule, plan.steps, plan.sched_params)
    if sched is None or isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)  # the Trainer steps it every step
    events = {int(k): v for k, v in plan.events.items() if v[0] == "lr"}

    class LRJump(TrainerCallback):
        """A one-step LR jump: that update only uses factor x the scheduled LR."""

        scheduled = None

        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            if state.global_step in events:
                self.scheduled = [group["lr"] for group in opt.param_groups]
                for group in opt.param_groups:
                    group["lr"] *= events[state.global_step][1]

        def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            if self.scheduled is not None:
                for group, lr in zip(opt.param_groups, self.scheduled):
                    group["lr"] = lr
                self.scheduled = None

    log_every = 1 if plan.cadence == "step" else plan.log_every
    args = TrainingArguments(output_dir=str(run_dir), max_steps=plan.steps, per_device_train_batch_size=plan.batch,
                             per_device_eval_batch_size=256, logging_steps=log_every, eval_strategy="steps",
                             eval_steps=plan.eval_every, save_strategy="no", report_to=["tensorboard"],
                             max_grad_norm=plan.clip or 0.0, seed=plan.seed, use_cpu=True, disable_tqdm=True,
                             dataloader_num_workers=0, logging_nan_inf_filter=rng.random() < 0.75)
    trainer = Trainer(model=net, args=args, train_dataset=train, eval_dataset=val, optimizers=(opt, sched),
                      callbacks=[LRJump()])
    trainer.remove_callback(PrinterCallback)  # it prints every log line when tqdm is off
    trainer.train()
    trainer.save_state()
    return ({"train_loss": ["loss", "train/loss"], "val_loss": ["eval_loss", "eval/loss"],
             "lr": ["learning_rate", "train/learning_rate"], "grad_norm": ["grad_norm", "train/grad_norm"]},
            {"unit": "step", "per_epoch": plan.steps_per_epoch, "offset": 1})
