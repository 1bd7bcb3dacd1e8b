"""What the text-log readers (csvlog, jsonlog) share: line splitting, cells to numbers, problem lists."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import pathlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from lrdiag.ingest import files
from lrdiag.series.model import Problem

if TYPE_CHECKING:  # pandas costs 0.3 s to import: only the functions that use it do
    import pandas as pd

HEAD_BYTES = 64 * 1024
# Text logs bigger than this are read a chunk of whole lines at a time, so that the parser's
# buffers stay the size of a chunk and peak memory stays within ~2x the file (what is read out,
# about half the file's size for a typical log, plus a chunk's work); smaller files in one go.
# JSON lines: 2 MiB took a 42 MB detectron2 log from 1.8-2.0x its size (4 MiB) to 1.6x, 300k
# alternating train/val lines from 3.7x to 3.0x, at the same speed (lines of keys that vary from
# line to line, which pandas' parser reads, ~20 % slower).
CHUNK_BYTES = 2 << 20
# A CSV chunk's parse by pandas' C parser peaks at ~8x the chunk (its tokenizer, the columns,
# the chunk's checks): at 4 MiB that alone took a 32 MB Lightning log to 2.4-2.5x its size, at
# 2 MiB 1.7x, at the same 3.3M rows/s.
CSV_CHUNK_BYTES = 2 << 20
# Step columns in order of preference: the finest counter wins.
STEP_COLUMNS = ("step", "global_step", "iteration", "iter", "epoch")
# Columns that are numeric but describe the run's machinery, not its learning.
BOOKKEEPING = frozenset({
    "time", "data_time", "eta_seconds", "rank_data_time", "memory", "mode", "env_info", "config",
    "seed", "exp_name", "total_flos", "num_input_tokens_seen", "wall_time", "walltime", "timestamp",
})
BOOKKEEPING_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")
# Written by a diverging run; such a cell is a real NaN/Inf point, unlike an empty cell.
NAN_WORDS = frozenset({"nan", "-nan", "+nan"})
# A broken file can hold a million bad cells: list this many, then count the rest.
MAX_PROBLEMS = 100
_NEWLINE = ord("\n")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_STEADY_FROM = 64 << 20  # inputs from this size read with steady_heap's thresholds
_budgets: list[int] = []  # resident bytes the steady_heap reads under way may hold before giving back
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# A number cell as pandas reads one (its C parser and to_numeric): ASCII digits with an optional sign, point
# and exponent between ASCII blanks, or inf/infinity in any case, signed, with no blank; not '1_000', '0x10'
# or Unicode digits, which Python's float() would take.
_NUMBER = re.compile(r"[ \t\n\v\f\r]*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[ \t\n\v\f\r]*|[+-]?inf(?:inity)?",
                     re.ASCII | re.IGNORECASE)
# Integers pandas holds as int64 or uint64.
_INT_MIN, _UINT_END = -(1 << 63), 1 << 64


def line_chunks(path: pathlib.Path, data: bytes | None, size: int | None = None) -> Iterator[tuple[bytes, int]]:
    """(chunk, 0-based index of its first line) for each of whole_line_chunks."""
    line = 0
    for chunk in whole_line_chunks(path, data, size):
        yield chunk, line
        line += int(np.count_nonzero(np.frombuffer(chunk, np.uint8) == _NEWLINE))  # 5x bytes.count's speed


def whole_line_chunks(path: pathlib.Path, data: bytes | None, size: int | None = None) -> Iterator[bytes]:
    """The file's bytes about `size` (CHUNK_BYTES) a chunk, each ending with a line's newline (the
    last one as the file ends). `data`: the bytes already in hand (a live log's whole lines), else
    the file is read a chunk at a time."""
    size = size or CHUNK_BYTES
    handle = None if data is None else io.BytesIO(data)
    with handle or files.open_regular(path) as stream:
        carry = []  # the unfinished line's pieces, joined once it ends: never copied a read
        while True:
            block = stream.read(size)
            if not block:
                if carry:
                    yield b"".join(carry)
                return
            cut = block.rfind(b"\n") + 1
            if not cut:  # one line longer than a chunk: read on until it ends
                carry.append(block)
                continue
            chunk = b"".join([*carry, memoryview(block)[:cut]]) if carry else block[:cut]  # one copy
            carry = [block[cut:]] if cut < len(block) else []
            del block  # copied into the chunk: not held while the chunk is parsed
            yield chunk


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing),
    unless a steady_heap read holds less than its budget.

    glibc serves a block from its heap while it is below its mmap threshold, which rises to the
    largest block freed so far (up to 32 MiB), and a heap keeps what is freed in it resident. A big
    file's per-chunk arrays live there; joined into one table (a block of its own, mapped apart)
    and freed, they would stay resident beside it, the table counted twice: 0.3-0.4x the file on
    JSON lines of short records. Called after such a join only: freed pages given back cost a page
    fault each when used again, and the trim itself system time (0.1 s after a 200 MB JSON-lines
    log's joins, whose points are 0.4x the file: there the heap kept them is well within budget)."""
    if _budgets and _resident() <= _budgets[-1]:
        return
    trim = _glibc("malloc_trim", "c_size_t")
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def steady_heap(size: int) -> Iterator[None]:
    """For a chunked read of `size` bytes: glibc's thresholds fixed (elsewhere nothing) where a big
    input gains by them, blocks under a sixteenth of it (up to 32 MiB, glibc's own ceiling) served
    from the heap and the heap's top given back only past an eighth of it free; and, while the read
    lasts, what it frees kept for its next arrays (release_freed_memory does nothing) as long as it
    holds under 1.5x its size more than when it began, which leaves the 2x bound a margin.

    glibc starts a process at 128 KiB for both thresholds and raises them only as it frees mapped
    blocks; until then a chunked read's per-chunk arrays (a few MiB) are mapped and unmapped, or the
    heap's top trimmed and grown again, chunk after chunk: each time a page fault a page, 0.1-0.2 s
    of system time on a 200 MB JSON-lines log. Under 64 MiB the fixed values cost more than they
    save (a 19 MB log: 0.27 -> 0.32 s, the thresholds then never rising): glibc's own are left."""
    mallopt = _glibc("mallopt", "c_int", "c_int") if size >= _STEADY_FROM else None
    if mallopt is None:
        yield
        return
    mallopt(_M_MMAP_THRESHOLD, min(size // 16, 32 << 20))
    mallopt(_M_TRIM_THRESHOLD, min(size // 8, 64 << 20))
    _budgets.append(_resident() + size * 3 // 2)
    try:
        yield
    finally:
        _budgets.pop()


def input_size(path: pathlib.Path, data: bytes | None) -> int:
    """The bytes a read of `path` (or of `data`, its bytes in hand) takes in; 0 if it is gone."""
    if data is not None:
        return len(data)
    try:
        return path.stat().st_size
    except OSError:  # gone since: its read says so
        return 0


def _resident() -> int:
    """This process's resident bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


@functools.cache
def _glibc(name: str, *argtypes: str) -> Callable | None:
    """glibc's function `name` taking `argtypes` (ctypes' names) and giving an int, or None where the
    C library is not glibc."""
    import ctypes
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes, function.restype = [getattr(ctypes, argtype) for argtype in argtypes], ctypes.c_int
    return function


_BOOKKEEPING_NAMES = frozenset(STEP_COLUMNS) | BOOKKEEPING  # lowercased


def is_bookkeeping(tag: str) -> bool:
    """True for step counters and bookkeeping keys, which are never metrics."""
    lowered = tag.lower()
    return lowered in _BOOKKEEPING_NAMES or lowered.endswith(BOOKKEEPING_SUFFIXES)


# The first four letters of the bookkeeping names, and the last four of the suffixes, as 4-byte
# numbers case-folded (each byte | 0x20: a letter's two cases meet, and a name's other bytes fold
# as the tag's do), and the names' lengths
_FOLD = np.uint32(0x20202020)
_HEADS = np.unique(np.frombuffer("".join(name[:4] for name in _BOOKKEEPING_NAMES).encode(), "<u4") | _FOLD)
_TAILS = np.unique(np.frombuffer("".join(suffix[-4:] for suffix in BOOKKEEPING_SUFFIXES).encode(), "<u4") | _FOLD)
_LENGTHS = np.unique([len(name) for name in _BOOKKEEPING_NAMES])


def bookkeeping_mask(tags: list[str]) -> np.ndarray:
    """is_bookkeeping of every tag at once (a JSON log may hold a million keys). Many ASCII tags
    (without a newline) are first narrowed in numpy to those that could be bookkeeping, by the
    length and first four bytes of the names and the last four of the suffixes (case-folded, read
    as one unaligned 4-byte number each from the joined tags), and those few alone tested: 0.05 s a
    million tags in a read, against 0.13 s a lowercased copy of each."""
    joined = "\n".join(["    ", *tags, "    "])  # 4 bytes either side of any tag
    if len(tags) < 1000 or not joined.isascii() or joined.count("\n") != len(tags) + 1:
        return np.fromiter([lowered in _BOOKKEEPING_NAMES or lowered.endswith(BOOKKEEPING_SUFFIXES)
                            for lowered in map(str.lower, tags)], dtype=bool, count=len(tags))
    text = joined.encode()
    del joined
    newlines = np.flatnonzero(np.frombuffer(text, np.uint8) == _NEWLINE)
    starts, ends = newlines[:-1] + 1, newlines[1:]
    words = np.ndarray((len(text) - 3,), "<u4", text, strides=(1,))  # the 4 bytes from each byte on
    heads, tails = words[starts] | _FOLD, words[ends - 4] | _FOLD
    maybe = np.flatnonzero((np.isin(ends - starts, _LENGTHS) & np.isin(heads, _HEADS)) | np.isin(tails, _TAILS))
    mask = np.zeros(len(tags), bool)
    mask[maybe] = [is_bookkeeping(tags[place]) for place in maybe.tolist()]
    return mask


def line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, before the newline) offsets of every line."""
    buffer = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buffer == _NEWLINE)
    if data and data[-1:] != b"\n":
        ends = np.append(ends, len(data))
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    return starts, ends


def normalized(data: bytes) -> bytes:
    """CRLF as LF, so that lines are split on LF alone, by numpy and by the parser alike; NUL
    bytes (the zero-filled tail of a file cut by a crash) as U+FFFD, which the parser can hold."""
    data = data.replace(b"\r\n", b"\n") if b"\r" in data else data
    return data.replace(b"\0", "\ufffd".encode()) if b"\0" in data else data


def join_lines(data: bytes, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray) -> bytes:
    """The given lines (sorted 0-based indices) as one buffer, copying runs of consecutive lines as one slice."""
    if len(lines) == len(starts):
        return data
    if not len(lines):
        return b""
    breaks = np.flatnonzero(np.diff(lines) != 1)
    firsts, lasts = lines[np.r_[0, breaks + 1]], lines[np.r_[breaks, len(lines) - 1]]
    return b"\n".join(data[starts[first]:ends[last]] for first, last in zip(firsts, lasts))


def per_line_count(data: bytes, ends: np.ndarray, char: bytes) -> np.ndarray:
    """How many times `char` occurs on each line."""
    positions = np.flatnonzero(np.frombuffer(data, np.uint8) == ord(char))
    # how many lie before each line's end, differenced: a search per line, not one per occurrence
    return np.diff(np.searchsorted(positions, ends), prepend=0)


NUMBER_TYPES = frozenset({int, float})  # JSON numbers as Python reads them (bool apart: text)


def cells_to_numbers(cells: pd.Series | np.ndarray | Sequence, places: np.ndarray, tag: str, path: pathlib.Path,
                     problems: list[Problem], where: str = "line {}") -> tuple[np.ndarray, np.ndarray] | None:
    """(present, values) for one column of raw cells, or None when the column holds text, not numbers.

    `cells`: a pandas Series, or a numpy array or list of cells (str, int, float, bool, None, ...), which is
    read without pandas, to the same result. Empty cells (NaN/None) and JSON nulls are no point; 'nan'/'inf'
    text is a NaN/Inf point; any other non-numeric cell in a numeric column is a problem at
    `where.format(place)` and no point."""
    if not isinstance(cells, (np.ndarray, list, tuple)):
        return _series_to_numbers(cells, places, tag, path, problems, where)
    if not isinstance(cells, np.ndarray) and set(map(type, cells)) <= NUMBER_TYPES:  # a list of numbers alone
        try:
            cells = np.array(cells, dtype=np.float64)  # as float() of each: an int rounded correctly
        except OverflowError:  # an int past a float's range: read one by one below, as +-inf
            pass
    cells = cells if isinstance(cells, np.ndarray) else np.array(cells, dtype=object)
    if cells.dtype.kind in "iuf":
        values = cells.astype(np.float64)
        return ~np.isnan(values), values
    raw = cells.astype(object)
    present = np.array([not is_missing(cell) and not (isinstance(cell, str) and cell == "null") for cell in raw], bool)
    numbers = to_floats(raw)
    failed = present & np.isnan(numbers)
    for index in np.flatnonzero(failed):
        failed[index] = str(raw[index]).strip().lower() not in NAN_WORDS
    return _checked(present, failed, numbers, lambda index: raw[index], places, tag, path, problems, where)


def _series_to_numbers(cells: pd.Series, places: np.ndarray, tag: str, path: pathlib.Path, problems: list[Problem],
                       where: str) -> tuple[np.ndarray, np.ndarray] | None:
    """cells_to_numbers for a pandas Series: pandas' vectorized conversion, for the big files that pandas parses."""
    import pandas as pd
    if pd.api.types.is_numeric_dtype(cells.dtype) and not pd.api.types.is_bool_dtype(cells.dtype):
        values = cells.to_numpy(dtype=np.float64, na_value=np.nan)
        return ~np.isnan(values), values
    raw = cells.astype(object)
    present = raw.notna().to_numpy() & (raw != "null").to_numpy()
    numbers = to_floats(raw)
    failed = present & np.isnan(numbers)
    if failed.any():
        words = raw[failed].astype(str).str.strip().str.lower()
        failed[np.flatnonzero(failed)[words.isin(NAN_WORDS).to_numpy()]] = False
    return _checked(present, failed, numbers, lambda index: raw.iloc[index], places, tag, path, problems, where)


def _checked(present: np.ndarray, failed: np.ndarray, numbers: np.ndarray, cell: Callable[[int], object],
             places: np.ndarray, tag: str, path: pathlib.Path, problems: list[Problem],
             where: str) -> tuple[np.ndarray, np.ndarray] | None:
    if failed.any() and not (present & ~failed).any():
        return None
    report(problems, path, np.flatnonzero(failed),
           lambda index: (where.format(places[index]),
                          f"value {str(cell(index))[:40]!r} of {tag!r} is not a number; point skipped"),
           f"non-numeric values of {tag!r} skipped")
    return present & ~failed, numbers


def to_floats(cells: pd.Series | np.ndarray | Sequence) -> np.ndarray:
    """The cells as float64, NaN where a cell is no number: `pandas.to_numeric(cells, errors="coerce")`, and
    without pandas for a numpy array or a list. A number is what pandas' parser takes (_NUMBER): ASCII digits
    with an optional sign, point and exponent between ASCII blanks, or a bare inf/infinity in any case;
    True/False are 1/0 (as in pandas); an integer beyond a float's range is +-inf (where pandas raises
    OverflowError)."""
    if not isinstance(cells, (np.ndarray, list, tuple)):
        import pandas as pd
        try:
            return pd.to_numeric(cells, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        except OverflowError:  # a Python int of 309 digits or more
            cells = cells.to_numpy(dtype=object)
    cells = cells if isinstance(cells, np.ndarray) else np.array(cells, dtype=object)
    if cells.dtype.kind in "iufb":
        return cells.astype(np.float64)
    values = np.empty(len(cells), np.float64)
    whole = True  # pandas gives integers (and so 0 for "-0") when every cell is one
    for index, cell in enumerate(cells.tolist()):
        if isinstance(cell, str):
            match = _NUMBER.fullmatch(cell)
            values[index] = float(cell) if match else np.nan
            whole = whole and match is not None and _is_whole(cell)
        elif isinstance(cell, (bool, int)):
            values[index] = _int_to_float(cell)
            whole = whole and _INT_MIN <= cell < _UINT_END
        elif isinstance(cell, float):
            values[index] = cell
            whole = False
        else:  # None, a list or dict from JSON, ...
            values[index] = np.nan
            whole = False
    return values + 0.0 if whole else values


def _is_whole(text: str) -> bool:
    text = text.strip(" \t\n\v\f\r")
    return text.lstrip("+-").isdigit() and _INT_MIN <= int(text) < _UINT_END


def _int_to_float(number: int) -> float:
    try:
        return float(number)
    except OverflowError:
        return np.inf if number > 0 else -np.inf


def is_missing(cell: object) -> bool:
    """pandas.isna for one cell (None, NaN, pandas.NA), without pandas."""
    return cell is None or (isinstance(cell, float) and cell != cell) or type(cell).__name__ == "NAType"


def report(problems: list[Problem], path: pathlib.Path, places: Sequence, describe: Callable[[object], tuple[str, str]],
           rest: str) -> None:
    """A problem (where, message) = describe(place) for each place, up to MAX_PROBLEMS, then one counting the rest."""
    for place in places[:MAX_PROBLEMS]:
        problems.append(Problem(str(path), *describe(place)))
    if len(places) > MAX_PROBLEMS:
        problems.append(Problem(str(path), "", f"{len(places) - MAX_PROBLEMS} more {rest}"))


def whole_steps(steps: np.ndarray, has_step: np.ndarray, places: Sequence, step_name: str, path: pathlib.Path,
                problems: list[Problem], where: str = "line {}") -> tuple[np.ndarray, np.ndarray]:
    """(has_step, int64 steps) from float steps: a step outside the int64 range cannot be a step
    (its point is skipped, never wrapped round to a negative one); a fractional step is rounded
    to the nearest whole one and named. Both are problems at `where.format(place)`."""
    with np.errstate(invalid="ignore"):
        in_range = np.abs(steps) < 2.0 ** 63
        fractional = has_step & in_range & (steps != np.rint(steps))
    huge = np.flatnonzero(has_step & ~in_range)
    report(problems, path, huge, lambda index: (where.format(places[index]),
                                                f"{step_name!r} value {steps[index]:.6g} is outside the range of "
                                                "a step (a 64-bit integer); point skipped"),
           f"points with a {step_name!r} outside the 64-bit range skipped")
    report(problems, path, np.flatnonzero(fractional),
           lambda index: (where.format(places[index]),
                          f"{step_name!r} value {steps[index]:.6g} is not a whole number; "
                          f"read as step {np.rint(steps[index]):.0f}"), f"fractional {step_name!r} values rounded")
    has_step = has_step & in_range
    return has_step, np.rint(np.where(has_step, steps, 0)).astype(np.int64)


def cap_problems(problems: list[Problem], path: pathlib.Path) -> list[Problem]:
    """At most MAX_PROBLEMS problems, the last one counting those left out."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    left_out = len(problems) - MAX_PROBLEMS + 1
    return problems[:MAX_PROBLEMS - 1] + [Problem(str(path), "", f"{left_out} more problems not listed")]
