"""The rules engine: runs each selected rule's detector over the metrics of its roles, in code order."""

from __future__ import annotations

from lrdiag.detect.base import Context, Hit
from lrdiag.detect.cause import assign as assign_causes
from lrdiag.detect.explain import drop_explained
from lrdiag.detect.finding import SEVERITY_RANK, Finding
from lrdiag.detect.lrcontext import describe
from lrdiag.detect.rulefile import Rule, find_detector
from lrdiag.series.model import Run


class Engine:
    """Rules with their effective severities and parameters. Picklable: the pipeline sends it to
    worker processes, which look the detectors up again (functions do not travel well)."""

    def __init__(self, rules: list[Rule], selected: set[str] | None = None, severities: dict[str, str] | None = None,
                 params: dict[str, dict] | None = None) -> None:
        """`selected`: the codes to run (None: all); `severities` and `params`: per-code overrides,
        already validated (config.build_engine does it, naming where each came from)."""
        self.rules = sorted((rule for rule in rules if selected is None or rule.code in selected),
                            key=lambda rule: rule.code)
        self.severities = dict(severities or {})
        self.params = {rule.code: {**rule.params, **(params or {}).get(rule.code, {})} for rule in self.rules}
        self._detectors: dict = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_detectors": {}}

    def run(self, run: Run) -> list[Finding]:
        # Later rules read ctx.findings: LRD2xx (LR rules) reason about the instability before them.
        ctx = Context.of(run)
        train_losses = [tag for tag, series in run.series.items() if series.role == "train_loss"]
        # every rule runs on metrics of some role: the others (a run's million per-class APs) are passed over once
        playing = [series for series in run.series.values() if series.role is not None]
        for rule in self.rules:
            if rule.category == "lr_schedule":
                # LR rules judge the instability before them by its cause (a bad batch is not the
                # schedule's), and only what is left once a larger finding explains the rest.
                ctx.findings = assign_causes(drop_explained(ctx.findings, train_losses), run)
            for series in playing:
                if series.role not in rule.roles:
                    continue
                try:
                    hits = self._detector(rule)(series, ctx, **self.params[rule.code])
                    findings = [self._finding(rule, series.tag, hit, ctx, run) for hit in hits]
                except Exception as error:  # noqa: BLE001 - one detector's bug must not hide the other rules
                    run.notes.append(f"detector {rule.detector!r} of {rule.code} failed on metric {series.tag!r}: "
                                     f"{type(error).__name__}: {error}; this is a bug, please report it")
                    continue
                ctx.findings.extend(findings)
        # An oscillation or explosion peaks many times: those peaks are not separate spikes.
        return sorted(assign_causes(drop_explained(ctx.findings, train_losses), run))

    def _detector(self, rule: Rule):
        if rule.detector not in self._detectors:
            detect = find_detector(rule.detector)
            if detect is None:
                raise LookupError(f"detector {rule.detector!r} is not installed in this environment")
            self._detectors[rule.detector] = detect
        return self._detectors[rule.detector]

    def _finding(self, rule: Rule, metric: str, hit: Hit, ctx: Context, run: Run) -> Finding:
        # The user's severity wins over both the rule's and the one the detector chose for this hit.
        severity = self.severities.get(rule.code) or hit.severity or rule.severity
        evidence = dict(hit.evidence)
        if ctx.lr is not None:
            for key, value in describe(ctx.lr, hit.step_start, hit.step_end).items():
                evidence.setdefault(key, value)
        try:
            message = rule.message.format_map({**evidence, "metric": metric})
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as error:
            message = f"{rule.name} on {metric} at steps {hit.step_start}-{hit.step_end}"
            note = (f"{rule.code}: its message template failed ({type(error).__name__}: {error}); "
                    f"this is a bug in {rule.path or 'the rule file'}")
            if note not in run.notes:
                run.notes.append(note)
        return Finding(SEVERITY_RANK[severity], metric, int(hit.step_start), int(hit.step_end), rule.code, rule.name,
                       rule.category, severity, message, evidence)
