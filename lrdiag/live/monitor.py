"""Metrics fed in process, step by step (the training callbacks): the same rules as `lrdiag analyze`, run
on everything logged so far, findings reported once and a verdict on whether to stop the run.

The rules run at once when the screen of `lrdiag watch` (screen.py) fires on a logged value (a NaN or
infinite value, a rise the spike or explosion rule could call one: a NaN run stops within a logging
step, not a window later), otherwise every `every_n_steps` steps once the points logged have grown by a
quarter since the last check, and at the end. Each check re-runs the engine on the whole series logged
so far, so the findings are those `lrdiag analyze` gives on the same points; a check costs what analyzing
a run of that size costs (about 5 us a point), and checking at geometric growth keeps that to a few
analyses of the whole run in all, however long it trains.
"""

from __future__ import annotations

import json
from pathlib import Path

from lrdiag.detect.finding import SEVERITY_RANK, Finding
from lrdiag.ingest.textlog import is_bookkeeping
from lrdiag.live.screen import Screen
from lrdiag.live.watcher import Findings
from lrdiag.output import document, run_entry
from lrdiag.series.model import Run, Series
from lrdiag.series.roles import assign_roles

STOP_ON = ("error", "warning", None)
GROWTH = 0.25  # a check not asked for by the screen waits until the points grew by this fraction


class Monitor:
    """One training run's metrics as they are logged, judged by the project's rules."""

    def __init__(self, name: str = "run", stop_on: str | None = "error", every_n_steps: int = 100,
                 select: list[str] | None = None, ignore: list[str] | None = None, config: str | None = None) -> None:
        from lrdiag.config import project_setup
        from lrdiag.errors import LrdiagError

        if stop_on not in STOP_ON:
            raise LrdiagError(f"The 'stop_on' parameter of LrdiagCallback must be one of 'error', 'warning' or None. "
                              f"Got {stop_on!r} instead.")
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise LrdiagError(f"The 'every_n_steps' parameter of LrdiagCallback must be an int in the range [1, inf). "
                              f"Got {every_n_steps!r} instead.")
        _, self.engine, self.roles = project_setup(Path(config) if config else None, (), select, ignore)
        self.name = name
        self.stop_on = stop_on
        self.every_n_steps = every_n_steps
        self.points: dict[str, tuple[list[int], list[float]]] = {}
        self.findings = Findings()
        self.latest: list[Finding] = []
        self.stop_finding: Finding | None = None
        self.screen = Screen.for_engine(self.engine, self.roles)
        self._checked_at: int | None = None
        self._unchecked = False
        self._fired = False
        self._points = 0  # values logged so far
        self._checked_points = 0  # of them, those the last check read

    def add(self, step: int, metrics: dict[str, float]) -> None:
        """Values logged at `step` (numbers, 0-d tensors; anything else is skipped)."""
        for tag, value in metrics.items():
            if is_bookkeeping(tag):  # epoch, runtimes, throughput: never metrics, as in the log readers
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            steps, values = self.points.setdefault(tag, ([], []))
            steps.append(int(step))
            values.append(value)
            self._unchecked = True
            self._points += 1
            self._fired |= self.screen.fires(tag, tag, step, value)

    def due(self, step: int) -> bool:
        """True when the rules should run now: the screen fired, or every_n_steps went by and the points
        grew by GROWTH since the last check."""
        if not self._unchecked:
            return False
        return self._fired or self._checked_at is None or (
            step - self._checked_at >= self.every_n_steps and self._points >= self._checked_points * (1 + GROWTH))

    def check(self, step: int) -> list[tuple[Finding, str]]:
        """Run the rules on all that was logged; the findings that are new or whose steps grew."""
        self._checked_at, self._unchecked, self._fired, self._checked_points = step, False, False, self._points
        run = self.run()
        self.latest = self.engine.run(run)
        changes = self.findings.update(self.latest)
        if self.stop_finding is None and self.stop_on is not None:
            self.stop_finding = next((f for f, _ in changes
                                      if SEVERITY_RANK[f.severity] <= SEVERITY_RANK[self.stop_on]), None)
        return changes

    def run(self) -> Run:
        run = Run(self.name, "lrdiag-callback", [])
        run.series = {tag: Series(tag, steps, values) for tag, (steps, values) in self.points.items() if steps}
        assign_roles(run.series, self.roles)
        return run

    def write(self, path: Path) -> Path:
        """The findings so far, in `lrdiag analyze --format json`'s model, written to `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = document([run_entry(self.run(), self.latest)])
        path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return path


def describe(finding: Finding, status: str = "new") -> str:
    """One line for a framework's log: `lrdiag: error LRD105 loss.nonfinite  loss step 40: ...`."""
    from lrdiag.render.view import inert

    where = (f"step {finding.step_start}" if finding.step_start == finding.step_end
             else f"steps {finding.step_start}–{finding.step_end}")
    mark = "updated " if status == "updated" else ""
    return inert(f"lrdiag: {mark}{finding.severity} {finding.rule} {finding.name}  {finding.metric} {where}: "
                 f"{finding.message}")
