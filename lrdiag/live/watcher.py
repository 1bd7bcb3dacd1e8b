"""Follow the runs under some paths while they are written: each poll reads what is new, re-runs the rules
on the runs whose data grew, and says which findings are new and which grew.

Detection re-runs the engine on a grown run's whole series so far rather than keeping per-rule state: the
findings are then those of `lrdiag analyze` on the same data by construction (a rule such as a stall or a
divergence judges the whole curve, and an explanation may drop an earlier spike). Its cost grows with the
points a run holds (tens of ms for a run of thousands of points), paid only by runs that grew since the
last poll. A run in a tracker's store (MLflow, W&B) has no file of its own to tail: the store reads it
whole at each poll, and it is judged again when its number of points changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lrdiag.detect.finding import Finding
from lrdiag.errors import LrdiagError
from lrdiag.ingest.discover import RunSpec, find_runs, reader_for
from lrdiag.ingest.runs import read_run
from lrdiag.live.tail import Tail
from lrdiag.series.model import Problem, Run


@dataclass
class Event:
    """A finding first seen (`new`) or whose step range grew (`updated`) in a poll."""

    run: str
    finding: Finding
    status: str  # "new" | "updated"
    seen_at: float  # time.time()


class Findings:
    """The findings of one run as they were reported: each reported once, then again as it grows.

    A finding found again is the same finding when it is of the same rule and metric and its step range
    meets the reported one (a spike whose end moves, a stall that goes on); anything else is new. A grown
    finding is reported again once its step range is at least twice as long as when last reported: a NaN
    run or a stall that goes on for N steps says so about log2(N) times, not at every poll."""

    def __init__(self) -> None:
        self.reported: list[Finding] = []

    def update(self, findings: list[Finding]) -> list[tuple[Finding, str]]:
        changes = []
        for finding in sorted(findings):
            known = next((i for i, old in enumerate(self.reported) if _same(old, finding)), None)
            if known is None:
                self.reported.append(finding)
                changes.append((finding, "new"))
            elif _span(finding) >= 2 * _span(self.reported[known]):
                self.reported[known] = finding
                changes.append((finding, "updated"))
        return changes


def _span(finding: Finding) -> int:
    return finding.step_end - finding.step_start + 1


def _same(old: Finding, new: Finding) -> bool:
    return (old.rule == new.rule and old.metric == new.metric
            and new.step_start <= old.step_end and old.step_start <= new.step_end)


@dataclass
class _RunState:
    spec: RunSpec
    tails: dict[Path, Tail] = field(default_factory=dict)
    findings: Findings = field(default_factory=Findings)
    run: Run | None = None
    latest: list[Finding] = field(default_factory=list)
    problems: set = field(default_factory=set)
    points: int = 0  # a store run's points at the last poll


class Watcher:
    """The runs under `paths`, followed poll by poll. Paths that do not exist yet are looked for at each poll."""

    def __init__(self, paths: list[str], engine, roles: dict[str, str] | None = None, verify: bool = True) -> None:
        self.paths = list(paths)
        self.engine = engine
        self.roles = roles or {}
        self.verify = verify
        self.runs: dict[str, _RunState] = {}
        self.problems: list[tuple[str, Problem]] = []  # damage met in whole records, each once; the caller drains it

    def poll(self) -> list[Event]:
        """Read what is new under the paths; the findings that appeared or grew, in run order."""
        events = []
        for spec in self._specs():
            state = self.runs.get(spec.name)
            if state is None:
                state = self.runs[spec.name] = _RunState(spec)
            if spec.store:
                run = read_run(spec, verify=self.verify, roles=self.roles)
                points = sum(len(series) for series in run.series.values())
                if points != state.points:
                    state.points = points
                    events.extend(self._judge(state, run))
                continue
            state.spec.files.update(spec.files)  # a new event file of the run (a restart)
            grew = False
            for path in state.spec.files:
                tail = state.tails.get(path)
                if tail is None:
                    reader = reader_for(path)
                    if reader is None:
                        continue
                    tail = state.tails[path] = Tail(path, reader)
                grew |= tail.advance()
            if grew:
                events.extend(self._detect(state))
        return events

    def _specs(self) -> list[RunSpec]:
        specs = []
        for path in self.paths:
            try:
                found = find_runs([path])
            except LrdiagError:
                continue  # not there yet: a run that has not started
            specs.extend(found)
        return specs

    def _detect(self, state: _RunState) -> list[Event]:
        tails = {path: tail for path, tail in state.tails.items() if tail.data}
        spec = RunSpec(state.spec.name, {path: state.spec.files[path] for path in tails})
        run = read_run(spec, verify=self.verify, roles=self.roles, contents={p: t.data for p, t in tails.items()})
        return self._judge(state, run)

    def _judge(self, state: _RunState, run: Run) -> list[Event]:
        for problem in run.problems:
            if problem not in state.problems:
                state.problems.add(problem)
                self.problems.append((run.name, problem))
        if not any(len(series) for series in run.series.values()):
            return []
        state.run = run
        state.latest = self.engine.run(run)
        now = time.time()
        return [Event(run.name, finding, status, now) for finding, status in state.findings.update(state.latest)]

    def findings(self) -> dict[str, list[Finding]]:
        """Each run's findings on all it has read so far (those `lrdiag analyze` gives on the same data)."""
        return {name: state.latest for name, state in sorted(self.runs.items()) if state.run is not None}
