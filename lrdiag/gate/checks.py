"""The gate's checks of a candidate run against baselines, each a JUnit testcase, and the gate output model.

    {"schema": 1, "kind": "lrdiag-gate", "lrdiag": "<version>", "tolerance": "2%", "fail_on": "error",
     "baselines": [names], "passed": bool, "errors": [],
     "gates": [{"run", "source", "file", "passed",
                "checks": [{"name", "check", "metric", "status", "candidate", "baseline", "allowed", "step",
                            "message"}]}]}

`status` is passed, failed or skipped. A tolerance is absolute (`0.01`: that much worse),
relative (`2%` of the baselines' value) or the spread of several baselines (`spread`, the
default when there are several): the one-sided 99 % prediction bound of a new run around the
baselines' mean, t(0.99, n-1) * sd * sqrt(1 + 1/n), which is how far a rerun of the same training
lands by chance alone. A few seeds say little about their spread, so the bound is wide for them:
about 8 standard deviations for 3 baselines, 4 for 5, 3 for 10.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import compress

import numpy as np

from lrdiag import __version__
from lrdiag.detect.finding import SEVERITY_RANK
from lrdiag.errors import LrdiagError
from lrdiag.gate.baseline import FRACTIONS, LOSS_ROLES, reach_step, smoothed, summarize_series
from lrdiag.series.model import Run

SCHEMA = 1
KIND = "lrdiag-gate"
SPREAD_CONFIDENCE = 0.99
_SLACK = 1e-9  # identical runs must pass: float noise in a mean of equal values is no regression
_TOLERANCE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*(%?)\s*$")


@dataclass(frozen=True)
class Tolerance:
    kind: str  # absolute, relative or spread
    amount: float = 0.0

    @classmethod
    def parse(cls, text: str | None, baselines: int) -> "Tolerance":
        """`0.01`, `2%` or `spread`; None: 2 % for one baseline, their spread for several."""
        if text is None:
            return cls("spread") if baselines > 1 else cls("relative", 0.02)
        if text.strip().lower() == "spread":
            if baselines < 2:
                raise LrdiagError("--max-regression spread: needs at least two baselines (--baseline a --baseline b, "
                                  "or a baseline file saved from several runs)")
            return cls("spread")
        match = _TOLERANCE_RE.match(text)
        if not match:
            raise LrdiagError(f"--max-regression: {text!r} is not a tolerance; expected an absolute amount (0.01), "
                              "a percentage (2%) or 'spread'")
        number = float(text.strip().rstrip("%"))
        return cls("relative", number / 100) if match.group(2) else cls("absolute", number)

    def describe(self, baselines: int) -> str:
        if self.kind == "spread":
            return f"spread ({SPREAD_CONFIDENCE:.0%} prediction bound of {baselines} baselines)"
        return f"{self.amount * 100:g}%" if self.kind == "relative" else f"{self.amount:g}"

    def allowance(self, values: list[float]) -> float:
        """How much worse than the baselines' mean a value may be."""
        if self.kind == "spread":
            count = len(values)
            if count < 2:
                return 0.0
            from scipy.stats import t as student_t  # here: scipy.stats costs ~0.5 s CPU to import

            factor = student_t.ppf(SPREAD_CONFIDENCE, count - 1) * np.sqrt(1 + 1 / count)
            return float(factor * np.std(values, ddof=1))
        if self.kind == "relative":
            return self.amount * abs(float(np.mean(values)))
        return self.amount


def _check(name: str, kind: str, metric: str | None, status: str, message: str, candidate=None, baseline=None,
           allowed=None, step=None) -> dict:
    return {"name": name, "check": kind, "metric": metric, "status": status, "candidate": candidate,
            "baseline": baseline, "allowed": allowed, "step": step, "message": message}


def resolve_metrics(selectors: list[str], baselines: list[dict]) -> list[str]:
    """The metrics to gate: those asked for (a role or a tag), else every loss role all baselines have."""
    if not selectors:
        selectors = [role for role in LOSS_ROLES if all(role in entry["primary"] for entry in baselines)]
        if not selectors:
            names = ", ".join(entry["run"] for entry in baselines)
            raise LrdiagError(f"baseline {names}: no training or validation loss to gate on (use --metric TAG, "
                              "or --role val_loss=TAG to name it)")
    for selector in selectors:
        for entry in baselines:
            if _baseline_metric(entry, selector) is None:
                known = ", ".join([*entry["primary"], *entry["metrics"]]) or "none"
                raise LrdiagError(f"--metric {selector}: baseline {entry['run']} has no such loss role or tag "
                                  f"(it has: {known})")
    return list(dict.fromkeys(selectors))


def _baseline_metric(entry: dict, selector: str) -> dict | None:
    tag = entry.get("primary", {}).get(selector, selector)
    return entry["metrics"].get(tag)


def _candidate_series(run: Run, selector: str):
    return run.primary(selector) if selector in LOSS_ROLES else run.series.get(selector)


def _value_check(kind: str, selector: str, tag: str, candidate: float | None, references: list,
                 tolerance: Tolerance) -> dict:
    """The candidate's final or best value, not above the baselines' mean plus the tolerance."""
    name = f"{kind} {selector}"
    references = [value for value in references if value is not None]
    if not references:
        return _check(name, kind, tag, "skipped", f"the baselines have no finite {kind} {selector}")
    reference = float(np.mean(references))
    allowed = reference + tolerance.allowance(references)
    if candidate is None:
        return _check(name, kind, tag, "failed", f"{tag} has no finite value, the baseline's {kind} is "
                      f"{reference:.4g}", None, reference, allowed)
    detail = f"{kind} {tag} {candidate:.4g}, baseline {reference:.4g}, allowed up to {allowed:.4g}"
    if candidate <= allowed + _SLACK * max(abs(allowed), 1.0):
        return _check(name, kind, tag, "passed", detail, candidate, reference, allowed)
    return _check(name, kind, tag, "failed", f"regressed: {detail}", candidate, reference, allowed)


def _convergence_check(selector: str, series, metrics: list[dict], tolerance: Tolerance) -> dict:
    """Steps to reach each of the baselines' loss milestones, not later beyond the tolerance."""
    name, tag = f"convergence {selector}", series.tag
    steps, curve, _ = smoothed(series)
    parts, failed, worst = [], False, None
    for fraction in FRACTIONS:
        marks = [metric.get("milestones", {}).get(str(fraction)) for metric in metrics]
        if not all(mark and mark.get("step") is not None for mark in marks):
            continue
        level = float(np.mean([mark["level"] for mark in marks]))
        base_steps = [float(mark["step"]) for mark in marks]
        base_step = float(np.mean(base_steps))
        if tolerance.kind == "spread":
            # A step is known only to the logging interval: baselines that reached a milestone at
            # the same logged step have no spread, yet a member of them, judged against their mean
            # level, may reach it one logged point later.
            target, allowed_step = level, base_step + max(tolerance.allowance(base_steps), _interval(steps))
        else:
            target, allowed_step = level + tolerance.allowance([level]), base_step
        reached = reach_step(steps, curve, target) if steps.size else None
        slow = reached is None or reached > allowed_step + _SLACK * max(allowed_step, 1.0)
        when = "never" if reached is None else f"at step {reached}"
        parts.append(f"{fraction:.0%} of the drop (loss {target:.4g}) {when}, baseline step {base_step:.0f}"
                     + (f", allowed {allowed_step:.0f}" if allowed_step != base_step else ""))
        if slow and not failed:
            failed, worst = True, (reached, base_step, allowed_step)
    if not parts:
        return _check(name, "convergence", tag, "skipped", f"the baselines' {selector} never fell: no milestones")
    if failed:
        reached, base_step, allowed_step = worst
        return _check(name, "convergence", tag, "failed", f"converged slower: {'; '.join(parts)}", reached, base_step,
                      allowed_step)
    return _check(name, "convergence", tag, "passed", "; ".join(parts))


def _interval(steps: np.ndarray) -> float:
    """The usual gap between logged steps (0 for a single point)."""
    return float(np.median(np.diff(steps))) if steps.size > 1 else 0.0


def _finding_checks(run: Run, findings: list[dict], baselines: list[dict], fail_on: str) -> list[dict]:
    """Findings match by rule and metric; by rule and role when the baselines never logged that tag
    (another log format names the same loss differently). `never`: findings do not gate."""
    if fail_on == "never":
        return []
    tags = {tag for entry in baselines for tag in entry["metrics"]}
    tags |= {finding["metric"] for entry in baselines for finding in entry["findings"]}
    known = {(finding["rule"], name) for entry in baselines for finding in entry["findings"]
             for name in (finding["metric"], finding.get("role")) if name}
    worst = SEVERITY_RANK[fail_on]
    checks = []
    for finding in findings:
        series = run.series.get(finding["metric"])
        key = finding["metric"] if finding["metric"] in tags else (series.role if series else None)
        if SEVERITY_RANK[finding["severity"]] > worst or (finding["rule"], key) in known:
            continue
        checks.append(_check(f"new finding {finding['rule']} {finding['name']} on {finding['metric']} at step "
                             f"{finding['step_start']}", "finding", finding["metric"], "failed",
                             f"{finding['severity']} {finding['rule']} {finding['name']}, which the baseline did not "
                             f"have: {finding['message']}", step=finding["step_start"]))
    if not checks:
        checks.append(_check(f"no new findings at or above {fail_on}", "finding", None, "passed",
                             f"no {fail_on}{' or error' if fail_on == 'warning' else ''} finding that the baseline "
                             "did not have"))
    return checks


def _finite_check(run: Run) -> dict:
    # The values of short series laid end to end and checked at once (a run of a million one-point metrics: one
    # pass, not a million), a long one's alone (no copy of a long run's points); the few failing looked at again.
    values = [series.values for series in run.series.values()]
    sizes = np.fromiter(map(len, values), np.int64, len(values))
    short = np.flatnonzero(sizes <= 64)
    failing = {place for place in np.flatnonzero(sizes > 64).tolist() if not np.isfinite(values[place]).all()}
    if short.size:
        joined = np.concatenate(list(compress(values, (sizes <= 64).tolist())))
        failing.update(short[np.repeat(np.arange(short.size), sizes[short])[~np.isfinite(joined)]].tolist())
    bad, items = [], list(run.series.items()) if failing else []
    for tag, series in (items[place] for place in sorted(failing)):
        nonfinite = ~np.isfinite(series.values)
        bad.append((tag, int(nonfinite.sum()), int(series.steps[np.argmax(nonfinite)])))
    if not bad:
        return _check("finite values", "finite", None, "passed", f"all {len(run.series)} metrics finite")
    detail = "; ".join(f"{tag}: {count} NaN/Inf from step {step}" for tag, count, step in bad)
    return _check("finite values", "finite", bad[0][0], "failed", f"non-finite values: {detail}", step=bad[0][2])


def gate(run: Run, findings: list[dict], baselines: list[dict], selectors: list[str], tolerance: Tolerance,
         fail_on: str) -> dict:
    """One candidate run against the baselines: every check, and whether all passed."""
    checks = []
    for selector in selectors:
        series = _candidate_series(run, selector)
        metrics = [_baseline_metric(entry, selector) for entry in baselines]
        tag = series.tag if series is not None else selector
        if series is None:
            for kind in ("final", "best", "convergence"):
                checks.append(_check(f"{kind} {selector}", kind, selector, "failed",
                                     f"the candidate has no {selector}, which the baseline has"))
            continue
        summary = summarize_series(series)
        for kind in ("final", "best"):
            checks.append(_value_check(kind, selector, tag, summary[kind], [m[kind] for m in metrics], tolerance))
        checks.append(_convergence_check(selector, series, metrics, tolerance))
    checks.extend(_finding_checks(run, findings, baselines, fail_on))
    checks.append(_finite_check(run))
    return {"run": run.name, "source": run.source, "file": run.files[0] if run.files else run.name,
            "passed": all(check["status"] != "failed" for check in checks), "checks": checks}


def document(gates: list[dict], baselines: list[dict], tolerance: Tolerance, fail_on: str) -> dict:
    return {"schema": SCHEMA, "kind": KIND, "lrdiag": __version__, "tolerance": tolerance.describe(len(baselines)),
            "fail_on": fail_on, "baselines": [entry["run"] for entry in baselines],
            "passed": all(one["passed"] for one in gates), "gates": gates, "errors": []}
