"""The analyze pipeline end to end: discover runs, read each, detect, build the output model.

Runs are independent, so many runs are spread over a process pool (one worker per core), or over a
Ray cluster with executor "ray" (lrdiag/cluster.py); a run that fails in a way no reader caught
becomes an error entry, and the other runs go on. So do a path that holds no run and a run that
yields no point: input errors (exit 2), never "no findings".
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import click

from lrdiag.errors import LrdiagError
from lrdiag.ingest.discover import RunSpec, find_runs
from lrdiag.ingest.runs import read_run
from lrdiag.output import document, run_entry
from lrdiag.series.model import Run

_POOL_FROM = 8  # below this many runs a pool costs more than it saves


@dataclass
class Options:
    verify: bool = True
    roles: dict[str, str] = field(default_factory=dict)
    engine: object | None = None  # a detect.engine.Engine, or None to only read


def analyze_spec(spec: RunSpec, options: Options) -> dict | str:
    run = read_run(spec, verify=options.verify, roles=options.roles)
    unread = unread_error(run)
    if unread:
        return unread
    findings = options.engine.run(run) if options.engine is not None else []
    return run_entry(run, findings)


def unread_error(run: Run) -> str | None:
    """Why `run` gave no point of any metric, or None: a run that yields nothing to diagnose (files that
    could not be read, a header without rows, an event file without scalars) is an input error, exit 2,
    never a run with "no findings" that a CI gate would pass."""
    if any(len(series) for series in run.series.values()):
        return None
    if not run.problems:
        files = len(run.files)
        return (f"{run.name}: no metric was logged in {'its file' if files == 1 else f'any of its {files} files'} "
                "(no scalar point): nothing to diagnose")
    unread = set(run.files) <= {problem.file for problem in run.problems}
    first = run.problems[0]
    where = f"{first.where}: " if first.where else ""
    more = len(run.problems) - 1
    return (f"{run.name}: {'no file of this run could be read' if unread else 'no metric could be read'}: "
            f"{first.file}: {where}{first.message}" + (f" (and {more} more problem{'s' if more != 1 else ''})"
                                                       if more else ""))


def find_specs(paths: list[str]) -> tuple[list[RunSpec], list[str]]:
    """The runs under each path, and one error line for each path that yields none (an empty or
    unreadable folder, a folder without logs): a path that holds no run is an input error."""
    specs, errors = [], []
    for path in paths:
        found = find_runs([path])
        if not found:
            errors.append(no_run_reason(path))
        specs.extend(found)
    return specs, errors


def no_run_reason(path: str) -> str:
    if os.path.isdir(path):
        try:
            entries = os.listdir(path)
        except OSError as error:
            return f"{path}: cannot read this folder: {error.strerror or error}"
        if not entries:
            return f"{path}: the folder is empty: no training logs found there"
    return (f"{path}: no training logs found there (expected TensorBoard event files, CSV or JSON logs, or an "
            "MLflow or W&B store)")


def specs_or_raise(paths: list[str]) -> list[RunSpec]:
    """find_specs for the commands that need every path to hold runs: the first error is a user error."""
    specs, errors = find_specs(paths)
    if errors:
        raise LrdiagError(errors[0])
    return specs


def safely(work, spec: RunSpec, *args) -> dict | str:
    """`work(spec, *args)`, or one line saying why it failed: one run's bug must not stop the others."""
    try:
        return work(spec, *args)
    except MemoryError:
        return f"{spec.name}: out of memory while analyzing this run"
    except Exception as error:  # noqa: BLE001 - one run's bug must not stop the others
        return f"{spec.name}: internal error ({type(error).__name__}: {error}); this is a bug, please report it"


def map_runs(work, specs: list[RunSpec], *args, jobs: int | None = None, progress: bool | None = None,
             executor: str = "local", address: str | None = None) -> tuple[list[dict], list[str]]:
    """`work(spec, *args)` for every run, over a process pool when there are many, or as Ray tasks with
    executor "ray" (lrdiag/cluster.py: on the cluster at `address`, else on a Ray of this machine with `jobs`
    CPUs); `work` and its arguments must pickle. The entries, and the error lines of the runs that failed,
    in the order of `specs` either way. Progress (None: as fits stderr; False: none): a bar on a terminal,
    plain lines every PROGRESS_EVERY s in a CI log."""
    if executor == "ray" and specs:  # no run: no cluster to start or join
        from lrdiag import cluster

        with cluster.connected(address, jobs) as ray:
            done = dict(_with_progress(cluster.as_completed(ray, work, specs, args), len(specs), progress))
        results = [done[index] for index in range(len(specs))]
    elif (jobs or os.cpu_count() or 1) > 1 and len(specs) >= _POOL_FROM:
        from concurrent.futures import ProcessPoolExecutor  # here: its import costs a one-run analysis ~10 ms

        jobs = jobs or os.cpu_count()
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            # Small chunks: the last one should not leave a core idle for long.
            chunksize = max(1, len(specs) // (jobs * 32))
            results = list(_with_progress(pool.map(safely, *_calls(work, specs, args), chunksize=chunksize),
                                          len(specs), progress))
    else:
        results = list(_with_progress(map(safely, *_calls(work, specs, args)), len(specs), progress))
    return [r for r in results if isinstance(r, dict)], [r for r in results if isinstance(r, str)]


def _calls(work, specs: list[RunSpec], args: tuple) -> tuple:
    return [work] * len(specs), specs, *([arg] * len(specs) for arg in args)


def analyze(paths: list[str], options: Options, jobs: int | None = None, progress: bool | None = None,
            executor: str = "local", address: str | None = None) -> dict:
    specs, missing = find_specs(paths)
    entries, errors = map_runs(analyze_spec, specs, options, jobs=jobs, progress=progress, executor=executor,
                               address=address)
    return document(entries, missing + errors)


PROGRESS_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal (a CI log)


def _with_progress(results, total: int, progress: bool | None):
    if progress is False:
        yield from results
    elif not sys.stderr.isatty():
        yield from progress_lines(results, total, "analyzing runs")
    elif progress or total >= 10:
        with click.progressbar(results, length=total, label="analyzing runs", file=sys.stderr) as bar:
            yield from bar
    else:
        yield from results


def progress_lines(results, total: int, label: str):
    """Pass `results` through, and say on stderr how far along they are every PROGRESS_EVERY seconds: a CI log
    shows no bar, and a silent job looks hung. Work that ends sooner prints nothing."""
    began = last = time.monotonic()
    for done, result in enumerate(results, 1):
        yield result
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY and done < total:
            last = now
            click.echo(f"lrdiag: {label}: {done} of {total} done ({100 * done // total}%), {now - began:.0f} s",
                       err=True)
