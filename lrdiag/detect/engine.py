"""The rules engine: runs each selected rule's detector over the metrics of its roles.

Rules run in code order, so that the LR rules (LRD2xx) see the instability findings before
them; every finding gets the run's LR context as evidence; spikes that a larger finding on the
same metric explains are dropped at the end (see explain.py).
"""

from __future__ import annotations

import functools

from lrdiag.detect.base import Context
from lrdiag.detect.explain import drop_explained
from lrdiag.detect.finding import SEVERITY_RANK, Finding
from lrdiag.detect.lrcontext import describe
from lrdiag.detect.rulefile import Rule, detector_function
from lrdiag.series.model import Run


@functools.lru_cache(maxsize=None)
def _detector(name: str):
    return detector_function(name)


class Engine:
    """Selected rules with their effective parameters and severities; picklable for worker processes."""

    def __init__(self, rules: list[Rule], severities: dict[str, str] | None = None,
                 params: dict[str, dict] | None = None) -> None:
        self.rules = sorted(rules, key=lambda rule: rule.code)
        self.severities = severities or {}
        self.params = {rule.code: {**rule.defaults, **(params or {}).get(rule.code, {})} for rule in self.rules}

    def run(self, run: Run) -> list[Finding]:
        ctx = Context.of(run)
        for rule in self.rules:
            detect = _detector(rule.detector)
            for series in run.series.values():
                if series.role not in rule.roles:
                    continue
                try:
                    hits = detect(series, ctx, **self.params[rule.code])
                except Exception as error:  # noqa: BLE001 - one detector's bug must not hide the others' findings
                    run.notes.append(f"{rule.code} ({rule.detector}) failed on {series.tag}: "
                                     f"{type(error).__name__}: {error}; this is a bug, please report it")
                    continue
                for hit in hits:
                    ctx.findings.append(self._finding(rule, series.tag, hit, ctx))
        return sorted(drop_explained(ctx.findings))

    def _finding(self, rule: Rule, metric: str, hit, ctx: Context) -> Finding:
        severity = hit.severity or self.severities.get(rule.code, rule.severity)
        if hit.severity and rule.code in self.severities:
            severity = self.severities[rule.code]  # the user's choice wins over the detector's
        evidence = dict(hit.evidence)
        if ctx.lr is not None:
            evidence.update(describe(ctx.lr, hit.step_start, hit.step_end))
        try:
            message = rule.message.format(metric=metric, **evidence)
        except (KeyError, ValueError, TypeError, IndexError):
            message = f"{rule.name} on {metric} at steps {hit.step_start}-{hit.step_end}"
        return Finding(SEVERITY_RANK[severity], metric, hit.step_start, hit.step_end, rule.code, rule.name,
                       rule.category, severity, message, evidence)
