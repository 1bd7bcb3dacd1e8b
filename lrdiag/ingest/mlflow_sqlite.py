"""Read MLflow's SQL store in SQLite (`mlflow.db`, `mlruns.db`): one run a row of `runs`, its points in `metrics`.

The database is opened read-only (`mode=ro`) with the standard library's sqlite3, and each query
is its own short transaction, so a training job still logging to it is never locked out for
longer than one run's read. A database another process keeps locked past the wait gives a
problem naming it, as does one whose tables lack the columns read here (an MLflow schema this
reader does not know; the message names its alembic version).

Runs are named `experiment name/run name` (the `mlflow.runName` tag, else `runs.name`, else the
run id); deleted runs and experiments are skipped, and so are runs without metrics. Points come
in the order they were logged (rowid), sorted by step with that order kept within a step, so
that the last logged wins where one value a step is taken (`detect.base.clean`). MLflow stores
NaN as `is_nan` and +-Inf as +-1.7976931348623157e308 (SQL has no Inf): both are read back as
what was logged.
"""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from itertools import compress
from pathlib import Path

import numpy as np

from lrdiag.ingest import files
from lrdiag.ingest.textlog import report, whole_steps
from lrdiag.series.model import Problem, ReadResult, Series

NAME = "mlflow_sqlite"
_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_MAGIC = b"SQLite format 3\0"
_WAIT_S = 2.0  # how long to wait for a writer's lock: MLflow commits each logged batch in milliseconds
_NEEDED = {
    "metrics": {"key", "value", "timestamp", "run_uuid", "step", "is_nan"},
    "runs": {"run_uuid", "name", "experiment_id", "lifecycle_stage"},
    "experiments": {"experiment_id", "name", "lifecycle_stage"},
    "tags": {"key", "value", "run_uuid"},
}
_RUNS = """
SELECT runs.run_uuid, experiments.name,
       COALESCE(NULLIF((SELECT value FROM tags WHERE tags.run_uuid = runs.run_uuid AND tags.key = 'mlflow.runName'), ''),
                NULLIF(runs.name, ''), runs.run_uuid)
FROM runs JOIN experiments ON experiments.experiment_id = runs.experiment_id
WHERE runs.lifecycle_stage != 'deleted' AND experiments.lifecycle_stage != 'deleted'
  AND EXISTS (SELECT 1 FROM metrics WHERE metrics.run_uuid = runs.run_uuid)
ORDER BY experiments.name, runs.start_time, runs.run_uuid
"""
_POINTS = "SELECT key, value, step, timestamp, is_nan FROM metrics WHERE run_uuid = ? ORDER BY rowid"


def claim(path: Path) -> list[tuple[str, str, str]] | None:
    """The runs (name, database, run id) of an MLflow SQLite database; None for any other file."""
    if path.suffix.lower() not in _SUFFIXES or not path.is_file():
        return None
    try:
        if files.read_bytes(path, len(_MAGIC)) != _MAGIC:
            return None
        with closing(_connect(path)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" not in tables or "metrics" not in tables:
                return None  # some other SQLite database
            if _schema_problem(connection, path):
                return [(path.name, str(path), "")]
            rows = connection.execute(_RUNS).fetchall()
    except (OSError, sqlite3.Error):
        return [(path.name, str(path), "")]  # read() says what is wrong with it
    names = [f"{experiment}/{run}" for _, experiment, run in rows]
    return [(name + (f" ({run_id[:8]})" if names.count(name) > 1 else ""), str(path), run_id)
            for name, (run_id, _, _) in zip(names, rows)]


def read(database: str, run: str = "") -> ReadResult:
    """Every metric of one run; with no run id, the problem that kept claim() from listing the runs."""
    path, run_id = Path(database), run
    result = ReadResult("mlflow_sqlite")
    try:
        with closing(_connect(path)) as connection:
            problem = _schema_problem(connection, path)
            if problem is None and not run_id:
                connection.execute(_RUNS).fetchall()  # claim() failed to list the runs: find out why
            elif problem is None:
                rows = connection.execute(_POINTS, (run_id,)).fetchall()
    except sqlite3.OperationalError as error:
        problem = _operational(error)
    except (OSError, sqlite3.Error) as error:
        problem = f"cannot read this MLflow database: {error}"
    if problem is not None:
        result.problems.append(Problem(database, "", problem))
        return result
    if not run_id:
        return result
    result.series = series_of(rows, database, result.problems)
    return result


def series_of(rows: list[tuple], database: str = "", problems: list[Problem] | None = None) -> dict[str, Series]:
    """{key: series} of a run's (key, value, step, timestamp, is_nan) rows in logged order: keys sorted, each
    key's points sorted by step with the logged order kept within a step. numpy and a dict, not pandas: its
    import (0.2-0.3 s of CPU) costs more than reading a small run, and this is faster for a big one too (1M rows
    of 5 keys: 0.33 s of CPU against 0.52 s for DataFrame.from_records and groupby). A step that is no int64
    (MLflow writes BIGINTs; a database edited by hand may hold a REAL) is checked as the text readers check
    theirs, a problem in `problems` naming `database` and the metric."""
    if not rows:
        return {}
    keys, values, steps, times, nans = ([row[field] for row in rows] for field in range(5))  # zip(*rows): 5x slower
    cells, steps = steps, np.array(steps)
    if steps.dtype.kind != "i":
        floats = np.array([_float(step) for step in cells], np.float64)
        problems = problems if problems is not None else []
        report(problems, Path(database), np.flatnonzero(np.isnan(floats)),
               lambda index: (f"metric {keys[index]!r}", "a step that is no number; point skipped"),
               "points whose step is no number skipped")
        kept, steps = whole_steps(floats, ~np.isnan(floats), keys, "step", Path(database), problems, where="metric {!r}")
        if not kept.all():
            keys, values, times, nans = (list(compress(column, kept.tolist())) for column in (keys, values, times, nans))
            steps = steps[kept]
        if not keys:
            return {}
    index: dict[str, int] = {}  # each key's number, in order of first appearance
    codes = np.fromiter((index.setdefault(key, len(index)) for key in keys), np.int64, len(keys))
    names = sorted(index)
    ranks = np.empty(len(names), np.int64)
    ranks[[index[name] for name in names]] = np.arange(len(names))
    ranks = ranks[codes]  # each point's key's place in sorted order
    values = np.array(values, np.float64)
    values[values >= sys.float_info.max] = np.inf
    values[values <= -sys.float_info.max] = -np.inf
    values[np.array(nans, bool)] = np.nan
    times = np.array(times, np.float64) / 1000.0
    order = np.lexsort((steps, ranks))  # by key, then by step; stable, so logged order within a step
    bounds = np.searchsorted(ranks[order], np.arange(len(names) + 1))
    series = {}
    for place, key in enumerate(names):
        mine = order[bounds[place]:bounds[place + 1]]
        series[key] = Series(key, steps[mine], values[mine], times[mine])
    return series


def _float(step) -> float:
    """A step cell as a float: NaN for text or a NULL, +-inf past a float's range."""
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        return np.nan
    try:
        return float(step)
    except OverflowError:
        return np.inf if step > 0 else -np.inf


def _connect(path: Path) -> sqlite3.Connection:
    # `mode=ro`: never creates, never writes, and takes only the shared lock a reader needs.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=_WAIT_S)


def _schema_problem(connection: sqlite3.Connection, path: Path) -> str | None:
    """Why this database's tables cannot be read here, or None."""
    missing = []
    for table, columns in _NEEDED.items():
        present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        missing += [f"{table}.{column}" for column in sorted(columns - present)]
    if not missing:
        return None
    try:
        version = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    except (sqlite3.Error, TypeError):
        version = "unknown"
    return (f"unknown MLflow database schema (alembic version {version}): no column {', '.join(missing)}; "
            "lrdiag reads the schema of MLflow 1.x to 3.x")


def _operational(error: sqlite3.OperationalError) -> str:
    if "locked" in str(error) or "busy" in str(error):
        return (f"database is locked by another process (waited {_WAIT_S:g} s): its runs were not read; "
                "run lrdiag again when the writer has committed")
    return f"cannot read this MLflow database: {error}"
