"""The detection benchmark's generator labels what it built, and its scorer counts right."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from detection.score import score_run, tally, tolerance  # noqa: E402

METRICS = {"train/loss": {"role": "train_loss", "points": 301, "first_step": 0, "last_step": 300},
           "val/loss": {"role": "val_loss", "points": 10, "first_step": 29, "last_step": 299}}
SPIKE_AT_150 = {"labels": [{"category": "spike", "role": "train_loss", "metrics": ["train/loss"], "onset": 150,
                            "end": None}], "acceptable": []}


def finding(category, metric, start, end, severity="warning"):
    return {"category": category, "metric": metric, "step_start": start, "step_end": end, "severity": severity}


def test_tolerance_is_a_tenth_of_the_run_or_three_logged_points():
    assert tolerance(SPIKE_AT_150["labels"][0], METRICS) == 30.0
    sparse = {"loss": {"role": "train_loss", "points": 8, "first_step": 0, "last_step": 70}}
    assert tolerance({"metrics": ["loss"], "role": "train_loss"}, sparse) == 30.0


def test_a_spike_found_near_its_onset_is_a_true_positive_and_one_elsewhere_is_not():
    near = score_run(SPIKE_AT_150, {"metrics": METRICS, "findings": [finding("spike", "train/loss", 170, 171)]})
    far = score_run(SPIKE_AT_150, {"metrics": METRICS, "findings": [finding("spike", "train/loss", 250, 250)]})
    info = score_run(SPIKE_AT_150, {"metrics": METRICS, "findings": [finding("spike", "train/loss", 150, 150, "info")]})
    assert (near["spike"], far["spike"], info["spike"]) == ("TP", "FN", "FN")


def test_an_unlabelled_category_is_a_false_positive_unless_acceptable():
    entry = {"metrics": METRICS, "findings": [finding("stall", "val/loss", 100, 300)]}
    assert score_run(SPIKE_AT_150, entry)["stall"] == "FP"
    assert score_run({**SPIKE_AT_150, "acceptable": ["stall"]}, entry)["stall"] is None
    assert score_run(SPIKE_AT_150, entry)["oscillation"] == "TN"
    # What the run's log measured besides its own category (an oscillating run that overfits too).
    assert score_run({**SPIKE_AT_150, "acceptable_measured": ["stall"]}, entry)["stall"] is None


def test_what_a_run_measures_besides_its_own_category_is_acceptable(tmp_path, monkeypatch):
    from detection import labels
    from detection.plan import draw

    plan = draw(next(seed for seed in range(1, 2000) if draw(seed, "dev").scenario == "osc_cyclic"), "dev")
    tags = {"val_loss": ["val/loss"], "train_loss": ["loss"]}
    falling, growing = [2.0, 1.0, 0.8, 0.6, 0.5, 0.5, 0.4, 0.4, 0.3, 0.3], [2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 9.0, 7.0, 8.0, 9.0]
    flat_then_nan = [1.39, 1.38, 1.40, 1.39, 1.37, 1.38, 1.39, 1.40, 1.38, 1.39, 1.39, float("nan"), float("nan")]
    cases = ((plan, [1.0, 0.8, 0.7, 0.9], falling, ["train_val_divergence"]),  # overfits too
             (plan, [1.0, 0.8, 0.7, 0.72], falling, []),
             (plan, [1.0, 0.8, 0.7, 0.72], growing, ["explosion"]),  # its ringing grew 3x
             (plan, [1.0, 0.8, 0.7, 0.72], flat_then_nan, ["stall"]))  # learned nothing before its NaN
    for scenario_plan, val, train, expected in cases:
        monkeypatch.setattr(labels, "read_back", lambda run_dir, v=val, t=train: {
            "val/loss": (list(range(len(v))), v), "loss": (list(range(len(t))), t)})
        assert labels.measured_acceptable(scenario_plan, tmp_path, tags) == expected
    plan.scenario = "healthy"  # a control stays strict
    assert labels.measured_acceptable(plan, tmp_path, tags) == []


def test_tally_gives_precision_recall_f1_and_macro_f1():
    outcomes = [{"spike": "TP"}, {"spike": "TP"}, {"spike": "FP"}, {"spike": "FN"}, {"spike": "TN"}]
    row = tally(outcomes, ("spike",))
    assert row["categories"]["spike"] == {"TP": 2, "FP": 1, "FN": 1, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3}
    assert row["macro_f1"] == pytest.approx(2 / 3)


def _plan(scenario, writer="torch"):
    from detection.plan import _BAG, draw

    plans = (draw(seed, "dev", writer) for seed in range(1, 2000) if _BAG[seed % len(_BAG)] == scenario)
    return next(p for p in plans if p.family in ("mlp", "regression", "logistic", "linreg"))


def test_generated_runs_carry_their_labels(tmp_path):
    pytest.importorskip("torch")
    import gen_detection

    spike, healthy = _plan("spike_batch"), _plan("healthy")
    records = [gen_detection.generate(plan, tmp_path) for plan in (spike, healthy)]
    manifest = gen_detection.write_manifest(tmp_path)
    assert set(manifest["runs"]) == {spike.name, healthy.name}
    assert json.loads((tmp_path / "labels" / f"{spike.name}.json").read_text())["labels"] == records[0]["labels"]
    labels = manifest["runs"][spike.name]["labels"]
    assert [label["onset"] for label in labels] == sorted(int(step) for step in spike.events)
    assert {label["category"] for label in labels} == {"spike"} and not manifest["runs"][healthy.name]["labels"]
    assert any((tmp_path / "dev" / healthy.name).glob("events.out.tfevents.*"))


@pytest.mark.parametrize("writer, module", [("lightning", "pytorch_lightning"), ("keras", "keras"), ("hf", "transformers")])
def test_framework_writers_log_with_their_own_loggers(tmp_path, writer, module):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip(module)
    import gen_detection

    plan = _plan("healthy", writer)
    plan.steps, plan.eval_every = 40, 20
    record = gen_detection.generate(plan, tmp_path)
    files = {p.name for p in (tmp_path / "dev" / plan.name).rglob("*") if p.is_file()}
    expected = {"lightning": {"metrics.csv", "events"}, "keras": {"training.log"}, "hf": {"trainer_state.json"}}[writer]
    assert any(name in files or any(f.startswith(f"{name}.out") for f in files) for name in expected)
    assert record["labels"] == [] or record["excluded"]


def test_show_misses_refuses_the_test_split(capsys):
    import bench_detection

    assert bench_detection.main(["--split", "test", "--show-misses"]) == 2
    assert "never look at test runs one by one" in capsys.readouterr().err
