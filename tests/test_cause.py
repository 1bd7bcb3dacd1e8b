"""Cause before cure: every instability finding names its likely cause (LR, data, numeric) with
facts that quote logged values, on constructed curves and on the sample logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from curves import curve
from lrdiag.cli import cli
from lrdiag.detect.cause import assign, steps_per_epoch
from lrdiag.detect.engine import Engine
from lrdiag.detect.rulefile import builtin_rules_dir, load_rules
from lrdiag.ingest.discover import find_runs
from lrdiag.ingest.runs import read_run
from lrdiag.series.model import Run, Series
from lrdiag.series.roles import assign_roles

SAMPLES = Path(__file__).parent.parent / "sample_logs"


@pytest.fixture(scope="module")
def engine():
    return Engine(load_rules([builtin_rules_dir()]))


def make_run(metrics: dict, source: str = "test") -> Run:
    series = {}
    for tag, spec in metrics.items():
        values = curve(spec["curve"], spec.get("noise", 0.0))
        steps = spec.get("steps", np.arange(values.size) * spec.get("every", 1))
        series[tag] = Series(tag, steps, values)
    assign_roles(series)
    return Run("constructed", source, [], series)


def assert_facts_quote_logged_values(finding, run: Run) -> None:
    """Each fact's points are values logged at the steps they name, and the sentence quotes them."""
    assert finding.evidence["cause"] in ("lr", "data", "numeric", "unknown")
    for fact in finding.evidence["cause_evidence"]:
        assert fact["says"] in ("lr", "data", "numeric"), fact
        for point in fact["points"]:
            series = run.series[point["metric"]]
            at = np.flatnonzero(series.steps == point["step"])
            assert at.size, f"{fact['fact']!r}: step {point['step']} of {point['metric']} was never logged"
            logged = float(series.values[at[-1]])
            assert f"step {point['step']}" in fact["fact"]
            if isinstance(point["value"], str):  # JSON has no NaN/Inf: written as the output model writes them
                assert not np.isfinite(logged) and point["value"] == str(logged).lower(), fact["fact"]
                continue
            assert point["value"] == pytest.approx(logged), fact["fact"]
            assert f"{point['value']:.4g}" in fact["fact"], fact["fact"]


def causes(engine, run: Run) -> dict:
    findings = engine.run(run)
    for finding in findings:
        if "cause" in finding.evidence:
            assert_facts_quote_logged_values(finding, run)
    return {(f.rule, f.metric, f.evidence.get("step", f.step_start)): f.evidence.get("cause") for f in findings}


# --- constructed curves -------------------------------------------------------------------


def test_one_step_spike_back_at_once_under_a_decaying_lr_is_the_data(engine):
    # A warmup to 0.001 by step 50, then linear decay: at step 400 the LR is 0.00063 and falling.
    run = make_run({"train/loss": {"curve": "1.0*0.995x400 5.0 0.13*0.9995x599", "noise": 0.03},
                    "lr": {"curve": "0.00002+0.00002x50 0.001-0.000001x950"}})
    [spike] = [f for f in engine.run(run) if f.rule == "LRD101"]
    assert spike.evidence["step"] == 400 and spike.evidence["cause"] == "data"
    facts = " ".join(f["fact"] for f in spike.evidence["cause_evidence"])
    assert "a single step" in facts and "back at the next point" in facts
    assert "the LR was calm (decaying" in facts and "0.00065 at step 400" in facts
    assert_facts_quote_logged_values(spike, run)


def test_spike_slow_to_recover_at_the_end_of_warmup_is_the_lr(engine):
    run = make_run({"train/loss": {"curve": "1.0*0.995x100 5.0 3.0 2.0 1.2 0.8 0.6*0.999x395", "noise": 0.03},
                    "lr": {"curve": "0.0001+0.0001x99 0.01-0.00001x401"}})
    [spike] = [f for f in engine.run(run) if f.rule == "LRD101"]
    assert spike.evidence["cause"] == "lr"
    facts = [f["fact"] for f in spike.evidence["cause_evidence"]]
    assert any(fact.startswith("just after the warmup ended") for fact in facts)
    assert any(fact.startswith("slow to recover") for fact in facts)
    assert_facts_quote_logged_values(spike, run)


def test_nan_straight_from_the_usual_level_is_numeric(engine):
    run = make_run({"train/loss": {"curve": "1.0*0.99x50 nanx10", "noise": 0.02}, "lr": {"curve": "0.01x60"}})
    assert causes(engine, run)[("LRD105", "train/loss", 50)] == "numeric"


def test_nan_after_a_climb_under_a_rising_lr_is_the_lr(engine):
    run = make_run({"train/loss": {"curve": "1.0*0.99x50 0.6*1.3x10 nanx10", "noise": 0.02},
                    "lr": {"curve": "0.01*1.03x70"}})
    assert causes(engine, run)[("LRD105", "train/loss", 60)] == "lr"


def test_transformers_nan_filter_loss_logged_as_zero_while_grad_norm_is_nan(engine):
    # logging_nan_inf_filter=True (the default): the NaN steps' loss is logged as 0.0, grad_norm as NaN.
    run = make_run({"loss": {"curve": "1.0*0.99x30 0.0x10", "noise": 0.02, "every": 10},
                    "grad_norm": {"curve": "0.5x30 nanx10", "noise": 0.1, "every": 10},
                    "learning_rate": {"curve": "0.001x40", "every": 10}})
    [finding] = [f for f in engine.run(run) if f.rule == "LRD105" and f.metric == "loss"]
    assert finding.evidence["step"] == 300 and finding.evidence["count"] == 10
    assert "at step 300 it was logged as 0 while grad_norm was nan" in finding.message
    assert finding.evidence["logged_as"][0] == {"step": 300, "loss": 0.0}
    assert finding.evidence["cause"] == "numeric"
    assert_facts_quote_logged_values(finding, run)
    assert run.series["loss"].values[-1] == 0.0  # the logged data is left as it was


def test_spikes_at_the_same_position_in_every_epoch_are_the_data(engine):
    # 100 steps an epoch (train_loss_epoch logged at each epoch's last step); a bad sample 37 steps in.
    values = curve("0.5x600", 0.05)
    values[[137, 237, 337, 437]] = 5.0
    epoch_means = curve("0.55x6", 0.01)
    run = Run("constructed", "test", [], {
        "train_loss_step": Series("train_loss_step", np.arange(600), values),
        "train_loss_epoch": Series("train_loss_epoch", np.arange(99, 600, 100), epoch_means),
        "lr-SGD": Series("lr-SGD", np.arange(600), np.full(600, 0.02))})
    assign_roles(run.series)
    assert steps_per_epoch(run) == 100
    found = causes(engine, run)
    assert [found[("LRD101", "train_loss_step", step)] for step in (137, 237, 337, 437)] == ["data"] * 4
    spike = next(f for f in engine.run(run) if f.rule == "LRD101")
    assert any("same position in each epoch of 100 steps" in f["fact"] for f in spike.evidence["cause_evidence"])


def test_ring_of_a_few_points_under_a_held_lr_is_the_lr(engine):
    steps = np.arange(600)
    values = np.exp(-steps / 400) * (1 + 0.3 * np.cos(2 * np.pi * steps / 6))
    run = Run("constructed", "test", [], {"loss": Series("loss", steps, values),
                                          "lr": Series("lr", steps, np.full(600, 0.5))})
    assign_roles(run.series)
    oscillations = [f for f in engine.run(run) if f.category == "oscillation"]
    assert oscillations and all(f.evidence["cause"] == "lr" for f in oscillations)


def test_grad_norm_rising_before_the_spike_is_an_lr_fact(engine):
    run = make_run({"train/loss": {"curve": "0.5x200 6.0 4.0 2.5 1.5 0.9 0.6x195", "noise": 0.03},
                    "grad_norm": {"curve": "1.0x190 3.0 4.0 5.0 6.0 7.0 8.0 9.0 10.0 12.0 14.0 30.0 10.0x199",
                                  "noise": 0.05},
                    "lr": {"curve": "0.01x400"}})
    [spike] = [f for f in engine.run(run) if f.rule == "LRD101"]
    assert spike.evidence["cause"] == "lr"
    assert any(f["fact"].startswith("grad_norm rose before it") for f in spike.evidence["cause_evidence"])
    assert_facts_quote_logged_values(spike, run)


def test_findings_that_already_carry_a_cause_keep_it(engine):
    run = make_run({"train/loss": {"curve": "1.0*0.99x50 nanx10"}, "lr": {"curve": "0.01x60"}})
    findings = engine.run(run)
    assert assign(findings, run) == findings
    assert [f.evidence["cause"] for f in assign(findings, run)] == [f.evidence["cause"] for f in findings]


# --- the sample logs -----------------------------------------------------------------------

# (run, rule, metric, step) -> cause, as their generator built them (sample_logs/manifest.json).
SAMPLE_CAUSES = {
    ("tensorboard/mlp_sgd_bad_batch_spike", "LRD101", "train/loss", 700): "data",  # one corrupted batch
    ("lightning_csv/mlp_sgd_lr_spikes", "LRD101", "train_loss_step", 529): "lr",  # one-step LR spikes x100
    ("lightning_csv/mlp_sgd_lr_spikes", "LRD101", "train_loss_step", 1109): "lr",
    ("lightning_csv/mlp_sgd_lr_spikes", "LRD101", "train_loss_step", 1609): "lr",
    ("lightning_csv/mlp_sgd_lr_spikes", "LRD101", "train_loss_epoch", 599): "lr",  # the epoch mean of step 529's
    ("detectron2/detector_lr_spikes", "LRD101", "total_loss", 319): "lr",
    ("detectron2/detector_lr_spikes", "LRD101", "total_loss", 619): "lr",
    ("trainer_state/lstm_adamw_lr_spike", "LRD101", "loss", 510): "lr",
    ("example_spiky", "LRD101", "train/loss", 2): "lr",  # Adam at 0.15 from step 0
    ("tensorboard/mlp_sgd_warmup_nan", "LRD105", "train/loss", 198): "lr",
    ("keras_csv/mlp_sgd_lr_growth_nan", "LRD105", "loss", 12): "lr",
    ("trainer_state/lstm_sgd_no_clip_nan", "LRD105", "loss", 120): "lr",
    ("trainer_state/lstm_sgd_clipped_explosion", "LRD106", "loss", 90): "lr",
    ("lightning_csv/cnn_sgd_steplr_stall", "LRD103", "train_loss_step", 159): "lr",
}


@pytest.mark.parametrize("key", list(SAMPLE_CAUSES), ids=["/".join(map(str, key)) for key in SAMPLE_CAUSES])
def test_sample_logs_get_the_cause_they_were_built_with(engine, key):
    name, rule, metric, step = key
    run = read_run(find_runs([str(SAMPLES / name)])[0])
    found = causes(engine, run)
    assert found.get((rule, metric, step)) == SAMPLE_CAUSES[key], found


@pytest.mark.parametrize("name", ["tensorboard/mlp_adam_cyclic_lr_oscillation",
                                  "lightning_csv/mlp_adam_cyclic_lr_oscillation"])
def test_a_loss_swinging_with_a_cyclic_lr_is_the_lr(engine, name):
    run = read_run(find_runs([str(SAMPLES / name)])[0])
    swings = [f for f in engine.run(run) if f.category == "oscillation"]
    assert swings and {f.evidence["cause"] for f in swings} == {"lr"}
    for finding in swings:
        assert_facts_quote_logged_values(finding, run)


def test_every_sample_finding_of_an_instability_has_a_cause_with_logged_quotes(engine):
    for spec in find_runs([str(SAMPLES)]):
        run = read_run(spec)
        for finding in engine.run(run):
            if finding.category in ("spike", "oscillation", "explosion", "nonfinite", "stall"):
                assert "cause" in finding.evidence, (run.name, finding.rule)
                assert_facts_quote_logged_values(finding, run)


def test_a_one_point_validation_spike_is_not_blamed_on_a_batch(engine):
    # The validation set is the same at every evaluation: a point off there is the weights', not the data's.
    run = make_run({"loss": {"curve": "1.0*0.99x400", "noise": 0.02},
                    "val_loss": {"curve": "1.0*0.96x20 5.0 0.42*0.99x19", "noise": 0.01, "every": 10},
                    "lr": {"curve": "0.01x400"}})
    spikes = [f for f in engine.run(run) if f.rule == "LRD101" and f.metric == "val_loss"]
    assert spikes and all(f.evidence["cause"] != "data" for f in spikes)
    assert not any(fact["fact"].startswith("a single step") for f in spikes for fact in f.evidence["cause_evidence"])


def test_an_epoch_mean_takes_the_cause_of_its_own_loss_at_the_step_level(engine):
    # Two losses spike in one epoch: the epoch mean of `dynamics_loss` follows `dynamics_loss_step`, not the
    # nearer spike of `other_loss_step`.
    dynamics, other = curve("0.5x600", 0.05), curve("0.5x600", 0.05, seed=1)
    dynamics[210] = 50.0  # one bad batch: back at once
    other[240:243] = [50.0, 20.0, 10.0]  # an update that threw the weights off: slow to recover
    means = curve("0.55x12", 0.01)
    means[4] = 5.0  # the epoch of steps 200-249
    run = Run("constructed", "test", [], {
        "dynamics_loss_step": Series("dynamics_loss_step", np.arange(600), dynamics),
        "other_loss_step": Series("other_loss_step", np.arange(600), other),
        "dynamics_loss_epoch": Series("dynamics_loss_epoch", np.arange(49, 600, 50), means),
        "lr": Series("lr", np.arange(600), np.full(600, 0.02))})
    assign_roles(run.series)
    found = causes(engine, run)
    assert found[("LRD101", "dynamics_loss_step", 210)] == "data"
    assert found[("LRD101", "other_loss_step", 240)] == "lr"
    epoch = [f for f in engine.run(run) if f.metric == "dynamics_loss_epoch" and f.rule == "LRD101"]
    assert epoch and epoch[0].evidence["cause"] == "data"
    assert "the same event as LRD101 on dynamics_loss_step" in epoch[0].evidence["cause_evidence"][-1]["fact"]


def test_a_nan_grad_norm_quoted_as_evidence_keeps_the_json_output_valid(tmp_path):
    # A Trainer log with logging_nan_inf_filter on: from step 310 the loss is logged as 0.0, grad_norm as NaN.
    history = [{"epoch": i / 10, "step": 10 * i, "learning_rate": 0.001,
                "grad_norm": float("nan") if i > 30 else 0.5 + 0.01 * (i % 3),
                "loss": 0.0 if i > 30 else round(0.99 ** i + 0.001 * (i % 5), 4)} for i in range(1, 41)]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 400, "log_history": history}))
    for command in ("analyze", "recommend"):
        result = CliRunner().invoke(cli, [command, str(tmp_path), "--format", "json"])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        doc = json.loads(result.output)
        [loss] = [f for f in doc["runs"][0]["findings"] if f["metric"] == "loss"]
        assert loss["step_start"] == 310 and loss["evidence"]["cause"] == "numeric"
        assert "it was logged as 0 while grad_norm was nan" in loss["message"]
        grad_points = [p for fact in loss["evidence"]["cause_evidence"] for p in fact["points"]
                       if p["metric"] == "grad_norm"]
        assert grad_points == [{"metric": "grad_norm", "step": 310, "value": "nan"}]
