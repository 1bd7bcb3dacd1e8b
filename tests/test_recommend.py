"""Offline schedule candidates: one for every kind of finding, sized from the log, and code that is its curve."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.optim.lr_scheduler import (CosineAnnealingLR, LambdaLR, LinearLR, MultiStepLR, OneCycleLR,
                                      ReduceLROnPlateau, SequentialLR)

from curves import curve
from lrdiag.cli import cli
from lrdiag.ingest.discover import find_runs
from lrdiag.ingest.runs import read_run
from lrdiag.recommend import candidates as candidates_module
from lrdiag.recommend.candidates import build_scheduler, horizon_of, propose, subsample
from lrdiag.detect.engine import Engine
from lrdiag.detect.rulefile import builtin_rules_dir, load_rules
from lrdiag.series.model import Run, Series
from lrdiag.series.roles import assign_roles

SAMPLES = Path(__file__).parent.parent / "sample_logs"
EXAMPLE = SAMPLES / "example_spiky"
CANDIDATE_KEYS = {"name", "rationale", "params", "code", "lr_curve", "addresses", "confirmed", "kind"}


_QUOTE = re.compile(r"([-+]?\d[\d.]*(?:e[-+]?\d+)?) at step (\d+)")


def assert_quotes_are_logged(rationale: str, run: Run) -> None:
    """Every 'X at step N' in a rationale is a value some series of the run logged at step N (to the
    3 or 4 significant digits it is written with)."""
    quotes = _QUOTE.findall(rationale)
    for number, step in quotes:
        logged = [float(s.values[s.steps == int(step)][-1]) for s in run.series.values() if (s.steps == int(step)).any()]
        assert any(abs(float(number) - value) <= 5e-3 * abs(value) for value in logged), (
            f"{number} at step {step} is not a value logged at step {step} ({logged}): {rationale}")


def make_run(metrics: dict, every: int = 1) -> Run:
    series = {}
    for tag, spec in metrics.items():
        values = curve(spec["curve"], spec.get("noise", 0.0))
        if "oscillate" in spec:
            values = values * np.exp(spec["oscillate"][0] * np.cos(2 * np.pi * np.arange(values.size) / spec["oscillate"][1]))
        series[tag] = Series(tag, np.arange(values.size) * every, values)
    assign_roles(series)
    return Run("constructed", "test", [], series)


@pytest.fixture(scope="module")
def engine():
    return Engine(load_rules([builtin_rules_dir()]))


# A run for each kind of finding, the rule it should raise, and the candidates that answer it.
CASES = {
    "early spike under a constant LR": (
        {"train/loss": {"curve": "0.5x30 5.0 0.5x269", "noise": 0.05}, "lr": {"curve": "0.01x300"}},
        1, "LRD101", {"warmup-cosine", "lower-peak", "one-cycle", "clip-gradients"}),
    "one-step spike back at once under a decaying LR (a bad batch)": (
        {"train/loss": {"curve": "1.0*0.995x400 5.0 0.13*0.9995x599", "noise": 0.03},
         "lr": {"curve": "0.00002+0.00002x50 0.001-0.000001x950"}},
        1, "LRD101", {"clip-gradients", "inspect-batches"}),
    "oscillation at the peak LR": (
        {"train/loss": {"curve": "1.0*0.999x1000", "noise": 0.05, "oscillate": (0.4, 20)}, "lr": {"curve": "0.05x1000"}},
        1, "LRD102", {"lower-peak", "one-cycle"}),
    "stall after the LR decayed early": (
        {"train/loss": {"curve": "2.0*0.995x300 0.44x700", "noise": 0.01}, "lr": {"curve": "0.1x300 0.00001x700"}},
        1, "LRD103", {"later-step-decay", "cosine-to-end", "reduce-on-plateau"}),
    "stall near the initial loss, creeping down steadily under a tiny LR": (
        {"train/loss": {"curve": "2.0-0.0002x500", "noise": 0.005}, "lr": {"curve": "0.000001x500"}},
        1, "LRD103", {"higher-lr"}),
    "flat stall near the initial loss: too small or too large cannot be told": (
        {"train/loss": {"curve": "2.0x500", "noise": 0.02}, "lr": {"curve": "0.000001x500"}},
        1, "LRD103", {"lr-range-test"}),
    "validation loss rising after its best epoch": (
        {"loss": {"curve": "1.0*0.9x25", "noise": 0.01}, "val_loss": {"curve": "1.0*0.9x10 0.4+0.02x15", "noise": 0.01},
         "lr": {"curve": "0.001x25"}},
        100, "LRD104", {"stop-at-best", "cosine-to-end", "weight-decay"}),
    "NaN after a climb at the peak LR": (
        {"train/loss": {"curve": "1.0*0.99x50 0.6*1.5x8 nanx10"}, "lr": {"curve": "0.1x68"}},
        1, "LRD105", {"lower-peak", "one-cycle"}),
    "NaN straight from the usual level (numeric)": (
        {"train/loss": {"curve": "1.0*0.99x50 nanx10", "noise": 0.02}, "lr": {"curve": "0.1x60"}},
        1, "LRD105", {"skip-nonfinite", "inspect-batches"}),
    "spike right after a one-step jump of the LR (a glitch no schedule makes)": (
        {"train/loss": {"curve": "1.0*0.998x201 2.0 0.66*0.998x198", "noise": 0.2},
         "lr": {"curve": "0.002 0.001x199 0.05 0.001x199"}},
        1, "LRD101", {"cap-lr-jumps"}),
    "explosion at the peak LR": (
        {"train/loss": {"curve": "1.0*0.99x100 0.37*1.1x60", "noise": 0.02}, "lr": {"curve": "0.1x160"}},
        1, "LRD106", {"lower-peak", "one-cycle"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_kind_of_finding_gets_candidates_that_address_it(engine, case):
    metrics, every, rule, expected = CASES[case]
    run = make_run(metrics, every)
    findings = engine.run(run)
    assert rule in {f.rule for f in findings}, [f.message for f in findings]
    made = {c.name: c for c in propose(run, findings)}
    assert expected <= set(made), sorted(made)
    for name in expected:
        assert rule in made[name].addresses
        assert rule in made[name].rationale  # the rationale cites the finding...
        assert "LR" in made[name].rationale  # ...and what the LR did
        assert_quotes_are_logged(made[name].rationale, run)


def test_warmup_length_comes_from_where_the_early_spike_sits(engine):
    run = make_run({"train/loss": {"curve": "0.5x30 5.0 0.5x269", "noise": 0.05}, "lr": {"curve": "0.01x300"}})
    warmup = {c.name: c for c in propose(run, engine.run(run))}["warmup-cosine"]
    assert warmup.params["warmup_steps"] == 62  # twice the 31 steps up to the spike at step 30
    assert warmup.params["lr"] == 0.01 and warmup.params["T_max"] == 300 - 62
    assert set(warmup.addresses) == {"LRD101", "LRD201"}


def test_lower_peak_is_the_lr_the_loss_was_still_stable_at(engine):
    # A warmup to 0.01 over 100 steps; the loss spikes at step 60, when the LR had reached 0.006.
    run = make_run({"train/loss": {"curve": "0.5x60 5.0 0.5x239", "noise": 0.05},
                    "lr": {"curve": "0.0001+0.0001x100 0.01x200"}})
    lower = {c.name: c for c in propose(run, engine.run(run))}["lower-peak"]
    assert lower.params["lr"] == pytest.approx(0.005)  # stable at 0.006 before it, capped at half the peak
    run = make_run({"train/loss": {"curve": "0.5x40 5.0 0.5x259", "noise": 0.05},
                    "lr": {"curve": "0.0001+0.0001x100 0.01x200"}})
    lower = {c.name: c for c in propose(run, engine.run(run))}["lower-peak"]
    assert lower.params["lr"] == pytest.approx(0.004)  # the highest LR logged before the spike at step 40
    assert "0.004" in lower.rationale


def test_later_decay_milestones_come_from_where_the_stall_began(engine):
    run = make_run({"train/loss": {"curve": "2.0*0.995x300 0.44x700", "noise": 0.01}, "lr": {"curve": "0.1x300 0.00001x700"}})
    findings = engine.run(run)
    onset = next(f for f in findings if f.rule == "LRD103").evidence["step"]
    later = {c.name: c for c in propose(run, findings)}["later-step-decay"]
    remaining = 999 - onset
    assert later.params["milestones"] == [onset + remaining // 2, onset + 3 * remaining // 4]


def test_a_healthy_run_gets_no_candidate(engine, tmp_path):
    run = make_run({"train/loss": {"curve": "2.0*0.99x300", "noise": 0.01}, "lr": {"curve": "0.0001+0.0001x100 0.01-0.00004x200"}})
    assert engine.run(run) == []
    assert propose(run, []) == []


def _independent_scheduler(candidate, opt):
    """The scheduler each candidate's params describe, built here without its code."""
    p = candidate.params
    for group in opt.param_groups:
        group["lr"] = p.get("lr") or group["lr"]
    warmup = p.get("warmup_steps", 0)

    def after_warmup(main):
        if not warmup:
            return main
        return SequentialLR(opt, [LinearLR(opt, start_factor=0.01, total_iters=warmup), main], milestones=[warmup])

    if candidate.name in ("warmup-cosine", "lower-peak", "cosine-to-end", "weight-decay", "higher-lr"):
        eta_min = p.get("eta_min", 0.01 * p["lr"] if p.get("lr") else 0.0)
        return after_warmup(CosineAnnealingLR(opt, T_max=p["T_max"], eta_min=eta_min))
    if candidate.name == "one-cycle":
        return OneCycleLR(opt, max_lr=p["max_lr"], total_steps=p["total_steps"], pct_start=p["pct_start"],
                          cycle_momentum=False)
    if candidate.name == "later-step-decay":
        return after_warmup(MultiStepLR(opt, milestones=[m - warmup for m in p["milestones"]], gamma=p["gamma"]))
    if candidate.name == "reduce-on-plateau":
        return ReduceLROnPlateau(opt, mode="min", factor=p["factor"], patience=p["patience"], min_lr=p["min_lr"])
    if candidate.name == "stop-at-best":
        best = p["stop_step"]
        return LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, best) / best)))
    raise AssertionError(f"no independent scheduler for {candidate.name}")


def _run_scheduler(scheduler, opt, total, loss=None):
    values = [opt.param_groups[0]["lr"]]
    for index in range(1, total):
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(float(loss[index - 1]))
        else:
            scheduler.step()
        values.append(opt.param_groups[0]["lr"])
    return np.array(values)


def _every_candidate(engine):
    """Every schedule candidate of every case (the others change the loop, not the LR)."""
    for case, (metrics, every, _, _) in CASES.items():
        run = make_run(metrics, every)
        for candidate in propose(run, engine.run(run)):
            if candidate.kind == "schedule":
                yield case, run, candidate


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lr_curve_is_what_torch_own_scheduler_does(engine):
    seen = set()
    for case, run, candidate in _every_candidate(engine):
        horizon = horizon_of(run)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=horizon.peak)
        opt.step()
        expected = _run_scheduler(_independent_scheduler(candidate, opt), opt, horizon.total, horizon.loss)
        steps, values = np.array(candidate.lr_curve).T
        np.testing.assert_allclose(values, expected[steps.astype(int) - horizon.first], rtol=1e-12,
                                   err_msg=f"{case}: {candidate.name}")
        seen.add(candidate.name)
    assert seen == {"warmup-cosine", "lower-peak", "one-cycle", "later-step-decay", "cosine-to-end",
                    "reduce-on-plateau", "higher-lr", "stop-at-best", "weight-decay"}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_code_compiles_and_on_a_fresh_optimizer_draws_the_same_curve(engine):
    for case, run, candidate in _every_candidate(engine):
        horizon = horizon_of(run)
        compile(candidate.code, candidate.name, "exec")
        # An Adam at an unrelated LR: the code itself must set the peak it promises.
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=123.0)
        opt.step()
        values = _run_scheduler(build_scheduler(candidate.code, opt), opt, horizon.total, horizon.loss)
        steps, curve_values = np.array(candidate.lr_curve).T
        np.testing.assert_allclose(curve_values, values[steps.astype(int) - horizon.first], rtol=1e-12,
                                   err_msg=f"{case}: {candidate.name}")


def test_weight_decay_candidate_sets_weight_decay_but_never_lowers_it(engine):
    metrics, every, _, _ = CASES["validation loss rising after its best epoch"]
    run = make_run(metrics, every)
    weight_decay = {c.name: c for c in propose(run, engine.run(run))}["weight-decay"]
    for before, after in ((0.0, 0.01), (0.1, 0.1)):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0, weight_decay=before)
        build_scheduler(weight_decay.code, opt)
        assert opt.param_groups[0]["weight_decay"] == after


def test_curve_is_subsampled_to_at_most_500_points_keeping_both_sides_of_each_drop():
    values = np.where(np.arange(100_000) < 30_001, 0.1, 0.01)
    points = subsample(values, first=5)
    assert 490 <= len(points) <= 500
    assert [30_005, 0.1] in points and [30_006, 0.01] in points  # the drop after index 30 000


def test_json_output_follows_the_schema(tmp_path):
    result = CliRunner().invoke(cli, ["recommend", str(EXAMPLE), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["schema"] == 1
    [entry] = doc["runs"]
    assert {"run", "findings", "candidates"} <= set(entry)
    assert entry["candidates"]
    for candidate in entry["candidates"]:
        assert set(candidate) == CANDIDATE_KEYS
        assert candidate["confirmed"] is None
        assert isinstance(candidate["params"], dict) and candidate["addresses"]
        assert all(len(point) == 2 for point in candidate["lr_curve"]) and len(candidate["lr_curve"]) <= 502


def test_the_project_config_applies_as_in_analyze(tmp_path):
    # A project that ignores the spike rule gets no spike findings, so nothing that answers them.
    config = tmp_path / "lrdiag.toml"
    config.write_text('ignore = ["LRD101"]\n')
    plain = json.loads(CliRunner().invoke(cli, ["recommend", str(EXAMPLE), "--format", "json"]).output)
    result = CliRunner().invoke(cli, ["recommend", str(EXAMPLE), "--format", "json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)["runs"]
    assert any(f["rule"] == "LRD101" for f in plain["runs"][0]["findings"])
    assert not any(f["rule"] == "LRD101" for f in entry["findings"])


def test_the_example_sample_log_shows_spikes_without_warmup_and_gets_a_warmup(engine):
    run = read_run(find_runs([str(EXAMPLE)])[0])
    findings = engine.run(run)
    assert {"LRD101", "LRD201"} <= {f.rule for f in findings}
    made = {c.name: c for c in propose(run, findings)}
    assert made["warmup-cosine"].params["lr"] == 0.15
    assert made["warmup-cosine"].lr_curve[0] == [0, 0.15 * 0.01]


def _sample_runs():
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    return sorted(manifest["runs"].items())


@pytest.mark.parametrize("name, facts", _sample_runs(), ids=[name for name, _ in _sample_runs()])
def test_sample_logs_get_candidates_for_what_they_show(engine, name, facts):
    run = read_run(find_runs([str(SAMPLES / name)])[0])
    findings = engine.run(run)
    made = propose(run, findings)
    if not findings:
        assert made == [], "a run without findings keeps its schedule"
        return
    rules = {f.rule for f in findings}
    for candidate in made:
        assert set(candidate.addresses) <= rules
        assert_quotes_are_logged(candidate.rationale, run)
        if candidate.kind == "schedule":
            assert candidate.lr_curve and len(candidate.lr_curve) <= 500
        else:  # a change to the loop: no LR curve to draw
            assert candidate.lr_curve is None
    # A loss stuck at ln(classes) points at the labels or the model, not at the schedule.
    about_the_lr = [f for f in findings if not (f.category == "stall" and f.evidence.get("kind") == "trivial_level")]
    if not facts["healthy"] and about_the_lr:
        assert made, f"{name}: findings {sorted(rules)} but no candidate"


def test_without_torch_candidates_keep_their_code_and_say_how_to_get_the_curve(monkeypatch, engine):
    monkeypatch.setattr(candidates_module, "torch_available", lambda: False)
    run = read_run(find_runs([str(EXAMPLE)])[0])
    made = propose(run, engine.run(run))
    assert made and all(c.lr_curve is None and "scheduler = " in c.code for c in made)
    # A Python where `import torch` fails, as without the replay extra.
    no_torch = "import sys; sys.modules['torch'] = None; from lrdiag.cli import main; main(sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", no_torch, "recommend", str(EXAMPLE)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "LR curve: needs torch (pip install 'lrdiag[replay]')" in done.stdout
    assert "scheduler = SequentialLR(" in done.stdout
    done = subprocess.run([sys.executable, "-c", no_torch, "recommend", str(EXAMPLE), "--trainer",
                           "lrdiag.examples.spiky_mlp:trainer"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["lrdiag: error: --trainer: replays need torch: pip install 'lrdiag[replay]'"]


def test_text_output_says_keep_the_schedule_for_a_run_without_findings(tmp_path):
    steps = np.arange(300)
    rows = [f"{step},{loss:.6f},{lr:.6g}" for step, loss, lr in zip(steps, 2.0 * 0.99 ** steps, np.full(300, 0.001))]
    (tmp_path / "metrics.csv").write_text("step,train_loss,lr\n" + "\n".join(rows) + "\n")
    result = CliRunner().invoke(cli, ["recommend", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "no findings: keep the schedule" in result.output


# --- cause before cure: remedies that follow from the evidence ------------------------------


def _no_lr_increase(run, made) -> None:
    """No schedule candidate takes the LR above the highest the run logged."""
    logged_peak = float(np.nanmax(run.primary("lr").values))
    for candidate in made:
        if candidate.kind == "schedule":
            assert max(lr for _, lr in candidate.lr_curve) <= logged_peak * (1 + 1e-9), candidate.name
    assert "higher-lr" not in {c.name for c in made}


def test_dead_relu_sample_gets_the_range_test_not_a_higher_lr(engine):
    # SGD at lr 0.5 killed every ReLU in the first epoch: flat at the class prior from then on.
    run = read_run(find_runs([str(SAMPLES / "keras_csv/cnn_sgd_dead_relu_stall")])[0])
    made = propose(run, engine.run(run))
    _no_lr_increase(run, made)
    [test] = [c for c in made if c.name == "lr-range-test"]
    assert test.kind == "range-test" and test.lr_curve is None
    assert test.params["current_lr"] == 0.5 and test.params["start_lr"] == 0.005
    assert "0.5 at step 0" in test.rationale and "cannot tell an LR too small from one too large" in test.rationale
    assert_quotes_are_logged(test.rationale, run)


def test_unigram_stuck_transformer_under_adam_003_gets_no_tenfold_lr(engine):
    # A tiny GPT on a 12-token language: at init ln 12 = 2.485; Adam at 0.03 takes it within four steps to
    # the unigram entropy (2.33) and no further (the curve such runs log), while eval sits there too.
    loss = curve("2.485 2.43 2.37 2.34 2.33x396", 0.01)
    run = Run("unigram", "test", [], {"train/loss": Series("train/loss", np.arange(400), loss),
                                      "eval/loss": Series("eval/loss", np.arange(49, 400, 50), curve("2.335x8", 0.002)),
                                      "lr": Series("lr", np.arange(400), np.full(400, 0.03))})
    assign_roles(run.series)
    findings = engine.run(run)
    assert {f.evidence.get("kind") for f in findings if f.rule == "LRD103"} == {"near_initial"}
    made = propose(run, findings)
    _no_lr_increase(run, made)
    assert [c.name for c in made] == ["lr-range-test"]
    assert made[0].params["start_lr"] == 0.0003  # the sweep starts two decades below the 0.03 that stalled


def test_a_steady_creep_under_a_tiny_lr_gets_the_higher_lr_with_the_creep_quoted(engine):
    run = read_run(find_runs([str(SAMPLES / "tensorboard/lstm_sgd_tiny_lr_stall")])[0])
    made = {c.name: c for c in propose(run, engine.run(run))}
    higher = made["higher-lr"]
    assert higher.params["lr"] == 0.0001 and higher.params["previous_lr"] == 1e-05
    assert "val/loss from 0.5665 at step 99 to 0.5642 at step 999" in higher.rationale
    assert_quotes_are_logged(higher.rationale, run)


def test_bad_batch_sample_gets_clipping_and_the_batch_to_inspect_not_a_lower_lr(engine):
    run = read_run(find_runs([str(SAMPLES / "tensorboard/mlp_sgd_bad_batch_spike")])[0])
    findings = engine.run(run)
    assert [f.evidence["cause"] for f in findings if f.rule == "LRD101"] == ["data"]
    made = {c.name: c for c in propose(run, findings)}
    assert set(made) == {"clip-gradients", "inspect-batches"}
    assert made["inspect-batches"].params["steps"] == [700]
    assert "32.8 at step 700" in made["inspect-batches"].rationale
    assert made["clip-gradients"].kind == "clipping" and "clip_grad_norm_" in made["clip-gradients"].code
    for candidate in made.values():
        assert candidate.lr_curve is None
        assert_quotes_are_logged(candidate.rationale, run)
        compile(candidate.code.replace("continue", "pass"), candidate.name, "exec")


def test_clip_max_norm_is_the_98th_percentile_grad_norm_logged_before_the_spike(engine):
    grad_norm = curve("1.0x400", 0.2, seed=3)
    run = make_run({"train/loss": {"curve": "1.0*0.995x300 8.0 0.22*0.9995x99", "noise": 0.03},
                    "lr": {"curve": "0.01*0.999x400"}})
    run.series["grad_norm"] = Series("grad_norm", np.arange(400), grad_norm, role="grad_norm")
    findings = engine.run(run)
    made = {c.name: c for c in propose(run, findings)}
    clip = made["clip-gradients"]
    healthy = np.sort(grad_norm[:300])
    expected = healthy[int(np.ceil(0.98 * 300)) - 1]
    assert clip.params["max_norm"] == float(f"{expected:.3g}")
    assert grad_norm[clip.params["from_step"]] == expected  # a value the run logged, at the step quoted
    assert f"{expected:.4g} at step {clip.params['from_step']}" in clip.rationale
    assert f"max_norm = {clip.params['max_norm']!r}" in clip.code
    assert_quotes_are_logged(clip.rationale, run)


def test_lower_peak_quotes_the_lr_logged_where_the_loss_went_wrong_not_the_peak(engine):
    # The known bug: "the LR was already at its peak 0.001 when the loss first went wrong at step 400",
    # while the LR had peaked at step 49 and was 0.00065 and falling there.
    run = make_run({"train/loss": {"curve": "1.0*0.995x400 5.0 3.0 2.0 1.2 0.8 0.6*0.999x595", "noise": 0.03},
                    "lr": {"curve": "0.00002+0.00002x50 0.001-0.000001x950"}})
    findings = engine.run(run)
    assert [f.evidence["cause"] for f in findings if f.rule == "LRD101"] == ["lr"]
    lower = {c.name: c for c in propose(run, findings)}["lower-peak"]
    assert "already at its peak" not in lower.rationale
    lr = run.series["lr"]
    assert f"was {lr.values[400]:.3g} at step 400" in lower.rationale and lr.values[400] == pytest.approx(0.00065)
    assert f"peaked at {lr.values.max():.3g} at step {lr.values.argmax()}" in lower.rationale
    assert lr.values.argmax() == 49
    assert_quotes_are_logged(lower.rationale, run)


def test_json_grows_a_kind_for_each_candidate():
    result = CliRunner().invoke(cli, ["recommend", str(SAMPLES / "tensorboard/mlp_sgd_bad_batch_spike"), "--format",
                                      "json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)["runs"]
    assert {c["name"]: c["kind"] for c in entry["candidates"]} == {"clip-gradients": "clipping",
                                                                  "inspect-batches": "batches"}
    assert entry["findings"][0]["evidence"]["cause"] == "data"


def test_warmup_rationale_says_when_the_length_was_brought_within_bounds():
    from lrdiag.recommend.candidates import _warmup_why

    assert _warmup_why(31, 0, 62, 62) == "twice the 31 steps up to the last early instability"
    assert _warmup_why(1, 0, 2, 20) == ("twice the 1 step up to the last early instability, 2, brought within "
                                        "the 5-25 % of the run that common warmups take")
    assert _warmup_why(25, 100, 200, 200) == "twice the run's own warmup of 100 steps"


def test_a_loss_locked_to_a_cyclic_lr_gets_a_lower_peak_not_a_warmup_to_the_same_top(engine):
    # A triangular LR topped at 0.1: the loss rises every time the LR nears its top (LRD107).
    run = read_run(find_runs([str(SAMPLES / "tensorboard/mlp_adam_cyclic_lr_oscillation")])[0])
    findings = engine.run(run)
    assert any(f.rule == "LRD107" for f in findings)
    made = propose(run, findings)
    assert made[0].name == "lower-peak"
    assert not any("LRD107" in c.addresses for c in made if c.name == "warmup-cosine")
    _no_lr_increase(run, made)
    assert_quotes_are_logged(made[0].rationale, run)


def test_a_spike_after_a_one_step_lr_jump_gets_the_lr_capped_not_a_new_schedule(engine):
    run = make_run({"train/loss": {"curve": "1.0*0.998x201 2.0 0.66*0.998x198", "noise": 0.2},
                    "lr": {"curve": "0.002 0.001x199 0.05 0.001x199"}})
    findings = engine.run(run)
    assert [f.evidence["cause"] for f in findings if f.rule == "LRD101"] == ["lr"]
    made = {c.name: c for c in propose(run, findings)}
    assert set(made) == {"cap-lr-jumps"}  # no lower peak: the schedule's own peak (0.002 at step 0) was fine
    cap = made["cap-lr-jumps"]
    assert cap.kind == "lr-guard" and cap.lr_curve is None
    assert cap.params == {"max_lr": 0.002, "from_step": 0, "jump_steps": [200]}
    assert "the LR jumped for one step to 0.05 at step 200 (50x the median 0.001 of its 3 points before)" in cap.rationale
    assert "MAX_LR = 0.002" in cap.code
    assert_quotes_are_logged(cap.rationale, run)
    compile(cap.code, cap.name, "exec")


def test_an_lr_jump_held_for_two_logged_points_is_not_the_cap(engine):
    run = make_run({"train/loss": {"curve": "1.0*0.998x201 2.0 0.66*0.998x198", "noise": 0.2},
                    "lr": {"curve": "0.002 0.001x199 0.05 0.05 0.001x198"}})
    findings = engine.run(run)
    made = {c.name: c for c in propose(run, findings)}
    cap = made["cap-lr-jumps"]
    assert cap.params["max_lr"] == 0.002 and cap.params["from_step"] == 0
    assert "the LR jumped to 0.05 at step 200 and held to step 201 (50x the median 0.001" in cap.rationale
    assert_quotes_are_logged(cap.rationale, run)
