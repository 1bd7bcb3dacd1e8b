"""Read MLflow's file store (`mlruns/`): one run a `<experiment>/<run>/` folder, one metric a file.

A metric file under `<run>/metrics/` holds one `timestamp value step` line a logged point (MLflow
3 adds a fourth field, the run id, in logged-model metrics; MLflow before 0.9 wrote no step, read
as step 0). A key with `/` is a nested folder: `metrics/train/loss` is `train/loss`. Points are
ordered by step, in logged order within a step, so that a step logged twice keeps both and the
last logged wins where the detectors take one value a step (`detect.base.clean`), as on a restart.

Runs are named `experiment name/run name`: the run name from `meta.yaml` (`run_name`), else the
`mlflow.runName` tag, else the old `name` field, else the run id. Deleted runs and experiments
(`lifecycle_stage: deleted`, or under `.trash/`) are skipped, and so are runs without metrics
(parents of nested runs, params-only runs). MLflow 3's `models/m-*/` folders hold copies of
their source run's metrics under the logged model and are not runs.

`meta.yaml` is read for a few top-level fields by a small parser of its own (the `key: value`
lines `yaml.safe_dump` writes): PyYAML is no core dependency of lrdiag (tensorboard does not
bring it), and the whole of YAML is not needed for five fields.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from lrdiag.ingest import files
from lrdiag.ingest.textlog import cap_problems
from lrdiag.series.model import Problem, ReadResult, Series

NAME = "mlflow"
_FIELDS = ["timestamp", "value", "step", "run_id"]  # run_id: MLflow 3's logged-model metrics only
_TYPES = {"timestamp": np.float64, "value": np.float64, "step": np.int64}
_NOT_RUNS = {"models", "datasets", "traces", ".trash", "tags"}
# Metric files are parsed by the split below (bytes.split, numpy for the cells) or by pandas' C parser, to the same
# points (tests/test_ingest_mlflow.py reads every store both ways). Measured on MLflow's own lines (pandas
# imported): the split costs ~31 ms of CPU a MB, pandas ~3 ms a MB plus ~0.8 ms a file, even at ~32 KB
# (1,000 lines); importing pandas (with pyarrow) costs 0.25-0.35 s: `analyze` of a small file-store run took
# 0.51 s with it, 0.23 s without. So files under SMALL_BYTES are always split; a run's bigger ones too while the
# process has split under PLAIN_BUDGET bytes in all (~0.25 s of splitting, about pandas' import: rent or buy,
# as csvlog.PLAIN_BUDGET) and pandas is not imported anyway (then its parser is the faster one). The split's
# Python tokens peak at ~5x the file, so the budget also bounds that.
SMALL_BYTES = 32 << 10
PLAIN_BUDGET = 8 << 20
_plain_spent = 0
_NEWLINE = ord("\n")
_BLANKS = np.zeros(256, bool)  # the bytes bytes.split() splits on
_BLANKS[list(b" \t\n\r\x0b\x0c")] = True


def claim(path: Path) -> list[tuple[str, str, str]] | None:
    """The runs (name, run folder, "") of an MLflow experiment folder, of one run folder, or none for a
    `.trash` folder of deleted experiments; None when the folder is not part of a file store."""
    meta = read_meta(path / "meta.yaml")  # {} for a file, or a folder without one
    if _is_run(meta):
        if meta.get("lifecycle_stage") == "deleted" or not (path / "metrics").is_dir():
            return []
        experiment = read_meta(path.parent / "meta.yaml").get("name") or meta.get("experiment_id") or path.parent.name
        return [(f"{experiment}/{run_name(path, meta)}", str(path), "")]
    if _is_experiment(meta):
        if meta.get("lifecycle_stage") == "deleted" or path.parent.name == ".trash":
            return []
        return _experiment_runs(path, meta)
    if path.name == ".trash" and any(_is_experiment(read_meta(child / "meta.yaml")) for child in _subfolders(path)):
        return []
    return None


def _experiment_runs(path: Path, meta: dict) -> list[tuple[str, str, str]]:
    experiment = meta.get("name") or meta.get("experiment_id") or path.name
    runs = []
    for folder in _subfolders(path):
        run_meta = read_meta(folder / "meta.yaml") if folder.name not in _NOT_RUNS else {}
        if _is_run(run_meta) and run_meta.get("lifecycle_stage") != "deleted" and _has_metrics(folder / "metrics"):
            runs.append((run_name(folder, run_meta), folder))
    names = [name for name, _ in runs]
    return [(f"{experiment}/{name}" + (f" ({folder.name[:8]})" if names.count(name) > 1 else ""), str(folder), "")
            for name, folder in runs]


def run_name(folder: Path, meta: dict) -> str:
    """The name MLflow shows for a run."""
    if meta.get("run_name"):
        return meta["run_name"]
    try:
        tag = files.read_bytes(folder / "tags" / "mlflow.runName").decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        tag = ""
    return tag or meta.get("name") or meta.get("run_id") or meta.get("run_uuid") or folder.name


def read(where: str, run: str = "") -> ReadResult:
    """Every metric of one run folder."""
    root = Path(where) / "metrics"
    result = ReadResult("mlflow_file_store")
    paths = []
    for folder, subfolders, files in os.walk(root, onerror=lambda error: result.problems.append(
            Problem(str(error.filename or root), "", f"cannot read folder: {error.strerror or error}"))):
        subfolders.sort()
        paths += [Path(folder) / name for name in sorted(files)]
    plain = _parse_plainly(sum(map(_size, paths)))
    for path in paths:
        key = path.relative_to(root).as_posix()
        series = _read_metric(path, key, result.problems, plain)
        if series is not None:
            result.series[key] = series
    result.problems = cap_problems(result.problems, root)
    return result


def _read_metric(path: Path, key: str, problems: list[Problem], plain: bool = True) -> Series | None:
    try:
        data = files.read_bytes(path)  # never blocks on a FIFO named like a metric
    except OSError as error:
        problems.append(Problem(str(path), "", f"cannot read file: {error.strerror or error}"))
        return None
    if data.endswith(b"\n") and not (plain or len(data) < SMALL_BYTES):  # whole lines: pandas' parser, if well formed
        import pandas as pd  # here, not at the top: discovery imports this module to claim folders

        try:
            table = pd.read_csv(io.BytesIO(data), sep=" ", header=None, names=_FIELDS, dtype=_TYPES, engine="c",
                                keep_default_na=False, na_values=["nan"], skip_blank_lines=False)
        except (ValueError, OverflowError, pd.errors.ParserError):
            table = None  # a bad line (a step past int64 among them): found and reported line by line below
        if table is not None and len(table) == data.count(b"\n"):
            return _sorted_series(key, table["timestamp"].to_numpy(), table["value"].to_numpy(),
                                  table["step"].to_numpy())
    whole = data.rfind(b"\n") + 1
    body, cut = data[:whole], data[whole:]  # cut: b"" when the file ends with a newline, as MLflow writes it
    widths = _fields_per_line(body)
    if cut.strip():
        problems.append(Problem(str(path), f"line {len(widths) + 1}",
                                "last line cut short (no end of line), left out; was the run still being written?"))
    tokens = body.split()  # on the blanks bytes.split() splits on: _BLANKS
    good = np.flatnonzero((widths >= 2) & (widths <= 4))
    bad = np.flatnonzero(((widths < 2) | (widths > 4)) & (widths > 0))[:20]
    lines = body.split(b"\n") if len(bad) else []
    for index in bad:
        problems.append(Problem(str(path), f"line {index + 1}",
                                f"expected 'timestamp value step', got {lines[index][:60].decode(errors='replace')!r}; line skipped"))
    firsts = (np.cumsum(widths) - widths)[good]  # each good line's first field among the tokens
    thirds = np.where(widths[good] >= 3, firsts + 2, len(tokens))  # a line without a step (MLflow < 0.9): step 0
    picked = np.stack([firsts, firsts + 1, thirds], axis=1).ravel().tolist()
    tokens.append(b"0")
    table = np.array(list(map(tokens.__getitem__, picked)), dtype=bytes).reshape(-1, 3)
    try:
        times, values, steps = table[:, 0].astype(np.float64), table[:, 1].astype(np.float64), table[:, 2].astype(np.int64)
    except (ValueError, OverflowError):  # a field that is no number, or a step past int64
        times, values, steps, good = _parse_slowly(table, good, lines or body.split(b"\n"), path, problems)
    return _sorted_series(key, times, values, steps)


def _fields_per_line(body: bytes) -> np.ndarray:
    """How many fields each line of `body` (whole lines, each ending with a newline) holds: len(line.split()),
    at numpy's pace. A field starts at a byte that is no blank, first in the file or after a blank."""
    buffer = np.frombuffer(body, np.uint8)
    blank = _BLANKS[buffer]
    starts = np.flatnonzero(~blank & np.concatenate(([True], blank[:-1])))
    return np.diff(np.searchsorted(starts, np.flatnonzero(buffer == _NEWLINE)), prepend=0)


def _parse_plainly(size: int) -> bool:
    """Whether a run's metric files, `size` bytes in all, are all split here (else those of SMALL_BYTES or more
    go to pandas): while the process has split less than PLAIN_BUDGET bytes, them included, and pandas is not
    imported. Whole runs, so that a big run pays for pandas' import once, not for splitting as well."""
    global _plain_spent
    if "pandas" in sys.modules or _plain_spent + size > PLAIN_BUDGET:
        return False
    _plain_spent += size
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reading it says why


def _sorted_series(key: str, times: np.ndarray, values: np.ndarray, steps: np.ndarray) -> Series:
    order = np.argsort(steps, kind="stable")
    return Series(key, steps[order], values[order], times[order] / 1000.0)


def _parse_slowly(table: np.ndarray, good: np.ndarray, lines: list[bytes], path: Path, problems: list[Problem]):
    """The rows that parse, one at a time, and a problem for each that does not."""
    parsed, kept = [], []
    for row, index in zip(table, good):
        try:
            point = float(row[0]), float(row[1]), int(row[2])
        except ValueError:
            problems.append(Problem(str(path), f"line {index + 1}",
                                    f"not a 'timestamp value step' line: {lines[index][:60].decode(errors='replace')!r}; skipped"))
            continue
        if not -2 ** 63 <= point[2] < 2 ** 63:
            problems.append(Problem(str(path), f"line {index + 1}", f"'step' value {row[2][:30].decode()} is outside the "
                                                                    "range of a step (a 64-bit integer); line skipped"))
            continue
        parsed.append(point)
        kept.append(index)
    times, values, steps = zip(*parsed) if parsed else ((), (), ())
    return (np.array(times, np.float64), np.array(values, np.float64), np.array(steps, np.int64),
            np.array(kept, np.int64))


def read_meta(path: Path) -> dict[str, str]:
    """The top-level scalar fields of a meta.yaml written by MLflow; {} when there is none."""
    try:
        text = files.read_bytes(path).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and key is not None:  # a long value folded onto more lines
            fields[key] += " " + line.strip()
        elif ":" in line and not line.startswith(("-", "#")):
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        else:
            key = None
    return {key: _scalar(value) for key, value in fields.items()}


def _scalar(text: str) -> str:
    if text.startswith("'") and text.endswith("'") and len(text) > 1:
        return text[1:-1].replace("''", "'")
    if text.startswith('"') and text.endswith('"') and len(text) > 1:
        try:
            return json.loads(text)
        except ValueError:
            return text[1:-1]
    return "" if text in ("null", "~", "[]", "{}") else text


def _is_run(meta: dict) -> bool:
    return bool(meta.get("run_id") or meta.get("run_uuid")) and "artifact_uri" in meta


def _is_experiment(meta: dict) -> bool:
    return "experiment_id" in meta and "artifact_location" in meta and not _is_run(meta) and "model_id" not in meta


def _has_metrics(folder: Path) -> bool:
    return any(files for _, _, files in os.walk(folder))


def _subfolders(path: Path) -> list[Path]:
    try:
        return sorted(child for child in path.iterdir() if child.is_dir())
    except OSError:
        return []
