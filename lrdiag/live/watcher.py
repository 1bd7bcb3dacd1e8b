"""Follow the runs under some paths while they are written: each poll reads what is new, screens each new
point, and judges a run with the full rules engine when the screen fires or the run has grown enough.

The findings are always the engine's on the whole series so far, so they are those of `lrdiag analyze` on
the same data by construction (a stall or a divergence judges the whole curve, and an explanation may drop
an earlier spike). What is incremental is *when* a run is judged. Re-running the engine at every poll costs
what analyzing the run costs (about 5 us a point: 10 ms for a run of 2,000 points), so a run is judged:

- at once when the screen (screen.py) fires on one of its new points: a NaN or infinite value, a rise that
  the spike or explosion rule could call one, a step logged again. These findings come at the poll after
  the point was written;
- when its points have grown by `growth` (a quarter) since its last judgement: stalls, divergences,
  oscillations, LR rules and rules from --rules folders come at most that fraction of the run late. Judging
  at geometric growth costs 1 / `growth` + 1 times one analysis of the run in all: O(points);
- before its findings are summed up (`findings()`), so the summary equals analyze.

A poll judges every run the screen fired on; judgements due by growth wait, oldest first, when a poll has
spent its `budget` of seconds on them, so that many runs growing in step do not all stall one poll.
A run in a tracker's store (MLflow, W&B) has no file of its own to tail: the store reads it whole at each
poll, and it is judged again when its number of points changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lrdiag.detect.finding import Finding
from lrdiag.errors import LrdiagError
from lrdiag.ingest.discover import RunSpec, find_runs, reader_for
from lrdiag.ingest.runs import read_run
from lrdiag.live.glance import Glance
from lrdiag.live.screen import Screen
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


class _Emitted(list):
    """A list of events that hands each one to `emit` as it is added."""

    def __init__(self, emit, events) -> None:
        super().__init__()
        self.emit = emit
        self.extend(events)

    def extend(self, events) -> None:
        for event in events:
            self.emit(event)
            self.append(event)


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
    glances: dict[Path, Glance] = field(default_factory=dict)
    screen: Screen | None = None
    seen: int = 0  # points glanced at so far
    judged: int = 0  # of them, those the last judgement read
    fired: bool = False  # the screen fired since the last judgement
    unjudged: bool = False  # whole records read since the last judgement


class Watcher:
    """The runs under `paths`, followed poll by poll. Paths that do not exist yet are looked for at each poll."""

    def __init__(self, paths: list[str], engine, roles: dict[str, str] | None = None, verify: bool = True,
                 growth: float = 0.25) -> None:
        """growth: judge a run again when its points grew by this fraction (0: at every poll it grew)."""
        self.paths = list(paths)
        self.growth = growth
        self.engine = engine
        self.roles = roles or {}
        self.verify = verify
        self.runs: dict[str, _RunState] = {}
        self._held: list[Event] = []  # events of judgements made outside a poll, for the next poll to return
        self._specs_found: list[RunSpec] = []
        self._discover_after = 0.0  # monotonic time before which the last discovery's runs are reused
        self.problems: list[tuple[str, Problem]] = []  # damage met in whole records, each once; the caller drains it

    def poll(self, budget: float | None = None, on_event=None) -> list[Event]:
        """Read what is new under the paths, judge each run the screen fired on as soon as it is read, then
        catch up on the judgements due by growth for `budget` seconds (None: all of them); the findings that
        appeared or grew. `on_event`: called with each of them the moment it is found (a run read late in a
        poll of a thousand runs should not wait for the rest)."""
        events, self._held = self._held, []
        if on_event:
            events = _Emitted(on_event, events)
        for spec in self._specs():
            state = self.runs.get(spec.name)
            if state is None:
                state = self.runs[spec.name] = _RunState(spec, screen=Screen.for_engine(self.engine, self.roles))
            if spec.unlisted:  # a folder that cannot be listed: its problem, said once
                self._report(state, spec.name, read_run(spec).problems)
                continue
            if spec.store:
                run = read_run(spec, verify=self.verify, roles=self.roles)
                points = sum(len(series) for series in run.series.values())
                if points != state.points:
                    state.points = points
                    events.extend(self._judge(state, run))
                continue
            state.spec.files.update(spec.files)  # a new event file of the run (a restart)
            for path in state.spec.files:
                tail = state.tails.get(path)
                if tail is None:
                    reader = reader_for(path)
                    if reader is None:
                        continue
                    tail = state.tails[path] = Tail(path, reader)
                    state.glances[path] = Glance(tail)
                if tail.advance():
                    state.unjudged = True
                    self._screen(state, path)
            if state.unjudged and (state.fired or not state.judged or self.growth <= 0):
                events.extend(self._detect(state))
        events.extend(self.catch_up(budget))
        return list(events)

    def catch_up(self, budget: float | None = None) -> list[Event]:
        """Judge the runs that grew by `growth` since their last judgement, the most overdue first, for up to
        `budget` seconds (None: all of them)."""
        events, began = [], time.monotonic()
        waiting = [state for state in self.runs.values()
                   if state.unjudged and state.seen >= state.judged * (1 + self.growth)]
        for state in sorted(waiting, key=lambda state: state.judged / max(state.seen, 1)):
            if budget is not None and time.monotonic() - began >= budget:
                break
            events.extend(self._detect(state))
        return events

    def _screen(self, state: _RunState, path: Path) -> None:
        points = state.glances[path].points()
        if points is None:
            state.fired = True
            return
        fires = state.screen.fires
        prefix = state.spec.files[path]  # the run's sub-folder (train/, validation/), as the readers name tags
        for key, step, value in points:
            if fires((path, key), prefix + key, step, value):
                state.fired = True
        state.seen += len(points)

    def _specs(self) -> list[RunSpec]:
        """The runs under the paths, looked for at each poll. Looking reads each log's head, which for a
        thousand runs costs more than following them: a discovery that took d > 0.05 seconds is reused for
        the next 9 d seconds (at most a tenth of the time goes to it); a new run or file is found within that."""
        if time.monotonic() < self._discover_after:
            return self._specs_found
        began = time.monotonic()
        specs = []
        for path in self.paths:
            try:
                found = find_runs([path])
            except LrdiagError:
                continue  # not there yet: a run that has not started
            specs.extend(found)
        self._specs_found = specs
        took = time.monotonic() - began
        self._discover_after = time.monotonic() + (9 * took if took > 0.05 else 0.0)
        return specs

    def _detect(self, state: _RunState) -> list[Event]:
        state.fired, state.unjudged, state.judged = False, False, state.seen
        tails = {path: tail for path, tail in state.tails.items() if tail.data}
        spec = RunSpec(state.spec.name, {path: state.spec.files[path] for path in tails})
        run = read_run(spec, verify=self.verify, roles=self.roles, contents={p: t.data for p, t in tails.items()})
        return self._judge(state, run)

    def _report(self, state: _RunState, name: str, problems: list[Problem]) -> None:
        for problem in problems:
            if problem not in state.problems:
                state.problems.add(problem)
                self.problems.append((name, problem))

    def _judge(self, state: _RunState, run: Run) -> list[Event]:
        self._report(state, run.name, run.problems)
        if not any(len(series) for series in run.series.values()):
            return []
        state.run = run
        state.latest = self.engine.run(run)
        now = time.time()
        return [Event(run.name, finding, status, now) for finding, status in state.findings.update(state.latest)]

    def settle(self) -> None:
        """Judge every run that read whole records since its last judgement (the next poll returns their events)."""
        self._held += [event for state in self.runs.values() if state.unjudged for event in self._detect(state)]

    def findings(self) -> dict[str, list[Finding]]:
        """Each run's findings on all it has read so far (those `lrdiag analyze` gives on the same data):
        runs not judged since they last grew are judged first."""
        self.settle()
        return {name: state.latest for name, state in sorted(self.runs.items()) if state.run is not None}
