"""Read CSV training logs: Lightning and Keras CSVLogger, ultralytics results.csv, any CSV (or TSV) with a step column."""

from __future__ import annotations

import csv
import io
import itertools
import pathlib
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from lrdiag.ingest import textlog
from lrdiag.ingest.textlog import (HEAD_BYTES, STEP_COLUMNS, cap_problems, cells_to_numbers, input_size,
                                   is_bookkeeping, is_missing, join_lines, line_bounds, line_chunks, normalized,
                                   per_line_count, report, steady_heap, to_floats, whole_steps)
from lrdiag.series.model import Problem, ReadResult, Series

if TYPE_CHECKING:  # pandas costs 0.3 s to import: only the functions that use it do
    import pandas as pd

    # The parsed rows, a column of cells a name: pandas Series (pandas' parser) or numpy arrays (the plain one).
    Table = dict[str, pd.Series | np.ndarray]

NAME = "csv"
_SUFFIXES = (".csv", ".tsv", ".log", ".txt")
# A CSV without a step column is read only when its name says it is a training log and its
# first column is an unnamed index (what `pandas.DataFrame(history.history).to_csv()` writes).
_LOG_NAME_WORDS = ("train", "log", "history", "metrics", "results", "progress")
_INDEX_HEADERS = ("", "unnamed: 0", "index")
_KNOWN_NAMES = ("metrics.csv", "results.csv", "training.log")
# Files smaller than this are parsed by the csv module and numpy, to the cells pandas' C parser would give
# (tests/test_ingest_csv.py reads every sample and real log both ways). Measured on a sparse Lightning log:
# the plain parser costs ~75-95 ms of CPU a MB, pandas' ~8 ms (1 ms at least a file), but importing pandas
# (with pyarrow) costs 0.3-0.6 s of CPU and ~75 MB (benchmarks/bench_coldstart.py: `analyze` of a 0.95 MB
# metrics.csv 0.37 s, of a 1.05 MB one 0.64 s). The plain parser's Python objects peak at ~40 MB a MB of
# cells: 1 MB keeps them under what pandas' import alone takes.
PLAIN_BYTES = 1 << 20
# Rent or buy: the plain parser serves a process until it has parsed about as many bytes as pandas' import
# would have cost in its time (4 MB, ~0.4 s); from then on (many runs in one process, a watcher) pandas' import
# pays for itself. Once pandas is imported, by a big file or another reader, its parser is the faster one for
# anything over ~12 KB, so it takes every file.
PLAIN_BUDGET = 4 << 20
_plain_spent = 0
# What pandas' C parser reads as an integer, a float or a boolean (with skipinitialspace: leading spaces are
# gone); the float grammar is textlog's (ASCII digits, point, exponent between ASCII blanks, or a bare inf).
_BLANK = r"[ \t\v\f\r]*"
_INTEGERS = re.compile(rf"(?:{_BLANK}[+-]?\d+{_BLANK}\n)*", re.ASCII)
_LONG_INTEGER = re.compile(rf"^{_BLANK}[+-]?\d{{19,}}{_BLANK}$", re.ASCII | re.MULTILINE)
_FLOATS = re.compile(rf"(?:(?:{_BLANK}[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?{_BLANK}|[+-]?inf(?:inity)?)\n)*",
                     re.ASCII | re.IGNORECASE)
_BOOLEANS = {"true": True, "false": False}
# A table of this many columns or more is parsed plainly whatever its size: pandas' parser and frame cost ~0.1 ms a
# column a chunk, and more than linearly past 10,000 columns (a 9 MB CSV of 200,000 columns and 3 rows: 110 s).
# Measured on dense tables of full-precision floats (40-60 MB): at 1,000 columns pandas 2.2 s against 2.7 s, at
# 1,500 even (2.0 s), at 5,000 plainly 1.9 s against 6.8 s.
WIDE_COLUMNS = 2000


def _pandas_block_rows(width: int) -> int:
    """The rows pandas' C parser (low_memory) types at once in a table of `width` columns: the greatest power of
    two whose double is under 2**20 // width (its own heuristic, measured: 32 rows at 20,000 columns, 4 at
    200,000). It joins the blocks' columns after (ints in one and text in another stay apart, as objects): the
    plain parser, which types a column whole, takes a chunk of no more rows."""
    rows = 1
    while rows * 2 < (1 << 20) // width:
        rows *= 2
    return rows


def claims(path: pathlib.Path, head: bytes) -> bool:
    if not head.strip():  # empty or unreadable: a well-known log name is still ours to report on
        return path.name in _KNOWN_NAMES
    return _detect(path.name, head) is not None


def read(path: pathlib.Path, data: bytes | None = None) -> ReadResult:
    """The file's series; `data`: its bytes already in hand (a live log's whole lines so far).

    A big file is parsed a chunk of lines at a time (textlog.line_chunks), each chunk under the
    header again; the series are joined at the end, so memory stays near what is read out."""
    problems: list[Problem] = []
    chunks = line_chunks(path, data, textlog.CSV_CHUNK_BYTES)
    try:
        head, _ = next(chunks, (b"", 0))
    except OSError as error:
        return ReadResult(NAME, problems=[Problem(str(path), "", f"cannot read file: {error.strerror or error}")])
    found = _detect(path.name, head[:HEAD_BYTES])
    if found is None:
        message = "empty file" if not head.strip() else (
            "no step column (step, global_step, iteration, iter or epoch) in the CSV header")
        return ReadResult(NAME, problems=[Problem(str(path), "", message)])
    source, step_column, sep = found
    with steady_heap(input_size(path, data)):  # a big file's per-chunk arrays kept for the next chunk
        # a first chunk under CSV_CHUNK_BYTES is the whole file
        width = head.count(sep.encode(), 0, head.find(b"\n")) + 1
        plain = _plain_for(len(head)) or width >= WIDE_COLUMNS
        if width >= WIDE_COLUMNS:
            chunks = _grouped(chunks, _pandas_block_rows(width))
        header, parts, columns, rows, byte = b"", {}, None, 0, 0
        try:
            for chunk, first_line in itertools.chain([(head, 0)], chunks):
                chunk_problems: list[Problem] = []
                size = len(chunk)
                chunk = _decoded_or_repaired(chunk, path, chunk_problems, first_line, byte)
                byte += size
                if first_line:
                    chunk = header + chunk
                else:
                    header = chunk[:chunk.find(b"\n") + 1] or chunk + b"\n"
                frame, row_lines = _parse(chunk, path, chunk_problems, sep, max(first_line - 1, 0), plain)
                # the header's own problems were reported with the first chunk
                problems.extend(problem for problem in chunk_problems if not first_line or problem.where != "line 1")
                if frame is None:
                    continue
                columns = columns or {column: position for position, column in enumerate(frame)}
                if not len(row_lines):  # the header alone (a first chunk of a table of very many columns)
                    continue
                rows += len(row_lines)
                for tag, series in _series_from_frame(frame, row_lines, step_column, path, problems).items():
                    parts.setdefault(tag, []).append(series)
        except OSError as error:
            problems.append(Problem(str(path), f"byte {byte}", f"cannot read on: {error.strerror or error}"))
        if columns is None:
            return ReadResult(source, problems=problems)
        if not rows and not problems:
            problems.append(Problem(str(path), "", "no data rows, only a header"))
        series = {tag: _joined(tag, parts.pop(tag)) for tag in sorted(parts, key=lambda tag: columns.get(tag, 0))}
    return ReadResult(source, series=series, problems=cap_problems(problems, path))


def _grouped(chunks: Iterator[tuple[bytes, int]], most_rows: int) -> Iterator[tuple[bytes, int]]:
    """Consecutive chunks joined while together they hold at most `most_rows` lines: the rows of a table of
    thousands of columns are each about a chunk long, and each chunk costs every column its fixed work (a
    chunk a row: 4 passes over 200,000 columns for a 9 MB file); joined up to the rows pandas types at once
    (which the plain parser takes), ~5-10 MB whatever the width."""
    group: list[bytes] = []
    rows = first = 0
    for chunk, first_line in chunks:
        lines = chunk.count(b"\n")
        if group and rows + lines > most_rows:
            yield b"".join(group), first
            group, rows = [], 0
        if not group:
            first = first_line
        group.append(chunk)
        rows += lines
    if group:
        yield b"".join(group), first


def _plain_for(size: int) -> bool:
    """Whether a file of `size` bytes is parsed without pandas (PLAIN_BYTES, PLAIN_BUDGET); its bytes count."""
    global _plain_spent
    if size >= PLAIN_BYTES or _plain_spent + size > PLAIN_BUDGET or "pandas" in sys.modules:
        return False
    _plain_spent += size
    return True


def _joined(tag: str, parts: list[Series]) -> Series:
    if len(parts) == 1:
        return parts[0]
    return Series(tag, np.concatenate([part.steps for part in parts]), np.concatenate([part.values for part in parts]))


def _separator(name: str, head: bytes) -> str:
    """Tab for a .tsv file, or a header with tabs and no comma; else comma."""
    first_line = head.split(b"\n", 1)[0]
    return "\t" if name.lower().endswith(".tsv") or (b"\t" in first_line and b"," not in first_line) else ","


def _detect(name: str, head: bytes) -> tuple[str, str, str] | None:
    """(source, step column as written, separator) when this looks like a CSV (or TSV) training log, else None."""
    first_line = head.split(b"\n", 1)[0]
    if not name.lower().endswith(_SUFFIXES) or b"\0" in first_line:  # binary, e.g. an event file
        return None
    first_line = first_line.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
    sep = _separator(name, head)
    raw_columns = first_line.split(sep)
    columns = [column.strip().strip('"').strip() for column in raw_columns]
    lowered = [column.lower() for column in columns]
    if len(columns) < 2 or any(_is_number(column) for column in columns):
        return None
    step = next((candidate for candidate in STEP_COLUMNS if candidate in lowered), None)
    if step is None:
        looks_like_log = any(word in name.lower() for word in _LOG_NAME_WORDS)
        return ("csv", columns[0], sep) if looks_like_log and lowered[0] in _INDEX_HEADERS else None
    step_column = columns[lowered.index(step)]
    padded = any(column != column.lstrip() for column in raw_columns)
    if step == "step" and (name == "metrics.csv" or "epoch" in lowered):
        return "lightning_csv", step_column, sep
    if step == "epoch" and (padded or name == "results.csv") and any(
            column.startswith(("train/", "metrics/")) for column in lowered):
        return "yolo_csv", step_column, sep
    if step == "epoch" and lowered[0] == "epoch" and "loss" in lowered:
        return "keras_csv", step_column, sep
    return "csv", step_column, sep


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _decoded_or_repaired(data: bytes, path: pathlib.Path, problems: list[Problem], first_line: int = 0,
                         first_byte: int = 0) -> bytes:
    """The bytes as UTF-8; undecodable bytes become U+FFFD (then a non-numeric cell) after a problem.
    `first_line`, `first_byte`: where in the file these bytes start (0-based)."""
    data = data.removeprefix(b"\xef\xbb\xbf") if not first_byte else data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = first_line + data.count(b"\n", 0, error.start) + 1
        problems.append(Problem(str(path), f"line {line}",
                                f"not UTF-8 text: {error.reason} at byte {first_byte + error.start}"))
        data = data.decode("utf-8", "replace").encode("utf-8")
    return data


def _quoted_field_count(line: bytes, sep: str) -> int:
    """Fields on one line with quoted cells; -1 when the csv module cannot split it."""
    try:
        return len(next(csv.reader([line.decode("utf-8")], delimiter=sep, strict=True), [])) or 1
    except csv.Error:
        return -1


def _parse(data: bytes, path: pathlib.Path, problems: list[Problem], sep: str = ",",
           line_offset: int = 0, plain: bool = False) -> tuple[Table | None, np.ndarray]:
    """The rows as a table of raw cells, and the 1-based file line of each row (a chunk's
    lines after its header are `line_offset` lines further down the file). `plain`: parse without
    pandas where the plain parser gives pandas' cells for sure (else pandas parses).

    Lines with the wrong number of fields are found beforehand (pandas' C parser would pad short
    ones silently), reported, and left out of what the parser sees, so every good row before and
    after them is kept and a stray quote on a bad line cannot swallow the lines after it."""
    data = normalized(data)
    starts, ends = line_bounds(data)
    blank = ends == starts
    fields = per_line_count(data, ends, sep.encode()) + 1
    if b'"' in data:
        # Quoted cells may hold commas: lines with quotes count their fields with the csv module;
        # a line with an odd number of quotes would open a cell spanning the next lines.
        quotes = per_line_count(data, ends, b'"')
        quoted = np.flatnonzero((quotes > 0) & (quotes % 2 == 0))
        fields[quoted] = [_quoted_field_count(data[starts[index]:ends[index]], sep) for index in quoted]
        fields[quotes % 2 == 1] = -1
    if fields[0] < 0:  # a stray quote in the header: its cells are what lies between separators
        header = data[starts[0]:ends[0]].decode("utf-8", "replace").split(sep)
        columns = [cell.strip().replace('"', "").strip() for cell in header]
        problems.append(Problem(str(path), "line 1", f"unbalanced quote in the header; read as the columns "
                                                     f"{', '.join(map(repr, columns))}"[:300]))
        clean = sep.join('"' + column + '"' for column in columns).encode()
        data = clean + data[ends[0]:]
        starts, ends = starts + len(clean) - ends[0], ends + len(clean) - ends[0]
        starts[0], fields[0] = 0, len(columns)
    expected = fields[0]
    wrong = (fields != expected) & ~blank
    wrong[0] = False
    unterminated_last = data[-1:] != b"\n"

    def describe(index: int) -> tuple[str, str]:
        half_written = unterminated_last and index == len(ends) - 1 and fields[index] < expected
        found = "unbalanced quotes or stray line break" if fields[index] < 0 else f"found {fields[index]}"
        return f"line {index + 1 + line_offset}", (f"{'half-written last line: ' if half_written else ''}"
                                     f"expected {expected} fields, {found}; line skipped")
    report(problems, path, np.flatnonzero(wrong), describe, "lines with a wrong number of fields skipped")
    good = ~blank & ~wrong
    good[0] = True
    good_lines = np.flatnonzero(good)
    header = data[starts[0]:ends[0]].decode("utf-8", "replace")
    try:
        names = [cell.strip() for cell in next(csv.reader([header], delimiter=sep))]
    except csv.Error:  # a lone carriage return in it: the cells between separators
        names = [cell.strip() for cell in header.split(sep)]
    row_lines = good_lines[1:] + 1 + line_offset
    table = _plain_table(data, good_lines, sep, len(names)) if plain else None
    if table is not None:
        return _first_of_each_name(names, table, path, problems), row_lines
    import pandas as pd
    try:
        frame = pd.read_csv(io.BytesIO(join_lines(data, starts, ends, good_lines)), sep=sep, engine="c",
                            lineterminator="\n", keep_default_na=False, na_values=[""], skipinitialspace=True)
    except (ValueError, pd.errors.ParserError) as error:  # not expected after the checks above; never a crash
        problems.append(Problem(str(path), "", f"cannot parse as CSV: {str(error).strip()}"))
        return None, np.empty(0, np.int64)
    if len(names) != frame.shape[1]:  # an unnamed index column pandas added: keep its names
        names = [str(column).strip() for column in frame.columns]
    if len(row_lines) != len(frame):  # not expected either; keep numbering sane rather than fail
        row_lines = np.arange(len(frame)) + 2 + line_offset
    return _first_of_each_name(names, [frame.iloc[:, position] for position in range(frame.shape[1])],
                               path, problems), row_lines


def _plain_table(data: bytes, good_lines: np.ndarray, sep: str, width: int) -> list[np.ndarray] | None:
    """The good lines' columns (header line first, left out) as pandas' C parser would give them (skipinitialspace,
    "" empty, an int64, float64 or bool column where every filled cell is one, else text), without pandas;
    None where pandas' reading is not certain to be this one: a quote after a blank (which splits differently
    with skipinitialspace), a carriage return, an integer cell of 19 digits or more (pandas'
    int64/uint64/object choice), more rows than pandas types at once."""
    if b"\r" in data:  # a carriage return left after CRLFs became LFs: the csv module ends lines at it
        return None
    lines = data.decode("utf-8").split("\n")
    try:
        header = next(csv.reader([lines[good_lines[0]]], delimiter=sep, skipinitialspace=True))
        rows = list(csv.reader([lines[index] for index in good_lines[1:].tolist()], delimiter=sep,
                               skipinitialspace=True))
    except csv.Error:  # e.g. a cell over the csv module's field size limit
        return None
    if len(header) != width or any(len(row) != width for row in rows):
        return None
    if len(rows) > _pandas_block_rows(width):  # pandas would type the rows block by block
        return None
    columns = [_plain_column(cells) for cells in zip(*rows)] if rows else [np.empty(0, object)] * width
    return None if any(column is None for column in columns) else columns


def _plain_column(cells: tuple[str, ...]) -> np.ndarray | None:
    """One column's cells as pandas' C parser types them (None: leave this file to pandas)."""
    filled = list(filter(None, cells))
    if not filled:
        return np.full(len(cells), np.nan)
    text = "\n".join(filled) + "\n"
    if _LONG_INTEGER.search(text):
        return None
    whole = _INTEGERS.fullmatch(text)
    if whole or _FLOATS.fullmatch(text):
        values = numbers = np.array(filled, dtype=np.float64)
        if len(filled) < len(cells):
            values = np.full(len(cells), np.nan)
            values[np.fromiter(map(bool, cells), bool, len(cells))] = numbers
        return values + 0.0 if whole else values  # pandas reads an integer column as int64: "-0" is 0
    if all(cell.lower() in _BOOLEANS for cell in filled):
        flags = [_BOOLEANS[cell.lower()] if cell else np.nan for cell in cells]
        return np.array(flags, dtype=bool if len(filled) == len(cells) else object)
    return np.array([cell or np.nan for cell in cells], dtype=object)


def _first_of_each_name(names: list[str], columns: list, path: pathlib.Path, problems: list[Problem]) -> Table:
    """The columns under the header's own names, keeping the first of columns that share a name.

    pandas would call a second `loss` `loss.1`, a metric nobody logged, which could then pass for
    the loss in role inference; which of the two is the real loss is not knowable, so the first is
    read (as a reader of the header would) and the others are named in a problem."""
    first = {}
    for position, name in enumerate(names):
        first.setdefault(name, position)
    for name in dict.fromkeys(name for position, name in enumerate(names) if first[name] != position):
        where = [position + 1 for position, other in enumerate(names) if other == name]
        problems.append(Problem(str(path), "line 1", f"column {name!r} appears {len(where)} times in the header "
                                                     f"(columns {', '.join(map(str, where))}); the first is read, "
                                                     "the others skipped"))
    return {name: columns[position] for name, position in first.items()}


def _series_from_frame(frame: Table, row_lines: np.ndarray, step_column: str, path: pathlib.Path,
                       problems: list[Problem]) -> dict[str, Series]:
    """One series per metric column: its points are the rows where its cell is filled (Lightning rows are sparse)."""
    if step_column not in frame:  # an unnamed index column comes back as 'Unnamed: 0'
        step_column = next(iter(frame))
    step_cells = frame[step_column]
    steps = to_floats(step_cells)
    has_step = np.isfinite(steps)

    def describe(index: int) -> tuple[str, str]:
        cell = step_cells[index] if isinstance(step_cells, np.ndarray) else step_cells.iloc[index]
        what = (f"no {step_column!r} value" if is_missing(cell)
                else f"{step_column!r} value {str(cell)[:40]!r} is not a finite number")
        return f"line {row_lines[index]}", f"{what}; row skipped"
    report(problems, path, np.flatnonzero(~has_step), describe, f"rows without {step_column!r} skipped")
    has_step, steps = whole_steps(steps, has_step, row_lines, step_column, path, problems)
    series = {}
    for tag in frame:
        if tag == step_column or is_bookkeeping(tag):
            continue
        cells = cells_to_numbers(frame[tag], row_lines, tag, path, problems)
        if cells is None:
            continue
        present, values = cells
        points = present & has_step
        if points.any():
            series[tag] = Series(tag, steps[points], values[points])
    return series


