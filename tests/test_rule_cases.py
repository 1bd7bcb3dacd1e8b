"""Every rule's pass and fail cases (tests/rule_cases/<CODE>.toml), run by one parametrized test."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from curves import curve
from lrdiag.detect.engine import Engine
from lrdiag.detect.rulefile import builtin_rules_dir, load_rules
from lrdiag.series.model import Run, Series
from lrdiag.series.roles import assign_roles

CASES_DIR = Path(__file__).parent / "rule_cases"


def _cases():
    for path in sorted(CASES_DIR.glob("*.toml")):
        for case in tomllib.loads(path.read_text())["cases"]:
            yield pytest.param(path.stem, case, id=f"{path.stem}: {case['name']}")


def _run(case: dict) -> Run:
    series = {}
    for tag, spec in case["metrics"].items():
        values = curve(spec["curve"], spec.get("noise", 0.0), spec.get("seed", 0))
        if "oscillate" in spec:
            wave = spec["oscillate"]
            index = np.arange(values.size)
            fading = np.exp(-index / wave["fade"]) if "fade" in wave else 1.0  # dying down by e every `fade` points
            values = values * np.exp(wave["amplitude"] * fading * np.cos(2 * np.pi * index / wave["period"]))
        if "ring" in spec:
            values = values * np.exp(_ring(values.size, **spec["ring"]))
        if "lock" in spec:  # a loss that follows another metric (the LR): exp(swing * scaled ** power)
            lock = spec["lock"]
            other = curve(case["metrics"][lock["to"]]["curve"])
            scaled = (other - other.min()) / (other.max() - other.min())
            values = values * np.exp(lock["swing"] * scaled ** lock.get("power", 1))
        # A metric may be logged on its own cadence (evaluations every N steps, from step `first`).
        every = spec.get("every", case.get("every", 1))
        series[tag] = Series(tag, spec.get("first", 0) + np.arange(values.size) * every, values)
    assign_roles(series)
    return Run("case", "test", [], series)


def _ring(size: int, amplitude: float, period: float, damping: float, seed: int = 0) -> np.ndarray:
    """Momentum ringing: an AR(2) resonance (poles at damping * e^(+-2 pi i / period)) driven by
    white noise, as a heavy-momentum optimizer rings, scaled to swing +-amplitude (log units)."""
    angle = 2 * np.pi / period
    drive = np.random.default_rng(seed).standard_normal(size)
    ring = np.zeros(size)
    for i in range(2, size):  # a recursion: each point follows from the two before it
        ring[i] = 2 * damping * np.cos(angle) * ring[i - 1] - damping**2 * ring[i - 2] + drive[i]
    return amplitude / np.sqrt(2) * ring / ring.std()


@pytest.fixture(scope="module")
def rules():
    return {rule.code: rule for rule in load_rules([builtin_rules_dir()])}


def test_every_rule_has_pass_and_fail_cases(rules):
    for code in rules:
        path = CASES_DIR / f"{code}.toml"
        assert path.exists(), f"{code} has no cases in {path}"
        fires = {case["fires"] for case in tomllib.loads(path.read_text())["cases"]}
        assert fires == {True, False}, f"{code} needs both a case that fires and one that stays quiet"


@pytest.mark.parametrize("code, case", list(_cases()))
def test_rule_case(rules, code, case):
    # All rules run, as in use: LR rules read the others' findings, and a larger finding can
    # explain a spike away.
    run = _run(case)
    findings = [f for f in Engine(list(rules.values())).run(run) if f.rule == code]
    if not case["fires"]:
        assert findings == [], f"false alarm: {[f.message for f in findings]}"
        return
    assert findings, "the rule did not fire"
    if "count" in case:
        assert len(findings) == case["count"], [f.message for f in findings]
    for finding in findings:
        _assert_quotes_are_logged(finding, run)
    if "step" in case:
        at_step = [f for f in findings if f.step_start <= case["step"] <= f.step_end or f.evidence.get("step") == case["step"]]
        assert at_step, f"no finding at step {case['step']}: {[(f.step_start, f.step_end, f.message) for f in findings]}"
        if "severity" in case:
            assert at_step[0].severity == case["severity"]


# Evidence keys that quote a logged value, and the key of the step it was logged at.
_QUOTED_AT = {"value": "step", "peak": "peak_step", "best": "best_step", "last": "last_step", "lr_max": "lr_max_step",
              "lr_min": "lr_min_step"}


def _assert_quotes_are_logged(finding, run: Run) -> None:
    """Every number a finding quotes at a step is the value logged at that step (of its metric,
    or of the LR series for LR values): never a smoothed level passed off as a logged one."""
    for key, step_key in _QUOTED_AT.items():
        if key not in finding.evidence or step_key not in finding.evidence:
            continue
        series = run.series[finding.evidence["lr_series"]] if key.startswith("lr_") else run.series[finding.metric]
        at = np.flatnonzero(series.steps == finding.evidence[step_key])
        assert at.size, f"{finding.rule} quotes {key} at step {finding.evidence[step_key]}, which was never logged"
        assert finding.evidence[key] == pytest.approx(float(series.values[at[-1]])), (
            f"{finding.rule}: {key} {finding.evidence[key]} is not the value logged at step {finding.evidence[step_key]}")
    if "level_steps" in finding.evidence:  # a spike's level: the median of the points it names
        series = run.series[finding.metric]
        low, high = finding.evidence["level_steps"]
        on = series.values[(series.steps >= low) & (series.steps <= high)]
        assert finding.evidence["level"] == pytest.approx(float(np.median(on)))
    if finding.category == "stall":  # "median ... from then on": the plain median of the logged values
        series = run.series[finding.metric]
        on = series.values[(series.steps >= finding.evidence["step"]) & np.isfinite(series.values)]
        assert finding.evidence["level"] == pytest.approx(float(np.median(on)))


REAL_LOGS = Path(__file__).resolve().parents[2] / "shared" / "real_logs"


@pytest.mark.skipif(not (REAL_LOGS / "trainer_state" / "canine-model").exists(), reason="no real logs here")
def test_real_run_falling_at_every_checkpoint_is_not_stalled(rules):
    """A real Hugging Face run whose loss falls at every logged point (4.63 -> 3.97 over 8 points,
    eval loss falling every epoch, the LR decaying linearly) once got 'stalled from step 500'."""
    from lrdiag.ingest.discover import RunSpec
    from lrdiag.ingest.runs import read_run

    path = REAL_LOGS / "trainer_state" / "canine-model" / "trainer_state.json"
    run = read_run(RunSpec("canine-model", {path: ""}))
    assert run.series["loss"].values.size == 8
    findings = Engine(list(rules.values())).run(run)
    assert [f.message for f in findings if f.category == "stall"] == []
