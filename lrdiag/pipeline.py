"""The analyze pipeline end to end: discover runs, read each, detect, build the output model.

Runs are independent, so many runs are spread over a process pool (one worker per core); a run
that fails in a way no reader caught becomes an error entry, and the other runs go on.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import click

from lrdiag.ingest.discover import RunSpec, find_runs
from lrdiag.ingest.runs import read_run
from lrdiag.output import document, run_entry

_POOL_FROM = 8  # below this many runs a pool costs more than it saves


@dataclass
class Options:
    verify: bool = True
    roles: dict[str, str] = field(default_factory=dict)
    engine: object | None = None  # a detect.engine.Engine, or None to only read


def analyze_spec(spec: RunSpec, options: Options) -> dict:
    run = read_run(spec, verify=options.verify, roles=options.roles)
    findings = options.engine.run(run) if options.engine is not None else []
    return run_entry(run, findings)


def _safely(work, spec: RunSpec, *args) -> dict | str:
    """`work(spec, *args)`, or one line saying why it failed: one run's bug must not stop the others."""
    try:
        return work(spec, *args)
    except MemoryError:
        return f"{spec.name}: out of memory while analyzing this run"
    except Exception as error:  # noqa: BLE001 - one run's bug must not stop the others
        return f"{spec.name}: internal error ({type(error).__name__}: {error}); this is a bug, please report it"


def map_runs(work, specs: list[RunSpec], *args, jobs: int | None = None,
             progress: bool | None = None) -> tuple[list[dict], list[str]]:
    """`work(spec, *args)` for every run, over a process pool when there are many (`work` and its
    arguments must pickle); the entries, and the error lines of the runs that failed."""
    jobs = jobs or os.cpu_count() or 1
    if progress is None:
        progress = sys.stderr.isatty() and len(specs) >= 10
    calls = ([work] * len(specs), specs, *([arg] * len(specs) for arg in args))
    if jobs > 1 and len(specs) >= _POOL_FROM:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            # Small chunks: the last one should not leave a core idle for long.
            chunksize = max(1, len(specs) // (jobs * 32))
            results = list(_with_progress(pool.map(_safely, *calls, chunksize=chunksize), len(specs), progress))
    else:
        results = list(_with_progress(map(_safely, *calls), len(specs), progress))
    return [r for r in results if isinstance(r, dict)], [r for r in results if isinstance(r, str)]


def analyze(paths: list[str], options: Options, jobs: int | None = None, progress: bool | None = None) -> dict:
    entries, errors = map_runs(analyze_spec, find_runs(paths), options, jobs=jobs, progress=progress)
    return document(entries, errors)


def _with_progress(results, total: int, progress: bool):
    if not progress:
        yield from results
        return
    with click.progressbar(results, length=total, label="analyzing runs", file=sys.stderr) as bar:
        yield from bar
