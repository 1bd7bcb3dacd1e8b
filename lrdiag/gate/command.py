"""`lrdiag gate` and `lrdiag baseline save`: fail a CI build when training regressed against a baseline."""

from __future__ import annotations

import os
import sys
from itertools import chain
from pathlib import Path

import click

from lrdiag.options import rule_options, warn_unmatched_roles

GATE_FORMATS = ("text", "json", "junit", "github", "markdown")

def read_runs(path: str, engine, roles: dict) -> list[tuple]:
    """Every run under `path`, read, with its findings as dicts."""
    from lrdiag.errors import LrdiagError
    from lrdiag.ingest.runs import read_run
    from lrdiag.pipeline import specs_or_raise, unread_error

    runs = []
    for spec in specs_or_raise([path]):
        run = read_run(spec, roles=roles)
        if unread := unread_error(run):
            raise LrdiagError(unread)
        runs.append((run, [finding.to_dict() for finding in sorted(engine.run(run))]))
    return runs


def summaries(path: str, engine, roles: dict) -> list[dict]:
    """Baseline entries from a saved baseline file, or from the runs under `path`."""
    from lrdiag.errors import LrdiagError
    from lrdiag.gate import baseline

    if Path(path).is_file():
        try:  # a file that cannot be opened: its own error, not a guess at its format
            open(path, "rb").close()
        except OSError as error:
            raise LrdiagError(f"{path}: cannot read the baseline: {error.strerror or error}") from None
    if baseline.is_baseline_file(Path(path)):
        return baseline.load(Path(path))
    entries = [baseline.summarize(run, findings) for run, findings in read_runs(path, engine, roles)]
    empty = [entry["run"] for entry in entries if not entry["metrics"]]
    if empty:
        raise LrdiagError(f"{path}: not an lrdiag baseline file, and run {empty[0]} has no loss metric to gate on")
    return entries


@click.command()
@click.argument("candidate")
@click.option("--baseline", "baseline_paths", multiple=True, required=True, metavar="BASELINE",
              help="A run (any log format) or a file from `lrdiag baseline save`; repeat it, or save several runs "
                   "in one file, to gate on their spread.")
@click.option("--metric", "metrics", multiple=True, metavar="ROLE_OR_TAG",
              help="Gate this loss: a role (val_loss, train_loss) or a tag (repeatable).  [default: every loss role "
                   "of the baseline]")
@click.option("--max-regression", metavar="TOLERANCE",
              help="How much worse is still a pass: absolute (0.01), relative (2%), or 'spread' (the 99% prediction "
                   "bound of several baselines).  [default: 2%, or spread with several baselines]")
@click.option("--fail-on", type=click.Choice(("error", "warning", "never")), default=None,
              help="A new finding at least this severe fails the gate; never: only the loss checks gate.  "
                   "[default: error]")
@click.option("--format", "output_format", type=click.Choice(GATE_FORMATS), default="text", show_default=True)
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when the gate fails (2 still means a usage or input error).")
@rule_options
def gate(candidate, baseline_paths, metrics, max_regression, fail_on, output_format, exit_zero, roles,
         config_path, select, ignore, rule_dirs) -> None:
    """Compare the CANDIDATE run with baselines: final and best loss, convergence speed, new findings, NaN/Inf.

    Exit status: 0 pass, 1 regression, 2 usage or input error. With --format github and
    $GITHUB_STEP_SUMMARY set (as in every GitHub Actions step), a Markdown summary is appended to it."""
    from lrdiag.config import project_setup
    from lrdiag.gate import checks

    config, engine, role_map = project_setup(config_path, roles, select, ignore, rule_dirs)
    fail_on = fail_on or config.fail_on or "error"
    for path in (candidate, *baseline_paths):
        if not Path(path).exists():
            raise click.UsageError(f"{path}: no such file or folder")
    baselines = [entry for path in baseline_paths for entry in summaries(path, engine, role_map)]
    tolerance = checks.Tolerance.parse(max_regression, len(baselines))
    selectors = checks.resolve_metrics(list(metrics), baselines)
    candidates = read_runs(candidate, engine, role_map)
    warn_unmatched_roles(roles, chain((tag for entry in baselines for tag in entry["metrics"]),
                                      (tag for run, _ in candidates for tag in run.series)))
    gates = [checks.gate(run, findings, baselines, selectors, tolerance, fail_on) for run, findings in candidates]
    doc = checks.document(gates, baselines, tolerance, fail_on)
    click.echo(render(doc, output_format))
    if output_format == "github":
        append_step_summary(doc)
    sys.exit(0 if exit_zero or doc["passed"] else 1)


def render(doc: dict, output_format: str, fail_on: str = "error") -> str:
    """Any output model (analyze or gate) in one of the formats."""
    import json

    from lrdiag.render import github, gatetext, junit, markdown, text

    if output_format == "json":
        return json.dumps(doc, indent=2, allow_nan=False)
    if output_format == "text":
        return gatetext.render(doc) if doc.get("kind") == "lrdiag-gate" else text.render(doc, color=sys.stdout.isatty())
    module = {"junit": junit, "github": github, "markdown": markdown}[output_format]
    return module.render(doc, fail_on=fail_on)


def append_step_summary(doc: dict, fail_on: str = "error") -> None:
    """GitHub Actions shows the Markdown in $GITHUB_STEP_SUMMARY on the run's page; called for --format github,
    so that a second call of the same step (JUnit to a file, say) does not repeat the summary."""
    from lrdiag.render import markdown

    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(markdown.render(doc, fail_on=fail_on) + "\n")
    except OSError as error:
        click.echo(f"lrdiag: warning: cannot append to $GITHUB_STEP_SUMMARY ({path}): {error.strerror or error}",
                   err=True)


@click.group()
def baseline() -> None:
    """Save a baseline to gate later runs against (`lrdiag gate RUN --baseline FILE`)."""


@baseline.command("save")
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", default="-", show_default=True, metavar="FILE",
              help="Where to write the baseline JSON ('-': standard output).")
@rule_options
def save(paths, output, roles, config_path, select, ignore, rule_dirs) -> None:
    """Summarize the runs under PATHS: values at checkpoints, best and final losses, steps to 50/80/90/95 % of
    the loss drop, findings. Several runs (seeds) in one file let the gate use their spread.

    Exit status: 0 saved; 2 usage or input error (a path without a readable run, a run without a loss), or an
    output refused (a link, one of the inputs). The file is written whole or not at all."""
    from lrdiag import safeio
    from lrdiag.config import project_setup
    from lrdiag.errors import LrdiagError
    from lrdiag.gate import baseline as baseline_file

    _, engine, role_map = project_setup(config_path, roles, select, ignore, rule_dirs)
    if output != "-":
        safeio.check_output(output, what="baseline")  # a link or a folder: refused before any reading
    entries, inputs, tags = [], [], set()
    for path in paths:
        for run, findings in read_runs(path, engine, role_map):
            inputs += run.files
            tags |= set(run.series)
            entries.append(baseline_file.summarize(run, findings))
            if not entries[-1]["metrics"]:
                raise LrdiagError(f"{path}: run {run.name} has no training or validation loss to save "
                                  "(use --role val_loss=TAG to name one)")
    warn_unmatched_roles(roles, tags)
    baseline_file.save(baseline_file.document(entries), output, inputs)
    if output != "-":
        click.echo(f"saved a baseline of {len(entries)} run{'s' if len(entries) != 1 else ''} to {output}", err=True)
