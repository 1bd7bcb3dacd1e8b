"""`lrdiag watch`: follow training logs while they are written and print each finding as it appears."""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import datetime, timezone

import click

from lrdiag.detect.finding import SEVERITY_RANK
from lrdiag.options import rule_options


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--interval", type=click.FloatRange(0.05, None), default=2.0, show_default=True,
              help="Seconds between two looks at the logs.")
@click.option("--format", "output_format", type=click.Choice(("text", "json")), default="text", show_default=True,
              help="json: one object a line, {run, finding, seen_at}.")
@rule_options
@click.option("--fail-on", type=click.Choice(("error", "warning")), default=None,
              help="The severity that --exit-on-finding and the exit status count [default: error].")
@click.option("--exit-on-finding", is_flag=True, help="Exit 1 at the first finding at or above --fail-on.")
@click.option("--no-verify", is_flag=True, help="Skip TFRecord checksum verification.")
def watch(paths, interval, output_format, select, ignore, rule_dirs, config_path, roles, fail_on, exit_on_finding,
          no_verify) -> None:
    """Follow the training logs under PATHS while they are written; print each finding when it appears.

    A path may not exist yet (a run about to start); new runs and new files of a run (a restart) are
    picked up at each look. A NaN, a spike or an explosion is printed at the look after it was written;
    a stall, a divergence or an oscillation at most a quarter of the run's length later. A finding is
    printed once, and again (marked `updated`) each time its step range has doubled. Runs until
    interrupted (Ctrl-C, SIGTERM), then prints each run's findings (those `lrdiag analyze` gives).

    \b
    Exit status:
      0  interrupted, and no finding at or above --fail-on
      1  a finding at or above --fail-on (at once with --exit-on-finding)
      2  usage or config error"""
    from lrdiag.config import project_setup
    from lrdiag.live.watcher import Watcher

    config, engine, role_map = project_setup(config_path, roles, select, ignore, rule_dirs)
    fail_on = fail_on or (config.fail_on if config.fail_on in SEVERITY_RANK else "error")
    watcher = Watcher(list(paths), engine, role_map, verify=not no_verify)
    click.echo(_inert(f"lrdiag: watching {', '.join(paths)} every {interval:g} s (Ctrl-C to stop)"), err=True)
    _interrupt_on_sigterm()
    announced: set[str] = set()
    try:
        while True:
            began = time.monotonic()
            # Each finding of a run the screen fired on is printed as soon as that run is judged.
            watcher.poll(budget=0, on_event=lambda event: _show([event], output_format, exit_on_finding, fail_on))
            for name in sorted(set(watcher.runs) - announced):
                announced.add(name)
                click.echo(_inert(f"lrdiag: following run {name}"), err=True)
            for name, problem in watcher.problems:
                where = f"{problem.where}: " if problem.where else ""
                click.echo(_inert(f"lrdiag: warning: {name}: {problem.file}: {where}{problem.message}"), err=True)
            watcher.problems.clear()
            _show(watcher.catch_up(budget=interval / 2), output_format, exit_on_finding, fail_on)  # due by growth
            time.sleep(max(0.0, interval - (time.monotonic() - began)))
    except KeyboardInterrupt:
        pass
    findings = watcher.findings()
    click.echo(_summary(findings), err=output_format == "json")
    sys.exit(1 if any(_at_least(f.severity, fail_on) for found in findings.values() for f in found) else 0)


def _show(events, output_format: str, exit_on_finding: bool, fail_on: str) -> None:
    for event in events:
        click.echo(_event_line(event, output_format))
    sys.stdout.flush()
    if exit_on_finding and any(_at_least(event.finding.severity, fail_on) for event in events):
        sys.exit(1)


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a job's end, `kill`) ends the watch as Ctrl-C does: with the summary."""

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


def _at_least(severity: str, fail_on: str) -> bool:
    return SEVERITY_RANK[severity] <= SEVERITY_RANK[fail_on]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_line(event, output_format: str) -> str:
    if output_format == "json":
        return json.dumps({"run": event.run, "finding": event.finding.to_dict(), "seen_at": _iso(event.seen_at),
                           "status": event.status}, allow_nan=False)
    finding = event.finding
    mark = "updated " if event.status == "updated" else ""
    return _inert(f"{_iso(event.seen_at)} {event.run}: {mark}{finding.severity} {finding.rule} {finding.name}  "
                  f"{finding.metric} {_where(finding)}: {finding.message}")


def _where(finding) -> str:
    start, end = finding.step_start, finding.step_end
    return f"step {start}" if start == end else f"steps {start}–{end}"


def _summary(findings: dict) -> str:
    from lrdiag.render.view import plural

    out = []
    counts: dict[str, int] = {}
    for run, found in findings.items():
        for finding in found:
            counts[finding.severity] = counts.get(finding.severity, 0) + 1
            out.append(_inert(f"{run}: {finding.severity} {finding.rule} {finding.name}  {finding.metric} "
                              f"{_where(finding)}: {finding.message}"))
    tally = ", ".join(f"{counts[s]} info" if s == "info" else plural(counts[s], s)
                      for s in ("error", "warning", "info") if s in counts)
    out.append(f"watched {plural(len(findings), 'run')}: {tally or 'no findings'}")
    return "\n".join(out)


def _inert(text: str) -> str:
    from lrdiag.render.view import inert

    return inert(text)
