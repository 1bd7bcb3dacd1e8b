"""The training callbacks, on real tiny trainings on CPU: a healthy run is never stopped, a run that goes
NaN is stopped within a few logging steps, and a finding names the step the framework logged it at."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from lrdiag.errors import LrdiagError

os.environ.setdefault("KERAS_BACKEND", "torch")


def _data(n: int = 256, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1)) + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def _first_nonfinite(steps, values):
    bad = [step for step, value in zip(steps, values) if not math.isfinite(value)]
    return bad[0] if bad else None


# --- Lightning ---------------------------------------------------------------------------------------

def _lightning_run(tmp_path, blow_up_at: int | None, max_steps: int = 300):
    pl = pytest.importorskip("pytorch_lightning")
    torch = pytest.importorskip("torch")
    from pytorch_lightning.loggers import CSVLogger

    from lrdiag.integrations.lightning import LrdiagCallback

    class Regression(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(8, 1)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.05)
            # From `blow_up_at` on the LR doubles each step: the weights explode, then the loss is inf, then NaN.
            grow = (lambda step: 1.0 if blow_up_at is None or step < blow_up_at else 2.0 ** (step - blow_up_at))
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, grow), "interval": "step"}}

    torch.manual_seed(0)
    x, y = _data()
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=16,
                                        shuffle=True)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x[:64]), torch.tensor(y[:64])),
                                      batch_size=64)
    callback = LrdiagCallback(stop_on="error", every_n_steps=50)
    trainer = pl.Trainer(max_steps=max_steps, log_every_n_steps=5, val_check_interval=40, check_val_every_n_epoch=None,
                         logger=CSVLogger(str(tmp_path)), callbacks=[callback], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1)
    trainer.fit(Regression(), train, val)
    return trainer, callback


def test_lightning_healthy_run_is_never_stopped_and_its_findings_are_analyzes_on_the_csv_log(tmp_path):
    trainer, callback = _lightning_run(tmp_path, blow_up_at=None)
    assert trainer.global_step == 300
    assert not [f for f in callback.findings if f.severity == "error"]
    written = json.loads((tmp_path / "lightning_logs" / "version_0" / "lrdiag_findings.json").read_text())
    assert written["runs"][0]["metrics"]["train_loss"]["points"] == 60  # every 5th of 300 steps
    from lrdiag.config import project_setup
    from lrdiag.pipeline import Options, analyze

    _, engine, roles = project_setup(None)
    doc = analyze([str(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")], Options(engine=engine, roles=roles),
                  jobs=1, progress=False)
    assert [f.to_dict() for f in callback.findings] == doc["runs"][0]["findings"]


def test_lightning_run_that_goes_nan_is_stopped_at_the_logged_step(tmp_path):
    import pandas as pd

    trainer, callback = _lightning_run(tmp_path, blow_up_at=100)
    log = pd.read_csv(tmp_path / "lightning_logs" / "version_0" / "metrics.csv", keep_default_na=False, dtype=str)
    logged = [(int(step), float(value)) for step, value in zip(log["step"], log["train_loss"]) if value != ""]
    first_bad = _first_nonfinite(*zip(*logged))
    assert first_bad is not None and callback.monitor.stop_finding is not None
    nonfinite = [f for f in callback.findings if f.rule == "LRD105" and f.metric == "train_loss"]
    assert nonfinite and nonfinite[0].step_start == first_bad  # the step Lightning logged the first inf/NaN at
    assert trainer.global_step < 300
    assert trainer.global_step - first_bad <= 3 * 5  # stopped within a few logging steps


# --- Hugging Face Trainer ----------------------------------------------------------------------------

def _hf_run(tmp_path, blow_up_at: int | None, max_steps: int = 120):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    torch = pytest.importorskip("torch")
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from lrdiag.integrations.transformers import LrdiagCallback

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    rng = np.random.default_rng(0)
    # A learnable language: each sequence counts up from a random start, modulo the vocabulary.
    starts = rng.integers(0, 16, size=256)
    ids = [[int(s + i) % 16 for i in range(12)] for s in starts]
    train = [{"input_ids": torch.tensor(seq), "labels": torch.tensor(seq)} for seq in ids]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    # From `blow_up_at` on the LR doubles each step (no clipping): the weights explode, the logits overflow.
    grow = (lambda step: 1.0 if blow_up_at is None or step < blow_up_at else 4.0 ** (step - blow_up_at))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, grow)
    callback = LrdiagCallback(stop_on="error", every_n_steps=50)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=max_steps, per_device_train_batch_size=16,
                             logging_steps=2, max_grad_norm=0.0, report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=train, optimizers=(optimizer, scheduler),
                      callbacks=[callback])
    trainer.train()
    return trainer, callback


def test_hf_healthy_run_is_never_stopped_and_its_findings_are_analyzes_on_its_trainer_state(tmp_path):
    trainer, callback = _hf_run(tmp_path, blow_up_at=None)
    assert trainer.state.global_step == 120
    assert not [f for f in callback.findings if f.severity == "error"]
    assert (tmp_path / "out" / "lrdiag_findings.json").exists()
    (tmp_path / "state").mkdir()
    trainer.state.save_to_json(str(tmp_path / "state" / "trainer_state.json"))
    from lrdiag.config import project_setup
    from lrdiag.pipeline import Options, analyze

    _, engine, roles = project_setup(None)
    doc = analyze([str(tmp_path / "state" / "trainer_state.json")], Options(engine=engine, roles=roles), jobs=1,
                  progress=False)
    assert [f.to_dict() for f in callback.findings] == doc["runs"][0]["findings"]


def test_hf_run_that_goes_nan_is_stopped_though_its_logged_loss_is_filtered(tmp_path):
    trainer, callback = _hf_run(tmp_path, blow_up_at=60)
    history = [entry for entry in trainer.state.log_history if "grad_norm" in entry]
    first_bad = _first_nonfinite([e["step"] for e in history], [e["grad_norm"] for e in history])
    assert first_bad is not None
    at_first_bad = next(e for e in history if e["step"] == first_bad)
    assert math.isfinite(at_first_bad["loss"])  # logging_nan_inf_filter hid the NaN loss: grad_norm shows it
    stop = callback.monitor.stop_finding
    assert stop is not None and stop.severity == "error"
    assert trainer.state.global_step < 120
    assert trainer.state.global_step - first_bad <= 3 * 2  # within a few logging steps
    grad = [f for f in callback.findings if f.rule == "LRD105" and f.metric == "grad_norm"]
    assert grad and grad[0].step_start == first_bad


# --- Keras 3 (torch backend) -------------------------------------------------------------------------

def _keras_run(tmp_path, blow_up_at: int | None, epochs: int = 40):
    pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("Keras runs on another backend in this session")
    from lrdiag.integrations.keras import LrdiagCallback

    keras.utils.set_random_seed(0)
    x, y = _data()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    # From `blow_up_at` on, the LR grows 100x an epoch: the weights explode within an epoch or two.
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch: 0.01 if blow_up_at is None or epoch < blow_up_at else 0.01 * 100.0 ** (epoch - blow_up_at + 1))
    callback = LrdiagCallback(stop_on="error", findings_file=tmp_path / "lrdiag_findings.json")
    csv = keras.callbacks.CSVLogger(str(tmp_path / "log" / "training.log"))
    (tmp_path / "log").mkdir()
    history = model.fit(x, y, validation_split=0.25, epochs=epochs, batch_size=16, verbose=0,
                        callbacks=[schedule, callback, csv])
    return history, callback


def test_keras_healthy_run_is_never_stopped_and_its_findings_are_analyzes_on_its_csv_log(tmp_path):
    history, callback = _keras_run(tmp_path, blow_up_at=None)
    assert len(history.history["loss"]) == 40
    assert not [f for f in callback.findings if f.severity == "error"]
    assert (tmp_path / "lrdiag_findings.json").exists()
    from lrdiag.config import project_setup
    from lrdiag.pipeline import Options, analyze

    _, engine, roles = project_setup(None)
    doc = analyze([str(tmp_path / "log" / "training.log")], Options(engine=engine, roles=roles), jobs=1, progress=False)
    assert [f.to_dict() for f in callback.findings] == doc["runs"][0]["findings"]


def test_keras_run_that_goes_nan_is_stopped_in_the_epoch_it_went_nan(tmp_path):
    history, callback = _keras_run(tmp_path, blow_up_at=10)
    losses = history.history["loss"]
    first_bad = _first_nonfinite(range(len(losses)), losses)
    assert first_bad is not None
    assert len(losses) == first_bad + 1  # stopped in that epoch
    stop = callback.monitor.stop_finding
    assert stop is not None and stop.severity == "error"
    nonfinite = [f for f in callback.findings if f.rule == "LRD105" and f.metric == "loss"]
    assert nonfinite and nonfinite[0].step_start == first_bad


@pytest.mark.parametrize("old, new, framework", [("lightning", "lightning", "pytorch_lightning"),
                                                 ("hf", "transformers", "transformers"), ("keras", "keras", "keras")])
def test_the_callbacks_former_modules_give_the_integrations_callback(old, new, framework):
    import importlib

    pytest.importorskip(framework)
    moved = importlib.import_module(f"lrdiag.integrations.{new}").LrdiagCallback
    assert importlib.import_module(f"lrdiag.callbacks.{old}").LrdiagCallback is moved
