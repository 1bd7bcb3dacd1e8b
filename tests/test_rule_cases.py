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
            values = values * np.exp(wave["amplitude"] * np.cos(2 * np.pi * np.arange(values.size) / wave["period"]))
        series[tag] = Series(tag, np.arange(values.size) * case.get("every", 1), values)
    assign_roles(series)
    return Run("case", "test", [], series)


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
    findings = [f for f in Engine(list(rules.values())).run(_run(case)) if f.rule == code]
    if not case["fires"]:
        assert findings == [], f"false alarm: {[f.message for f in findings]}"
        return
    assert findings, "the rule did not fire"
    if "count" in case:
        assert len(findings) == case["count"], [f.message for f in findings]
    if "step" in case:
        at_step = [f for f in findings if f.step_start <= case["step"] <= f.step_end or f.evidence.get("step") == case["step"]]
        assert at_step, f"no finding at step {case['step']}: {[(f.step_start, f.step_end, f.message) for f in findings]}"
        if "severity" in case:
            assert at_step[0].severity == case["severity"]
