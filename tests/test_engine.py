"""The rules engine: rules in code order over the metrics of their roles, plug-in detectors found
through a real `lrdiag.detectors` entry point, detector bugs kept to a note."""

from __future__ import annotations

import importlib
import pickle
import re
import sys
import textwrap

import numpy as np
import pytest

from lrdiag.detect.engine import Engine
from lrdiag.detect.rulefile import builtin_rules_dir, find_detector, load_rules
from lrdiag.errors import LrdiagError
from lrdiag.series.model import Run, Series

PLUGIN = '''
"""Detectors of a third-party package, registered as `lrdiag.detectors` entry points."""
from lrdiag.detect.base import Hit


def above(series, ctx, level=1.0):
    """A hit at the first point above `level`; its evidence says which rules ran before it."""
    over = (series.values > level).nonzero()[0]
    if over.size == 0:
        return []
    step = int(series.steps[over[0]])
    return [Hit(step, step, {"step": step, "value": float(series.values[over[0]]),
                             "earlier": [finding.rule for finding in ctx.findings]})]


def broken(series, ctx):
    raise RuntimeError("boom")
'''

RULE = '''
code = "{code}"
name = "{name}"
category = "spike"
detector = "{detector}"
roles = {roles}
severity = "warning"
message = "{message}"
{params}
[docs]
what = "w"
why = "y"
example = "e"
fix = "f"
options = "level"
'''

LEVEL = '''
[params.level]
default = 1.0
type = "float"
doc = "the value a point must pass"
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """A package installed the way pip leaves it: a module and a dist-info with entry_points.txt."""
    site = tmp_path_factory.mktemp("site")
    (site / "lrdiag_test_plugin.py").write_text(PLUGIN)
    info = site / "lrdiag_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lrdiag-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [lrdiag.detectors]
        above = lrdiag_test_plugin:above
        broken = lrdiag_test_plugin:broken
        """))
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    yield site
    sys.path.remove(str(site))
    sys.modules.pop("lrdiag_test_plugin", None)


def rule_dir(folder, *rules: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for one in rules:
        spec = {"roles": '["train_loss"]', "message": "{metric} passed {value} at step {step}", "params": LEVEL, **one}
        (folder / f"{spec['code']}.toml").write_text(RULE.format(**spec))
    return folder


def make_run(**metrics) -> Run:
    series = {}
    for tag, (role, values) in metrics.items():
        values = np.asarray(values, dtype=float)
        series[tag] = Series(tag, np.arange(values.size) * 10, values, role=role)
    return Run("run", "test", [], series)


def test_a_plugin_detector_is_found_through_its_entry_point(plugin):
    assert find_detector("above").__module__ == "lrdiag_test_plugin"


def test_a_builtin_detector_is_found_by_module_name():
    assert find_detector("nonfinite").__module__ == "lrdiag.detect.nonfinite"
    assert find_detector("engine") is None  # a module of lrdiag.detect without `detect` is no detector


def test_findings_come_from_the_metrics_of_the_rules_roles_with_the_message_filled_in(plugin, tmp_path):
    rules = load_rules([rule_dir(tmp_path, {"code": "TST101", "name": "test.above", "detector": "above"})])
    run = make_run(loss=("train_loss", [0.5, 0.8, 3.0, 0.7]), val_loss=("val_loss", [5.0, 5.0]))
    (finding,) = Engine(rules).run(run)
    assert (finding.rule, finding.name, finding.category, finding.severity) == ("TST101", "test.above", "spike",
                                                                               "warning")
    assert (finding.metric, finding.step_start, finding.step_end) == ("loss", 20, 20)
    assert finding.message == "loss passed 3.0 at step 20"


def test_rules_run_in_code_order_and_later_rules_see_earlier_findings(plugin, tmp_path):
    rules = load_rules([rule_dir(tmp_path, {"code": "TST202", "name": "test.late", "detector": "above"},
                                 {"code": "TST101", "name": "test.early", "detector": "above"})])
    findings = Engine(rules).run(make_run(loss=("train_loss", [0.5, 2.0])))
    late = next(finding for finding in findings if finding.rule == "TST202")
    assert late.evidence["earlier"] == ["TST101"]


def test_a_detector_that_raises_becomes_a_note_and_the_other_rules_still_run(plugin, tmp_path):
    rules = load_rules([rule_dir(tmp_path, {"code": "TST101", "name": "test.above", "detector": "above"},
                                 {"code": "TST102", "name": "test.broken", "detector": "broken", "params": ""})])
    run = make_run(loss=("train_loss", [0.5, 2.0]))
    findings = Engine(rules).run(run)
    assert [finding.rule for finding in findings] == ["TST101"]
    assert run.notes == ["detector 'broken' of TST102 failed on metric 'loss': RuntimeError: boom; "
                         "this is a bug, please report it"]


def test_a_message_template_that_does_not_fit_the_evidence_falls_back_to_a_plain_message(plugin, tmp_path):
    rules = load_rules([rule_dir(tmp_path, {"code": "TST101", "name": "test.above", "detector": "above",
                                            "message": "{metric} peaked at {peak:.3g}"})])
    run = make_run(loss=("train_loss", [0.5, 2.0]), other=("train_loss", [3.0]))
    findings = Engine(rules).run(run)
    assert [finding.message for finding in findings] == ["test.above on loss at steps 10-10",
                                                          "test.above on other at steps 0-0"]
    assert len(run.notes) == 1 and "TST101: its message template failed (KeyError: 'peak')" in run.notes[0]


def test_findings_carry_the_lr_context_when_the_run_logs_an_lr(plugin, tmp_path):
    rules = load_rules([rule_dir(tmp_path, {"code": "TST101", "name": "test.above", "detector": "above"})])
    with_lr = Engine(rules).run(make_run(loss=("train_loss", [0.5, 2.0, 0.4]), lr=("lr", [0.1, 0.1, 0.1])))
    assert with_lr[0].evidence["lr_phase"] == "constant" and with_lr[0].evidence["lr_at_step"] == 0.1
    without = Engine(rules).run(make_run(loss=("train_loss", [0.5, 2.0, 0.4])))
    assert not any(key.startswith("lr_") for key in without[0].evidence)


def test_selection_severities_and_parameters_are_applied(plugin, tmp_path):
    rules = load_rules([rule_dir(tmp_path, {"code": "TST101", "name": "test.one", "detector": "above"},
                                 {"code": "TST102", "name": "test.two", "detector": "above"})])
    engine = Engine(rules, selected={"TST102"}, severities={"TST102": "error"}, params={"TST102": {"level": 2.5}})
    (finding,) = engine.run(make_run(loss=("train_loss", [0.5, 2.0, 3.0])))
    assert (finding.rule, finding.severity, finding.step_start) == ("TST102", "error", 20)


def test_the_engine_survives_pickling_after_it_has_run(plugin, tmp_path):
    # The pipeline sends the engine to worker processes.
    rules = load_rules([rule_dir(tmp_path, {"code": "TST101", "name": "test.above", "detector": "above"})])
    engine = Engine(rules)
    before = engine.run(make_run(loss=("train_loss", [0.5, 2.0])))
    again = pickle.loads(pickle.dumps(engine)).run(make_run(loss=("train_loss", [0.5, 2.0])))
    assert again == before and again


def test_a_rule_naming_an_unregistered_detector_does_not_load(tmp_path):
    rule_dir(tmp_path, {"code": "TST101", "name": "test.above", "detector": "not_registered_anywhere"})
    with pytest.raises(LrdiagError, match="'not_registered_anywhere' is neither a built-in detector"):
        load_rules([tmp_path])


def test_the_builtin_rules_find_a_nan_through_a_process_pool(tmp_path):
    # Eight runs or more go to worker processes: the engine is pickled there and back.
    from lrdiag.pipeline import Options, analyze

    for index in range(8):
        (tmp_path / f"run{index}").mkdir()
        (tmp_path / f"run{index}" / "metrics.csv").write_text("step,loss\n" + "".join(
            f"{step},{'nan' if index == 3 and step == 5 else 1.0 / (step + 1)}\n" for step in range(10)))
    doc = analyze([str(tmp_path)], Options(engine=Engine(load_rules([builtin_rules_dir()]))), jobs=2)
    assert doc["errors"] == []
    flagged = {run["run"]: [finding["rule"] for finding in run["findings"]] for run in doc["runs"]}
    assert flagged.pop("run3") == ["LRD105"]
    assert all(rules == [] for rules in flagged.values())


def test_instability_findings_carry_their_cause_and_lr_rules_see_it():
    # A one-step bad batch early in a run whose LR starts at its peak and decays: its cause is the
    # data, so the no-warmup rule (which runs after the cause pass) leaves it alone.
    steps = np.arange(300)
    loss = 2.0 * 0.99 ** steps * np.exp(0.03 * np.random.default_rng(0).standard_normal(300))
    loss[40] = 10.0
    run = Run("run", "test", [], {"train/loss": Series("train/loss", steps, loss),
                                  "lr": Series("lr", steps, 0.01 * 0.995 ** steps)})
    for series in run.series.values():
        series.role = "lr" if series.tag == "lr" else "train_loss"
    findings = Engine(load_rules([builtin_rules_dir()])).run(run)
    assert [(f.rule, f.evidence["cause"]) for f in findings] == [("LRD101", "data")]
    facts = findings[0].evidence["cause_evidence"]
    assert {fact["says"] for fact in facts} == {"data"} and all(fact["points"] for fact in facts)


def test_lr_rules_count_only_the_findings_left_once_larger_ones_explain_the_rest():
    # SGDR restarting at its top every 80 steps, the loss jumping with each restart (LRD107), and
    # an early one-step jump inside the first cycle: the cycle explains the spikes, so the
    # no-warmup rule must not count them among the early instability it blames on the schedule.
    steps = np.arange(480)
    lr = np.tile(0.1 * 0.95 ** np.arange(80), 6)
    scaled = (lr - lr.min()) / (lr.max() - lr.min())
    noise = np.exp(0.05 * np.random.default_rng(1).standard_normal(480))
    loss = 0.998 ** steps * np.exp(1.4 * scaled ** 4) * noise
    loss[12] *= 4.0
    run = Run("run", "test", [], {"train/loss": Series("train/loss", steps, loss, role="train_loss"),
                                  "lr": Series("lr", steps, lr, role="lr")})
    findings = Engine(load_rules([builtin_rules_dir()])).run(run)
    rules = [f.rule for f in findings]
    assert "LRD107" in rules and "LRD101" not in rules
    [no_warmup] = [f for f in findings if f.rule == "LRD201"]
    assert "LRD101" not in no_warmup.message and "1 instability finding" in no_warmup.message


def test_a_stall_near_its_start_says_how_near_with_digits_that_are_not_zero():
    # A loss flat from its first point moves by a fraction of a percent: "within 0%" reads as no
    # change at all, which the medians it quotes contradict.
    steps = np.arange(200)
    loss = 1e-5 * (1 + 0.002 * np.sin(steps)) * (1 - 0.0000005 * steps)
    run = Run("run", "test", [], {"train_loss": Series("train_loss", steps, loss, role="train_loss")})
    [stall] = [f for f in Engine(load_rules([builtin_rules_dir()])).run(run) if f.rule == "LRD103"]
    assert "within 0% " not in stall.message
    assert re.search(r"within 0\.\d+% of where it started", stall.message), stall.message


def test_an_explosion_of_the_per_step_loss_explains_the_jumps_of_the_per_epoch_one():
    # Lightning logs one training loss twice (train_loss_step, train_loss_epoch): the epoch means
    # jump as the loss blows up, and those jumps are the explosion, not spikes of their own.
    steps = np.arange(0, 400)
    loss = np.where(steps < 100, 2.0 * 0.99 ** steps, 0.73 * 1.02 ** np.clip(steps - 100, 0, None))
    loss = loss * np.exp(0.05 * np.random.default_rng(2).standard_normal(steps.size))
    epochs = np.arange(19, 400, 20)
    epoch_means = np.array([loss[e - 19:e + 1].mean() for e in epochs])
    run = Run("run", "test", [], {"train_loss_step": Series("train_loss_step", steps, loss, role="train_loss"),
                                  "train_loss_epoch": Series("train_loss_epoch", epochs, epoch_means, role="train_loss")})
    findings = Engine(load_rules([builtin_rules_dir()])).run(run)
    assert any(f.rule == "LRD106" for f in findings)
    assert not [f for f in findings if f.category == "spike"], [f.message for f in findings]
