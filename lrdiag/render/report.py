"""`lrdiag report`: the report model (each run's entry with display curves, rule docs, recommendations,
replays) and the command that writes it as one self-contained HTML file.

    {"schema": 1, "kind": "lrdiag-report", "lrdiag": "<version>", "paths": [...],
     "runs": [<analyze run entry> + {"curves": {tag: {"role", "points", "downsampled", "steps": ndarray,
                                                   "values": ndarray, "clock": {"start", "steps", "seconds"} | None}}}],
     "errors": [], "rules": {code: {"name", "severity", "category", "what", "why", "example", "fix"}},
     "recommendations": {run: {"candidates": [...], "replay": {...} | None}},
     "replays": {"dir", "runs": [{"label", "seed", "run", "findings", "curves"}]} | None}
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from lrdiag import __version__
from lrdiag.errors import LrdiagError
from lrdiag.options import check_executor, executor_options, rule_options, warn_unmatched_roles

CURVE_ROLES = ("train_loss", "val_loss", "lr")
# Points shown in the whole report, shared out among runs and then among a run's curves: 100 runs
# of 100k points (3 curves each) stay under 5 MB; a curve never gets fewer than MIN_POINTS nor more
# than MAX_POINTS, and a curve with fewer points is shown whole.
POINTS_BUDGET = 200_000
MIN_POINTS, MAX_POINTS = 400, 4000
_SEED_RE = re.compile(r"^(?P<label>.+)/seed(?P<seed>\d+)$")


def points_per_run(runs: int) -> int:
    return POINTS_BUDGET // max(runs, 1)


def curves(run, run_points: int) -> dict:
    """Each loss and LR series in step order, downsampled to the run's share; NaN/Inf kept, to show as gaps.
    Each carries the run's `clock` (the same for all: the report's time axes map steps to seconds with it)."""
    import numpy as np  # here, not at the top: the CLI imports this module for its command, and starts quicker

    from lrdiag.render.downsample import minmax

    chosen = {tag: series for tag, series in run.series.items() if series.role in CURVE_ROLES}
    max_points = min(max(run_points // max(len(chosen), 1), MIN_POINTS), MAX_POINTS)
    out = {}
    for tag, series in chosen.items():
        order = np.argsort(series.steps, kind="stable")
        steps, values = minmax(series.steps[order], series.values[order], max_points)
        out[tag] = {"role": series.role, "points": len(series), "downsampled": len(series) > max_points,
                    "steps": steps, "values": values}
    timing = clock(run) if out else None
    for curve in out.values():
        curve["clock"] = timing
    return out


CLOCK_POINTS = 64  # (step, wall time) pairs a run keeps for the report's time axes: a few KB for 100 runs


def clock(run) -> dict | None:
    """When the run's steps were logged, for the report's relative- and wall-time axes: from its series with the
    most wall times, up to CLOCK_POINTS (step, seconds since its first point) pairs, the seconds never going back
    (a resumed run's clock restarts), and the wall time of the first point (`start`, Unix seconds); None when no
    series has wall times (CSV logs without a time column)."""
    import numpy as np

    timed = [series for series in run.series.values() if series.wall_times is not None and len(series) > 1]
    if not timed:
        return None
    series = max(timed, key=len)
    order = np.argsort(series.steps, kind="stable")
    steps, wall = series.steps[order], series.wall_times[order]
    good = np.isfinite(wall) & (wall > 0)
    steps, wall = steps[good], wall[good]
    if steps.size < 2:
        return None
    pick = np.unique(np.linspace(0, steps.size - 1, min(CLOCK_POINTS, steps.size)).round().astype(int))
    seconds = np.maximum.accumulate(wall[pick] - wall[pick[0]])
    return {"start": float(wall[pick[0]]), "steps": steps[pick].tolist(), "seconds": np.round(seconds, 1).tolist()}


def report_run(spec, engine, roles: dict, run_points: int) -> dict | str:
    """One run's report entry: what `lrdiag analyze` says of it, and its curves for display; or why
    none of its files could be read."""
    from lrdiag.ingest.runs import read_run
    from lrdiag.output import run_entry

    from lrdiag.pipeline import unread_error

    run = read_run(spec, roles=roles)
    if unread := unread_error(run):
        return unread
    entry = run_entry(run, engine.run(run))
    entry["curves"] = curves(run, run_points)
    return entry


def read_all(specs: list, engine, roles: dict, run_points: int, jobs: int | None = None, executor: str = "local",
             address: str | None = None) -> tuple[list, list]:
    from lrdiag.pipeline import map_runs

    return map_runs(report_run, specs, engine, roles, run_points, jobs=jobs, executor=executor, address=address)


def rule_docs(rules) -> dict:
    return {rule.code: {"name": rule.name, "severity": rule.severity, "category": rule.category,
                        **{key: " ".join(rule.docs.get(key, "").split()) for key in ("what", "why", "example", "fix")}}
            for rule in rules}


def load_recommendations(path: Path) -> dict:
    """{run: {"candidates", "replay"}} from `lrdiag recommend --format json`; a bad file is one line."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise LrdiagError(f"{path}: cannot read the recommendations: {getattr(error, 'strerror', None) or error}") \
            from None
    except json.JSONDecodeError as error:
        raise LrdiagError(f"{path}: not valid JSON at line {error.lineno} ({error.msg}); expected the output of "
                          "`lrdiag recommend --format json`") from None
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if not isinstance(runs, list) or not all(isinstance(run, dict) and isinstance(run.get("run"), str)
                                             and isinstance(run.get("candidates", []), list) for run in runs):
        raise LrdiagError(f"{path}: not the output of `lrdiag recommend --format json` (expected \"runs\": "
                          "[{\"run\", \"candidates\": [...]}])")
    for run in runs:
        for candidate in run.get("candidates", []):
            if not (isinstance(candidate, dict) and isinstance(candidate.get("name"), str)
                    and isinstance(candidate.get("code", ""), str) and isinstance(candidate.get("lr_curve", []), list)):
                raise LrdiagError(f"{path}: run {run['run']!r}: each candidate needs a \"name\", \"code\" and "
                                  "\"lr_curve\" as `lrdiag recommend --format json` writes them")
    return {run["run"]: {"candidates": run.get("candidates", []), "replay": run.get("replay")} for run in runs}


def load_replays(folder: str, engine, roles: dict, run_points: int) -> dict:
    """Replay logs laid out as `lrdiag recommend --trainer` writes them: <label>/seed<k>/ TensorBoard runs."""
    from lrdiag.ingest.discover import find_runs

    specs = find_runs([folder])
    if not specs:
        raise LrdiagError(f"--replays {folder}: no replay logs found there (expected <control|candidate>/seed<k>/)")
    entries, errors = read_all(specs, engine, roles, run_points)
    out = []
    for entry in entries:
        match = _SEED_RE.match(entry["run"])
        label, seed = (match["label"], int(match["seed"])) if match else (entry["run"], None)
        out.append({"label": label, "seed": seed, "run": entry["run"], "findings": entry["findings"],
                    "curves": entry["curves"], "metrics": entry["metrics"], "files": entry["files"]})
    out.sort(key=lambda one: (one["label"] != "control", one["label"], one["seed"] or 0))
    return {"dir": folder, "runs": out, "errors": errors}


def build(paths: list[str], engine, rules, roles: dict, recommendations: Path | None = None,
          replays: str | None = None, jobs: int | None = None, executor: str = "local",
          address: str | None = None) -> dict:
    from lrdiag.pipeline import specs_or_raise

    specs = specs_or_raise(paths)
    recs = load_recommendations(recommendations) if recommendations else {}
    run_points = points_per_run(len(specs))
    runs, errors = read_all(specs, engine, roles, run_points, jobs, executor, address)
    return {"schema": 1, "kind": "lrdiag-report", "lrdiag": __version__, "paths": list(paths), "runs": runs,
            "errors": errors, "rules": rule_docs(rules), "recommendations": recs,
            "replays": load_replays(replays, engine, roles, run_points) if replays else None}


def inputs_of(model: dict, recommendations: Path | None) -> list[str]:
    """Every file the report was made from: the output may be none of them."""
    replays = model["replays"] or {"runs": []}
    return [file for run in model["runs"] + replays["runs"] for file in run.get("files", [])] + \
        ([str(recommendations)] if recommendations else [])


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", default="report.html", show_default=True, metavar="FILE",
              help="The HTML file to write: self-contained, opens offline.")
@click.option("--replays", metavar="DIR", type=click.Path(exists=True, file_okay=False),
              help="Replay logs of `lrdiag recommend --trainer` (its --out folder): control and candidates overlaid.")
@click.option("--recommendations", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The output of `lrdiag recommend --format json`: candidate schedules with code and LR curve.")
@rule_options
@click.option("--jobs", type=click.IntRange(1, None), default=None, help="Worker processes (default: one per core).")
@executor_options
def report(paths, output, replays, recommendations, roles, config_path, select, ignore, rule_dirs, jobs, executor,
           address) -> None:
    """Write one HTML file: every run's losses and LR with the findings drawn on them, an overview table,
    each finding's explanation, recommended schedules and replays.

    Exit status: 0 written; 2 usage or input error: a path that holds no run (nothing is written), a run that
    yields no point (the report shows the others), an output refused (a link, one of the inputs). The file is
    written whole or not at all."""
    from lrdiag import safeio
    from lrdiag.config import project_setup, rule_set
    from lrdiag.render import html
    from lrdiag.render.view import inert, plural

    safeio.check_output(output, what="report")  # a link or a folder: refused before any reading
    check_executor(executor, address, jobs)
    config, engine, role_map = project_setup(config_path, roles, select, ignore, rule_dirs)
    model = build(list(paths), engine, rule_set(config, rule_dirs), role_map, recommendations, replays, jobs,
                  executor, address)
    warn_unmatched_roles(roles, (tag for run in model["runs"] for tag in run["metrics"]))
    page = html.render(model)
    safeio.write_text(output, page, inputs_of(model, recommendations), what="report")
    findings = sum(len(run["findings"]) for run in model["runs"])
    incidents = sum(len(run.get("incidents", [])) for run in model["runs"])
    runs = len(model["runs"])
    click.echo(f"wrote {output}: {plural(runs, 'run')}, {plural(incidents, 'incident')} ({plural(findings, 'finding')}), "
               f"{len(page) / 1e6:.2f} MB", err=True)
    for error in model["errors"]:
        click.echo(f"lrdiag: error: {inert(error)}", err=True)
    if model["errors"]:
        sys.exit(2)
