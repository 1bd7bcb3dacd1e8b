"""Keras 3 on the torch backend: a Keras model trained by model.fit and logged by
keras.callbacks.CSVLogger (one row per epoch: the epoch means of the training loss and metrics,
the validation ones, the LR), the way a Keras user logs. The schedule is a LearningRateScheduler
(per epoch) or ReduceLROnPlateau; a corrupted batch or a NaN comes from the PyDataset feeding fit."""

from __future__ import annotations

import os

import numpy as np
import torch

from detection import tasks

os.environ.setdefault("KERAS_BACKEND", "torch")


def _model(keras, family, big):
    layers = keras.layers
    width = 256 if big else 64
    dense = [layers.Dense(width, activation="relu"), layers.Dense(width, activation="relu")]
    stacks = {"mlp": [layers.Input((2 if big else 10,)), *dense, layers.Dense(5)],
              "regression": [layers.Input((8,)), *dense, layers.Dense(1)],
              "logistic": [layers.Input((10,)), layers.Dense(5)],
              "lstm": [layers.Input((20, 1)), layers.LSTM(32), layers.Dense(1)],
              "cnn": [layers.Input((12, 12, 1)), layers.Conv2D(8, 3, padding="same", activation="relu"),
                      layers.MaxPooling2D(), layers.Conv2D(16, 3, padding="same", activation="relu"),
                      layers.MaxPooling2D(), layers.Flatten(), layers.Dense(32, activation="relu"), layers.Dense(4)]}
    return keras.Sequential(stacks[family])


def _numpy(family, part):
    x, y = (t.numpy() for t in part)
    if family == "cnn":
        x = np.transpose(x, (0, 2, 3, 1))  # channels last
    return x.astype("float32"), y.astype("int64" if family in tasks.CLASSES else "float32")


def write(plan, run_dir):
    import keras

    keras.utils.set_random_seed(plan.seed)
    g = torch.Generator().manual_seed(plan.seed)
    train, val = tasks.data(plan.family, plan.n_train, 256, g, plan.label_noise, wide=plan.big)
    (x, y), (xv, yv) = _numpy(plan.family, train), _numpy(plan.family, val)
    events = {int(k): v for k, v in plan.events.items()}
    per_epoch, epochs = plan.steps_per_epoch, plan.steps // plan.steps_per_epoch

    class Batches(keras.utils.PyDataset):
        """Shuffled batches, reshuffled every epoch; step k's batch corrupted when planned."""

        def __init__(self):
            super().__init__()
            self.set_epoch(0)

        def set_epoch(self, epoch):
            # Set from a callback's on_epoch_begin: PyDataset.on_epoch_end is not called once per epoch.
            rng = np.random.default_rng([plan.seed, epoch])
            rounds = -(-per_epoch * plan.batch // len(y))  # a small set is seen several times an epoch
            self.epoch, self.order = epoch, np.concatenate([rng.permutation(len(y)) for _ in range(rounds)])

        def __len__(self):
            return per_epoch

        def __getitem__(self, index):
            idx = self.order[index * plan.batch:(index + 1) * plan.batch]
            xb, yb = x[idx], y[idx]
            event = events.get(self.epoch * per_epoch + index)
            if event:
                xb, yb = (t.numpy() for t in tasks.apply_event(event, torch.from_numpy(xb), torch.from_numpy(yb)))
            return xb, yb


    classifier = plan.family in tasks.CLASSES
    net = _model(keras, plan.family, plan.big)
    options = {"learning_rate": plan.lr, **({"clipnorm": plan.clip} if plan.clip else {})}
    opt = {"sgd": lambda: keras.optimizers.SGD(**options),
           "momentum": lambda: keras.optimizers.SGD(momentum=plan.momentum, **options),
           "adam": lambda: keras.optimizers.Adam(**options),
           "adamw": lambda: keras.optimizers.AdamW(weight_decay=0.01, **options)}[plan.optimizer]()
    net.compile(optimizer=opt, metrics=["accuracy"] if classifier else ["mae"],
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True) if classifier else "mse")
    batches = Batches()
    callbacks = [keras.callbacks.CSVLogger(str(run_dir / "training.log")),
                 keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: batches.set_epoch(epoch))]
    if plan.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=1))
    elif plan.schedule != "constant":
        lrs = _per_step_lrs(plan)
        callbacks.append(keras.callbacks.LearningRateScheduler(lambda epoch, lr: float(lrs[epoch * per_epoch])))
    net.fit(batches, validation_data=(xv, yv), epochs=epochs, callbacks=callbacks, verbose=0)
    return ({"train_loss": ["loss"], "val_loss": ["val_loss"], "lr": ["learning_rate"], "grad_norm": []},
            {"unit": "epoch", "per_epoch": per_epoch, "offset": 0})


def _per_step_lrs(plan):
    """The torch schedule's LR at every step, replayed on a dummy optimizer."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], plan.lr)
    sched = tasks.scheduler(opt, plan.schedule, plan.steps, plan.sched_params)
    lrs = []
    for _ in range(plan.steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs
