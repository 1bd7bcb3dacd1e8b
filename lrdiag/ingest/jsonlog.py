"""Read JSON training logs: HF trainer_state.json, detectron2 / mmdetection / mmengine JSON lines, Keras history.

Memory: JSON lines are parsed a chunk (textlog.CHUNK_BYTES) at a time into (line, key, value)
points, 16 bytes a point, the metrics' apart from the step counters'; the table is sorted in place
a column at a time and freed as the series are made, and the chunks' parts, once joined, are given
back to the system (textlog.release_freed_memory; from 64 MiB, while the read holds under 1.5x the
file, kept for the read's next arrays: textlog.steady_heap). A detectron2 log peaks at about 0.6-1.0x its
size, short records of many points (alternating train / val lines, lines of varied keys) at
1.6-1.8x: the points read so far and one chunk's work (~6x the chunk) at once, at the last chunk. Each
key costs a fixed ~0.5 kB more (its Series and their two arrays; ~0.37 kB where one line's keys share
their steps' array, as keys logged on the very same lines do), so a log of distinct keys peaks at
about its size plus 0.4-0.5 kB a key (11.4x for a 36 MB line of 1M keys, 11.3x for 300k lines of a
new key each). A trainer_state.json is
decoded 1 MiB at a time and its entries tabled as float64 blocks: about 1.6-1.8x its size. Small
logs (chunks under _SMALL) are read without pandas.

Speed, keys every one new (bench_csv_json, 2 cores, CPU of a fresh process, least of 5): a line of
100,000 keys after 1,000 short lines 0.10-0.11 s (0.95-1.02M keys/s), of 1M keys 1.31-1.65 s
(0.61-0.77M), a new key on each of 300k lines 0.52-0.59 s (1.01-1.16M keys/s, the step counter
counted). Where every key is new, the output is most of it: orjson's parse and the output's own
objects alone (a Series a key, its values array, the dict by name) take 1.11-1.31 s for the 1M keys
(0.76-0.90M keys/s; the bench's anchor "orjson, Series a key"), lrdiag 1.18-1.29x that. A key of the 1M
line costs ~1.4 us: orjson's parse 0.35-0.45 us, the series' dict 0.25-0.3 us (a dict of a million
str keys costs that on this machine, whatever is in it), its Series 0.17 us, its values' array 0.12 us,
the bookkeeping test 0.07 us, its id 0.05 us, the tables the rest; a quarter to a third of it is the
system's time to fault in a fresh process's memory (~3 us a 4 kB page).
"""

from __future__ import annotations

import io
import itertools
import json
import pathlib
import re
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import orjson

from lrdiag.ingest import files, jsonblocks
from lrdiag.ingest.bulk import gc_paused
from lrdiag.ingest.textlog import (CHUNK_BYTES, HEAD_BYTES, MAX_PROBLEMS, NAN_WORDS, NUMBER_TYPES, STEP_COLUMNS,
                                   bookkeeping_mask, cap_problems, cells_to_numbers, input_size, is_bookkeeping,
                                   is_missing, join_lines, line_bounds, normalized, per_line_count,
                                   release_freed_memory, report, steady_heap, to_floats, whole_line_chunks, whole_steps)

from lrdiag.series.model import Problem, ReadResult, Series

NAME = "json"

_KERAS_HEAD = re.compile(r'\{\s*"[^"]*"\s*:\s*\[\s*(?:-?[\d.]|NaN|-?Infinity|null|\])')
_KERAS_LOSS = re.compile(r'"[^"]*loss[^"]*"\s*:\s*\[')
_SEPARATORS = re.compile(r"[\s,]*")
# trainer_state.json is decoded this many bytes at a time; an entry is decoded once this much
# text lies ahead of it (an entry longer than that gets another window added); and entries are
# tabled this many at a time.
_WINDOW, _LOOKAHEAD, _BATCH = 1 << 20, 1 << 20, 10_000
# JSON lines become CSV for pandas' C parser: `{"k": v, "k2": v2}` -> `"k", v, "k2", v2`.
_JSON_TO_CSV = bytes.maketrans(b":", b",")
_OPEN, _CLOSE = ord("{"), ord("}")
_OPENERS, _CLOSERS = (ord("{"), ord("[")), (ord("}"), ord("]"))
_DEPTH_WINDOW = 1 << 22  # characters searched for the deepest point of a too-deep value
# Lines the fast path cannot split into key/value pairs are at most this many before it gives up
# on checking them one by one and counts braces per line instead.
_FEW_LINES = 10_000
# Chunks smaller than this are parsed line by line with json.loads, and JSON values converted to
# numbers in Python below _PYTHON_CELLS of them: pandas' import (0.3 s) costs more than it saves there.
_SMALL, _PYTHON_CELLS = 1 << 20, 100_000
# Fewer flat lines than this, left over by the blocks, go through json.loads: a pandas call costs more.

_FEW_FLAT = 1000
# Lines with more keys than this go through json.loads: a parser column per key costs more.
_WIDEST = 256
# A line with this many keys or more, all new, has them numbered without a dict look-up each (_Chunks.key_ids).
_MANY_KEYS = 10_000
_FEW_LISTED = 64  # names listed so far up to which a record of _MANY_KEYS keys looks for them in its own dict
# Keys of this many points or more on the same lines share one array of steps (_cut).
_SHARED = 4096
_READ_BOOKKEEPING = frozenset(STEP_COLUMNS) | {"mode"}  # bookkeeping keys the formats below read
_PLAIN = frozenset({int, float, str})  # JSON values kept as they are; others become text
_KNOWN_NAMES = ("trainer_state.json", "metrics.json", "scalars.json")

Points = tuple[np.ndarray, np.ndarray]  # (1-based line numbers, values) of one key


def _loads(text: str | bytes) -> object:
    """json.loads keeping NaN / Infinity as the text "NaN" / "Infinity": a NaN loss stays a point
    (the text converts to nan later) and is never taken for a missing value, which pandas shows as NaN too.

    JSON nested deeper than the parser's recursion allows (about 1,000 levels; no training log
    nests more than a few) is a JSONDecodeError at its deepest point, never a RecursionError."""
    try:
        return json.loads(text, parse_constant=str)
    except RecursionError:
        raise _too_deep(text, 0) from None


def _record(line: bytes | str, fast: bool) -> object:
    """The line as json.loads reads it (_loads): by orjson when `fast` and it can.

    orjson parses a line 2-3x faster (one of 100,000 keys: 21 against 54 ms) to the same record,
    float bits and all, where it parses one: it refuses NaN / Infinity, lone surrogates, a BOM and
    floats past float64's range, which json.loads then reads; an integer outside int64 and uint64
    comes as the float json's int becomes here anyway (correctly rounded: tested)."""
    if fast:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:  # NaN / Infinity, a lone surrogate, too deep, or damage, which json names
            pass
    return _loads(line)


def _too_deep(text: str | bytes, start: int) -> json.JSONDecodeError:
    """The error for a value nested too deeply, placed at its deepest point after `start` (brackets
    counted naively: the position only names the line)."""
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    codes = np.frombuffer(text[start:start + _DEPTH_WINDOW].encode("utf-32-le"), "<u4")
    depth = np.cumsum(np.isin(codes, _OPENERS).astype(np.int32) - np.isin(codes, _CLOSERS))
    return json.JSONDecodeError("nested too deeply (over the JSON parser's ~1,000-level limit)", text,
                                start + int(np.argmax(depth)) if depth.size else start)


def _flattened(container: dict | list) -> dict | list:
    """A log entry (or list) whose nested values are markers: never metrics, and safe to print however deep."""
    if isinstance(container, dict):
        return {key: _value_text(value) if isinstance(value, (dict, list)) else value
                for key, value in container.items()}
    return [_value_text(value) if isinstance(value, (dict, list)) else value for value in container]


def _value_text(value: object) -> str:
    """A nested value or a boolean as text (never a metric); a container as a short marker, which
    cannot recurse however deep it is nested."""
    return "{...}" if isinstance(value, dict) else "[...]" if isinstance(value, list) else json.dumps(value)


def claims(path: pathlib.Path, head: bytes) -> bool:
    if not head.strip():  # empty or unreadable: a well-known log name is still ours to report on
        return path.name in _KNOWN_NAMES or path.name.endswith(".log.json")
    return _detect(path.name, head) is not None


def read(path: pathlib.Path, data: bytes | None = None, *, exact: bool = False) -> ReadResult:
    """The file's series; `data`: its bytes already in hand (a live log's whole lines so far);
    `exact`: JSON lines parsed one by one with json.loads, the reference the fast paths are tested against.

    JSON lines bigger than a chunk are parsed a chunk of whole lines at a time
    (textlog.whole_line_chunks), so that the parser's buffers stay the size of a chunk."""
    chunks = whole_line_chunks(path, data)
    document = []  # a whole document read here, handed over so that its reader alone holds it
    try:
        head = next(chunks, b"")
        # the format is told from the file's first 64 KiB, which a first chunk of short lines
        # followed by a very long one falls short of
        sniff = head if len(head) >= HEAD_BYTES else data[:HEAD_BYTES] if data is not None else files.read_bytes(
            path, HEAD_BYTES)
        source = _detect(path.name, sniff[:HEAD_BYTES])
        if source in ("hf_trainer_state", "keras_history_json") and data is None:
            chunks.close()
            document.append(files.read_bytes(path))
    except OSError as error:
        return ReadResult(NAME, problems=[Problem(str(path), "", f"cannot read file: {error.strerror or error}")])
    if source is None:
        message = "empty file" if not sniff.strip() else "not a recognised JSON training log"
        return ReadResult(NAME, problems=[Problem(str(path), "", message)])
    result = ReadResult(source)
    if source == "hf_trainer_state":
        result.series = _read_trainer_state(document.pop() if document else data, path, result.problems)
    elif source == "keras_history_json":
        result.series = _read_keras_history(document.pop() if document else data, path, result.problems)
    else:
        pieces = itertools.chain([head], chunks)
        del head, sniff  # the first chunk freed once parsed, as the others are
        with steady_heap(input_size(path, data)):
            numbers, counters, texts, line_count = _parse_json_lines(pieces, path, result.problems, exact)
            build = {"detectron2_json": _detectron2, "mmdet_json": _mmdet, "mmengine_json": _mmengine}[source]
            held = [build(numbers, counters, texts, line_count)]
            del numbers, counters, texts  # held alone holds the points now, which the series take the place of
            result.series = _series_with_restarts(held, path, result.problems, result.notes)
        if not result.series and not result.problems:
            result.problems.append(Problem(str(path), "", "no metric records"))
    result.problems = cap_problems(result.problems, path)
    return result


def _detect(name: str, head: bytes) -> str | None:
    """The concrete format, decided from the name and the first 64 KiB only."""
    if not name.lower().endswith((".json", ".jsonl")) or b"\0" in head.split(b"\n", 1)[0]:
        return None
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if not text.startswith("{"):
        return None
    if text.startswith('{"env_info"'):  # mmdetection's header line; it can outgrow the head
        return "mmdet_json"
    whole = len(head) < HEAD_BYTES
    lines = text.split("\n")
    for line in (lines if whole else lines[:-1])[:5]:
        try:
            record = _loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            return None
        if "iteration" in record:
            return "detectron2_json"
        if "mode" in record and ("iter" in record or "epoch" in record):
            return "mmdet_json"
        if "step" in record:
            return "mmengine_json"
    if '"log_history"' in text:  # trainer_state.json sorts its keys: log_history comes early
        return "hf_trainer_state"
    if whole:
        try:
            return "keras_history_json" if _is_keras_history(json.loads(text)) else None
        except (ValueError, RecursionError):
            return None
    return "keras_history_json" if _KERAS_HEAD.match(text) and _KERAS_LOSS.search(text) else None


def _is_keras_history(document: object) -> bool:
    """A dict of equal-length lists of numbers with some loss key (`History.history` dumped)."""
    if not isinstance(document, dict) or not document:
        return False
    lists = list(document.values())
    return (all(isinstance(values, list) and values for values in lists)
            and len({len(values) for values in lists}) == 1
            and all(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
                    for values in lists for value in values)
            and any("loss" in key for key in document))


# ---- JSON lines: parse every line into one table of points ------------------------------------

@dataclass
class Keyed:
    """Points of many keys as one table, in no particular order: no Python object per point, and
    none per key until the series are made, so that a line with 100,000 keys costs what 100,000
    lines with one key cost."""

    names: list[str]
    lines: np.ndarray  # int32 (int64 past 2**31 lines), 1-based line of each point
    keys: np.ndarray  # int32 or int64, index into names
    values: np.ndarray  # float64 (numbers) or object (texts)

    def get(self, name: str) -> Points | None:
        """(lines, values) of one key, or None when it has no point."""
        if name not in self.names:
            return None
        rows = self.keys == self.names.index(name)
        return (self.lines[rows], self.values[rows]) if rows.any() else None

    def where(self, keep: np.ndarray) -> "Keyed":
        return self if keep.all() else Keyed(self.names, self.lines[keep], self.keys[keep], self.values[keep])

    def pop_by_key(self, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lines, values, bounds) of the points where `keep` (None: all), key by key and in line order
        within a key: key k's points are [bounds[k]:bounds[k + 1]]. The table is most of what a read
        holds: it is given up a column at a time, each as its successor is made, and left empty."""
        if keep is not None and not keep.all():
            self.lines = self.lines[keep]
            self.keys = self.keys[keep]
            self.values = self.values[keep]
        runs = np.flatnonzero(self.keys[1:] != self.keys[:-1]) + 1
        if not self.keys.size or len(runs) * 64 > self.keys.size:
            order, lines, bounds = self.by_key()
            self.lines = self.keys = None
            values, self.values = self.values[order], None
            return lines, values, bounds
        # Blocks put a chunk's points key by key: their few long runs of one key are put in order
        # whole, which costs no sort and no order of 8 bytes a point.
        firsts, ends = np.r_[0, runs], np.r_[runs, self.keys.size]
        run_keys = self.keys[firsts]
        counts = np.bincount(run_keys, weights=ends - firsts, minlength=len(self.names)).astype(np.int64)
        bounds = np.concatenate(([0], np.cumsum(counts)))
        in_key_order = np.argsort(run_keys, kind="stable")
        pieces = list(map(slice, firsts[in_key_order].tolist(), ends[in_key_order].tolist()))
        lines = np.concatenate([self.lines[piece] for piece in pieces])
        self.lines = self.keys = None
        values = np.concatenate([self.values[piece] for piece in pieces])
        self.values = None
        for key in _unordered_keys(lines, bounds).tolist():
            segment = slice(bounds[key], bounds[key + 1])
            in_line_order = np.argsort(lines[segment], kind="stable")
            lines[segment], values[segment] = lines[segment][in_line_order], values[segment][in_line_order]
        return lines, values, bounds

    def by_key(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(order, lines[order], bounds): `order` puts the points key by key, in line order within a
        key; key k's points are order[bounds[k]:bounds[k + 1]]."""
        counts = np.bincount(self.keys, minlength=len(self.names))
        bounds = np.concatenate(([0], np.cumsum(counts)))
        narrow = np.uint8 if len(self.names) <= 1 << 8 else np.uint16 if len(self.names) <= 1 << 16 else None
        order = np.argsort(self.keys.astype(narrow) if narrow else self.keys, kind="stable")  # a radix sort
        lines = self.lines[order]
        unordered = _unordered_keys(lines, bounds)
        if unordered.size > 64:
            order = np.argsort(self.keys.astype(np.int64) * (int(self.lines.max()) + 1) + self.lines, kind="stable")
        for key in unordered.tolist() if unordered.size <= 64 else ():
            segment = order[bounds[key]:bounds[key + 1]]
            order[bounds[key]:bounds[key + 1]] = segment[np.argsort(self.lines[segment], kind="stable")]
        return order, (self.lines[order] if unordered.size else lines), bounds


def _unordered_keys(lines: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Keys whose points (key by key: key k's are lines[bounds[k]:bounds[k + 1]]) go back in line.

    Chunks come line-sorted, so a key is out of line order only where its points came from several
    parts (a key in several parser columns, or in fast and slow lines)."""
    drops = np.flatnonzero(lines[1:] < lines[:-1]) + 1  # where a line number goes down ...
    drop_keys = np.searchsorted(bounds, drops, side="right") - 1
    return np.unique(drop_keys[bounds[drop_keys] != drops])  # ... inside one key's points


class _Chunks:
    """Parsed points as they come, chunk by chunk: (lines, key ids, values), and the key names by id."""

    def __init__(self) -> None:
        self.names: list[str] = []  # by id
        self.ids: dict[str, int] = {}  # name -> id, for all names but those of `unlisted`
        self.unlisted: tuple[int, int] | None = None  # ids of a line's many keys not in `ids` yet (see key_ids)
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.bookkeeping = np.zeros(0, bool)  # by id: is_bookkeeping
        self.unused = np.zeros(0, bool)  # by id: a bookkeeping key that no format reads
        # by id: the 1-based line where the key first appears, and its place among that line's keys
        self.first_line, self.first_place = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.sightings: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # this chunk's (ids, lines, places)

    def key_ids(self, names: list[str], distinct: bool = False, known: list[str] | None = None) -> np.ndarray:
        """The id of each name, new names numbered on: one dict look-up a name, in a C loop.

        `distinct`: no name twice (one record's keys). Many such names, most of them new (a line of
        100,000 per-class keys), are looked up in one C loop (in a dict still small: cheap), the new
        ones numbered at once and entered into the dict only when a later name is not found there:
        entering a million names costs 0.3 s, which a file that ends with them never pays. `known`:
        those of them the dict holds, where the caller found them in the record's own dict (a few
        listed names looked for there: no look-up a name at all)."""
        ids, listed = self.ids, self.names
        if self.unlisted is not None and not all(map(ids.__contains__, names)):  # might be among them
            ids.update(zip(listed[slice(*self.unlisted)], range(*self.unlisted)))
            self.unlisted = None
        if self.unlisted is None and distinct and len(names) >= _MANY_KEYS:
            if known is None:
                found = np.fromiter(map(ids.get, names, itertools.repeat(-1)), np.int64, len(names))
            else:
                found = np.full(len(names), -1, np.int64)
                for name in known:
                    found[names.index(name)] = ids[name]
            new = found < 0
            new_count = int(np.count_nonzero(new))
            if new_count >= _MANY_KEYS:
                self.unlisted = (len(listed), len(listed) + new_count)
                listed.extend(itertools.compress(names, new.tolist()) if new_count < len(names) else names)
                found[new] = np.arange(*self.unlisted)
                return found
        # A new name is entered with `count` + its place in `names` (a C loop: no Python code a name;
        # what stays, ~0.3 us a new name in a dict of 300,000, is the dict's own work), then numbered on
        # from the listed ones: as it is where the new names come first, each once (a column of new keys).
        count = len(ids)
        found = np.fromiter(map(ids.setdefault, names, itertools.count(count)), np.int64, len(names))
        new = found >= count
        if new.any():
            places, numbers = np.unique(found[new], return_inverse=True)
            if places[-1] - count == len(places) - 1:
                new_names = names[:len(places)]
            else:
                new_names = [names[place] for place in (places - count).tolist()]
                ids.update(zip(new_names, range(count, count + len(places))))
                found[new] = count + numbers
            listed.extend(new_names)
        return found

    def seen(self, ids: np.ndarray, lines: np.ndarray | int, places: np.ndarray | int) -> None:
        """Keys met at (1-based line in the chunk, place among the line's keys); each path of the
        parser reports them, so that keys are ordered as the file shows them whichever path read them."""
        ids, lines, places = np.broadcast_arrays(ids, lines, places)
        self.sightings.append((ids, lines, places))

    def settle(self, first_part: int, first_line: int) -> None:
        """The parts from `first_part` on: lines moved `first_line` down the file, and the points
        of bookkeeping keys (time, eta_seconds, ...), which are never metrics and which no format
        reads, dropped before they are copied again; step counters and mmdetection's `mode` stay,
        in parts of their own: a part holds metrics' points or bookkeeping's (_tabled keeps them
        apart). Keys new in this chunk get where they first appear."""
        known = len(self.first_line)
        if len(self.names) > known:
            ids, lines, places = (np.concatenate(column) for column in zip(*self.sightings))
            new = ids >= known
            if not new.all():
                ids, lines, places = ids[new], lines[new], places[new]
            if len(ids) == len(self.names) - known and (ids[1:] > ids[:-1]).all():
                # each new key seen once, in the order of its id (a line or a parser column of new keys)
                self.first_line = np.concatenate([self.first_line, lines + first_line])
                self.first_place = np.concatenate([self.first_place, places])
            else:
                order = np.lexsort((places, lines, ids))
                ids, lines, places = ids[order], lines[order], places[order]
                first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
                self.first_line = np.concatenate([self.first_line, np.zeros(len(self.names) - known, np.int64)])
                self.first_place = np.concatenate([self.first_place, np.zeros(len(self.names) - known, np.int64)])
                self.first_line[ids[first]] = lines[first] + first_line
                self.first_place[ids[first]] = places[first]
        self.sightings = []
        new_names = self.names[len(self.unused):]
        bookkeeping = bookkeeping_mask(new_names)
        unused = bookkeeping.copy()
        for place in np.flatnonzero(bookkeeping).tolist():
            unused[place] = new_names[place] not in _READ_BOOKKEEPING
        self.bookkeeping = np.concatenate([self.bookkeeping, bookkeeping])
        self.unused = unused = np.concatenate([self.unused, unused])
        settled = []
        for lines, ids, values in self.parts[first_part:]:
            bookkeeping = self.bookkeeping[ids]
            for kind in (~bookkeeping, bookkeeping & ~unused[ids]):
                if kind.any():
                    part = (lines, ids, values) if kind.all() else (lines[kind], ids[kind], values[kind])
                    settled.append(_moved(*part, first_line))
        self.parts[first_part:] = settled


def _moved(lines: np.ndarray, ids: np.ndarray, values: np.ndarray, first_line: int) -> tuple:
    """A part with its lines moved `first_line` down the file, and 4 bytes a line number and a key id
    while they fit (2**31 lines, keys): a third less memory a point."""
    lines = lines + first_line if first_line else lines
    if lines.size and int(lines.max()) < 2 ** 31:
        lines = lines.astype(np.int32, copy=False)
    return lines, ids.astype(np.int32, copy=False), values


def _parse_json_lines(pieces: Iterable[bytes], path: pathlib.Path, problems: list[Problem],
                      exact: bool = False) -> tuple[Keyed, Keyed, Keyed, int]:
    """Tables of points: metrics' numbers, bookkeeping's numbers (step counters), text keys' (like
    mmdetection's `mode`); and the line count.

    `pieces`: bytes of whole lines in file order. Runs of flat
    lines that share a layout are read as blocks (jsonblocks); other flat lines go through pandas'
    C parser; lines neither can take (nested values, escapes, more keys than usual, malformed
    JSON) are parsed one by one (_record: orjson, json.loads for what it refuses), which names the
    bad ones. `exact`: every line through json.loads (what the fast paths are tested against)."""
    parsed = _Chunks()
    line_count, bulk = 0, False
    for data in pieces:
        data, first_line = normalized(data), line_count
        starts, ends = line_bounds(data)
        blank = ends == starts
        first_part = len(parsed.parts)
        slow = np.flatnonzero(~blank)
        # a small log: no pandas import (its parser would cost more); a big one's last chunk, however small, as the rest
        bulk = bulk or len(data) >= _SMALL
        if not exact and bulk:
            buffer = np.frombuffer(data, np.uint8)
            objects = slow[(buffer[starts[slow]] == _OPEN) & (buffer[ends[slow] - 1] == _CLOSE)]
            blocks, _ = jsonblocks.parse_blocks(data, starts, ends, objects)
            taken = np.zeros(len(starts), bool)
            for block in blocks:
                _add_block(block, parsed)
                taken[block.lines] = True
            slow = slow[~taken[slow]]
            # a few lines left over (detectron2's evaluation records) cost json.loads less than a parser call
            if len(slow) > _FEW_FLAT:
                flat = _flat_lines(data, starts, ends, blank) & ~taken
                rejected = _parse_flat_lines(data, starts, ends, np.flatnonzero(flat), parsed)
                slow = np.union1d(np.flatnonzero(~flat & ~blank & ~taken), rejected)
        _parse_slow_lines(data, starts, ends, slow, parsed, path, problems, first_line,
                          fast=not exact)

        parsed.settle(first_part, first_line)
        line_count = first_line + len(starts)
    numbers, counters, texts = _tabled(parsed, path, problems)
    return numbers, counters, texts, line_count


def _add_block(block: jsonblocks.Block, chunks: _Chunks) -> None:
    """A block's points as parts: its numbers key by key, then its text constants (mmdetection's
    `mode`); null constants are no point, booleans are text, as json.loads' path makes them."""
    layout, lines = block.template, block.lines + 1
    # bookkeeping no format reads (time, eta_seconds) is left out here rather than copied first, and
    # the step counters' points made a part apart from the metrics' (settle)
    slots = [slot for slot, key in enumerate(layout.keys) if not is_bookkeeping(key) or key in _READ_BOOKKEEPING]
    ids = chunks.key_ids([layout.keys[slot] for slot in slots])
    chunks.seen(ids, lines[0], [layout.places[layout.keys[slot]] for slot in slots])
    counters = np.array([is_bookkeeping(layout.keys[slot]) for slot in slots], bool)
    for kind in (~counters, counters):
        if kind.any():
            chunks.parts.append((np.tile(lines, kind.sum()), np.repeat(ids[kind], len(lines)),
                                 block.values[:, np.array(slots)[kind]].T.ravel()))
    for key, constant in layout.constants.items():
        if constant is not None:
            cells = np.empty(len(lines), dtype=object)
            cells[:] = constant if isinstance(constant, str) else json.dumps(constant)
            ids = chunks.key_ids([key])
            chunks.seen(ids, lines[0], layout.places[key])
            chunks.parts.append((lines, ids.repeat(len(lines)), cells))



def _tabled(chunks: _Chunks, path: pathlib.Path, problems: list[Problem]) -> tuple[Keyed, Keyed, Keyed]:
    """Cells to numbers for every point at once, then (numbers of metrics, of bookkeeping, texts).

    Empty cells and JSON nulls are no point; 'nan'/'inf' text is a NaN/Inf point. A key with no
    numeric cell is text (mmdetection's `mode`); a non-numeric cell of a numeric key is a problem."""
    names = list(chunks.names)
    # key ids in the order the file first shows the keys (by line, then place in the line)
    order = np.lexsort((chunks.first_place, chunks.first_line))
    renamed = not np.array_equal(order, np.arange(len(order)))
    bookkeeping = chunks.bookkeeping[order]
    if renamed:
        names = [names[key] for key in order.tolist()]
        new_id = np.empty(len(order), np.int32)
        new_id[order] = np.arange(len(order))
        chunks.parts = [(lines, new_id[ids], values) for lines, ids, values in chunks.parts]
    numeric = [list(part) for part in chunks.parts if part[2].dtype.kind == "f"]
    textual = [list(part) for part in chunks.parts if part[2].dtype.kind != "f"]
    chunks.parts = []
    raw = _joined(textual, 2, object)
    text_lines, text_keys = _joined(textual, 0, np.int32), _joined(textual, 1, np.int32)
    present_raw, converted, failed = _cells_to_floats(raw)
    # The numbers of the metrics and those of bookkeeping (step counters) apart, so that neither
    # is copied out of the other: each the numeric parts (of one kind each: settle), then the text
    # cells that are numbers.
    converts, text_kinds = present_raw & ~failed, bookkeeping[text_keys]
    tails = [[[text_lines[rows], text_keys[rows], converted[rows]]] if rows.any() else []
             for rows in (converts & ~text_kinds, converts & text_kinds)]
    del converted
    metric_parts, counter_parts = [], []
    for part in numeric:  # a part holds one kind's points (settle)
        (counter_parts if bookkeeping[part[1][0]] else metric_parts).append(part)
    numbers, counters = _number_table(names, metric_parts, tails[0]), _number_table(names, counter_parts, tails[1])
    # A key is text when none of its cells is a number (mmdetection's `mode`): only one with a cell
    # that is no number can be, and those few are looked for among the numbers' keys.
    candidates = np.unique(text_keys[failed])
    is_text_key = np.zeros(len(names), bool)
    if candidates.size:
        is_text_key[candidates] = ~(np.isin(candidates, numbers.keys) | np.isin(candidates, counters.keys))
    bad = np.flatnonzero(failed & ~is_text_key[text_keys])
    bad = bad[np.argsort(text_lines[bad], kind="stable")]
    report(problems, path, bad, lambda index: (
        f"line {text_lines[index]}",
        f"value {str(raw[index])[:40]!r} of {names[text_keys[index]]!r} is not a number; point skipped"),
        "non-numeric values skipped")
    text_points = present_raw & is_text_key[text_keys]
    texts = Keyed(names, text_lines[text_points], text_keys[text_points], raw[text_points])
    return numbers, counters, texts


def _number_table(names: list[str], parts: list[list], tail: list[list]) -> Keyed:
    """Numeric parts, then converted text cells, as one table; NaN in a numeric part is an empty
    cell, no point (a NaN text is one)."""
    count = sum(len(part[2]) for part in parts)
    table = Keyed(names, _joined(parts + tail, 0, np.int32), _joined(parts + tail, 1, np.int32),
                  _joined(parts + tail, 2, np.float64))
    keep = ~np.isnan(table.values)
    keep[count:] = True
    return table.where(keep)


def _cells_to_floats(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(present, numbers, failed) of JSON values (an object array): present unless null; the
    number of each (NaN if none); failed where a present value is no number and no NaN word.

    In Python up to _PYTHON_CELLS values (a small log imports no pandas), in pandas' C loops above
    or once pandas is imported anyway (by the blocks of a bigger file); in Python too where pandas
    gives up (an int past a float's range, which Python reads as +-inf, as json.loads' float() does)."""
    converted = None
    if raw.size > _PYTHON_CELLS or "pandas" in sys.modules:
        import pandas as pd
        try:
            converted = np.asarray(pd.to_numeric(raw, errors="coerce"), dtype=np.float64)
        except OverflowError:
            pass
    if converted is None:
        present = np.array([not is_missing(cell) and not (isinstance(cell, str) and cell == "null")
                            for cell in raw.tolist()], bool)
        converted = to_floats(raw)
        failed = present & np.isnan(converted)
        for index in np.flatnonzero(failed):
            failed[index] = str(raw[index]).strip().lower() not in NAN_WORDS
    else:
        present = pd.notna(raw) & (raw != "null")
        failed = present & np.isnan(converted)
        if failed.any():  # each distinct text looked at once: a layout's text (a mode) repeats on every line
            cells = raw[failed].tolist()
            nan_word = {cell: str(cell).strip().lower() in NAN_WORDS for cell in set(cells)}
            failed[np.flatnonzero(failed)] = [not nan_word[cell] for cell in cells]

    # pandas reads cells that are all whole numbers as integers, and so -0.0 as 0 when every other
    # cell it is given is whole: a zero's sign is its own, whichever cells it is converted with
    for index in np.flatnonzero(converted == 0).tolist():
        cell = raw[index]
        negative = cell.strip().startswith("-") if isinstance(cell, str) else (
            isinstance(cell, float) and np.signbit(cell))
        converted[index] = -0.0 if negative else 0.0
    return present, converted, failed


def _joined(parts: list[list], column: int, dtype) -> np.ndarray:
    """One column of all the parts as one array; the parts let go of it as it is joined, so that
    memory holds each point about once rather than twice."""
    joined = np.concatenate([part[column] for part in parts]) if parts else np.zeros(0, dtype)
    for part in parts:
        part[column] = None
    if joined.nbytes >= CHUNK_BYTES:  # the parts were a chunk's or more: their memory, given back
        release_freed_memory()
    return joined


def _flat_lines(data: bytes, starts: np.ndarray, ends: np.ndarray, blank: np.ndarray) -> np.ndarray:
    """Lines that are one flat object: `{` first, `}` last, no other brace, no list, no escape."""
    buffer = np.frombuffer(data, np.uint8)
    if not len(data):
        return np.zeros(len(starts), bool)
    first_chars, last_chars = buffer[np.minimum(starts, len(data) - 1)], buffer[np.maximum(ends - 1, 0)]
    flat = ~blank & (first_chars == _OPEN) & (last_chars == _CLOSE)
    others = np.flatnonzero(~flat)
    if len(others) <= _FEW_LINES:
        def outside_other_lines(char: bytes) -> int:
            # find() is memchr-fast when the char is absent, the usual case for `[` and `\`
            in_file = np.count_nonzero(buffer == ord(char)) if data.find(char) >= 0 else 0
            return in_file - sum(data.count(char, starts[i], ends[i]) for i in others)
        if (outside_other_lines(b"[") == 0 and outside_other_lines(b"\\") == 0
                and outside_other_lines(b"{") == flat.sum() == outside_other_lines(b"}")):
            return flat
    return (flat & (per_line_count(data, ends, b"[") == 0) & (per_line_count(data, ends, b"\\") == 0)
            & (per_line_count(data, ends, b"{") == 1) & (per_line_count(data, ends, b"}") == 1))


def _parse_flat_lines(data: bytes, starts: np.ndarray, ends: np.ndarray, flat: np.ndarray,
                      chunks: _Chunks) -> np.ndarray:
    """Parse the flat lines (0-based indices) as CSV into `chunks`; return the indices it could not take."""
    import pandas as pd
    if not len(flat):
        return flat
    width = 2 * _usual_key_count(data, starts, ends, flat)
    if width > 2 * _WIDEST:  # a column per key costs pandas more than json.loads costs
        return flat
    # pandas would read a first line wider than `names` with an index and no warning: lines go
    # the slow way until one fits.
    fits = next((position for position, index in enumerate(flat)
                 if 0 < _key_count(data[starts[index]:ends[index]]) <= width // 2), len(flat))
    leading, flat = flat[:fits], flat[fits:]
    if not len(flat):
        return leading
    chunk = join_lines(data, starts, ends, flat)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(io.BytesIO(chunk.translate(_JSON_TO_CSV, b"{}")), engine="c", header=None,
                                names=range(width), dtype={column: object for column in range(0, width, 2)},
                                keep_default_na=False, na_values=[""], skipinitialspace=True,
                                on_bad_lines="warn", lineterminator="\n")
        except (ValueError, pd.errors.ParserError):  # e.g. undecodable bytes: json.loads will say where
            return np.concatenate([leading, flat])
    # Lines with more keys than usual were skipped by the parser; it names them in warnings.
    wider = np.array([int(number) - 1 for warning in caught
                      for number in re.findall(r"Skipping line (\d+)", str(warning.message))], dtype=np.int64)
    wider = np.unique(wider[(wider >= 0) & (wider < len(flat))])
    taken = np.delete(flat, wider)
    if len(taken) != len(frame):  # the warnings did not say what we expect: parse every line slowly
        return np.concatenate([leading, flat])
    # Key columns as text (a key "1" keeps its spelling), factorized here: pandas' categories cost
    # 4x as much where every line brings a new key (it tries each category as a number and a boolean).
    keys = [pd.factorize(frame[column]) for column in range(0, width, 2)]
    values = [frame[column] for column in range(1, width, 2)]
    # A row is taken when its fields pair up as key/value (a key without a value means the line
    # was not flat pairs) and its keys came through intact: a comma in a key was a colon before
    # the translation.
    valid = np.ones(len(frame), bool)
    usable_names = []
    for (codes, names), value in zip(keys, values):
        names = names.tolist()
        # a key with a comma is rare: looked for one by one only where the keys hold a comma at all
        usable = np.array(["," not in name for name in names], bool) if "," in "".join(names) else \
            np.ones(len(names), bool)
        valid &= ((codes < 0) == value.isna().to_numpy()) & np.append(usable, True)[codes]
        usable_names.append((names, usable))
    lines = taken + 1
    for place, ((codes, _), value, (names, usable)) in enumerate(zip(keys, values, usable_names)):
        rows = valid & (codes >= 0)
        if not rows.any():
            continue
        ids = np.full(len(usable), -1, np.int64)
        ids[usable] = chunks.key_ids(list(itertools.compress(names, usable)))
        codes_here, first_rows = np.unique(codes[rows], return_index=True)
        chunks.seen(ids[codes_here], lines[rows][first_rows], place)
        if pd.api.types.is_bool_dtype(value.dtype):  # true/false: text, never a metric
            cells = np.where(value.to_numpy(dtype=bool), "true", "false").astype(object)
        elif pd.api.types.is_numeric_dtype(value.dtype):
            cells = value.to_numpy(dtype=np.float64)
        else:
            cells = value.to_numpy(dtype=object)
        every = rows.all()  # the usual case: no copies before the one concatenation
        chunks.parts.append((lines if every else lines[rows], ids[codes] if every else ids[codes[rows]],
                             cells if every else cells[rows]))
    return np.concatenate([leading, flat[wider], taken[~valid]])


def _key_count(line: bytes) -> int:
    """Keys of one JSON object line; 0 when it is not one."""
    try:
        record = _loads(line)
    except ValueError:
        return 0
    return len(record) if isinstance(record, dict) else 0


def _usual_key_count(data: bytes, starts: np.ndarray, ends: np.ndarray, flat: np.ndarray) -> int:
    """Keys per line that 90% of up to 200 lines spread over the file have at most: the parser's
    width. Rarer, wider lines (detectron2 evaluation records) take the slow path; lines whose key
    count varies mostly fit."""
    sample = flat[np.linspace(0, len(flat) - 1, min(len(flat), 200)).astype(int)]
    # `":` ends every key of a flat line written by a logger, and rarely occurs in a value: a
    # count, not a parse, so that one line with 100,000 keys costs no extra json.loads.
    counts = [count for count in (data.count(b'":', starts[index], ends[index]) for index in sample) if count]
    return max(1, int(np.quantile(counts, 0.9, method="lower"))) if counts else 1


def _parse_slow_lines(data: bytes, starts: np.ndarray, ends: np.ndarray, slow: np.ndarray,
                      chunks: _Chunks, path: pathlib.Path, problems: list[Problem], first_line: int = 0,
                      fast: bool = False) -> None:
    """Each line parsed alone (_record; by orjson when `fast`): the slow path, for the lines the blocks
    cannot take (problems name the line in the file: `first_line` lines before these)."""
    # Records of numbers alone (the usual ones) and the others, each as (1-based line of each
    # record, its point count, and of each point: key, place among its line's keys, value; and
    # where in the keys the records of _MANY_KEYS keys are); the places of a record of numbers
    # alone are 0, 1, 2, ...: not listed, made by numpy.
    numbers: tuple[list, list, list, None, list, list] = ([], [], [], None, [], [])
    others: tuple[list, list, list, list, list, list] = ([], [], [], [], [], [])
    bad: list[tuple[int, str]] = []
    # (1-based line, keys, float64 values, the listed ones among them or None, how many were listed)
    wide_numbers: list[tuple[int, list[str], np.ndarray, list[str] | None, int]] = []
    for index in slow.tolist():
        try:
            record = _record(data[starts[index]:ends[index]], fast)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            bad.append((index, error.msg if isinstance(error, json.JSONDecodeError) else str(error)))
            continue
        types = set(map(type, record.values()))
        if types <= NUMBER_TYPES and len(record) >= _MANY_KEYS:  # a record of very many numbers: its arrays at once
            try:
                cells = np.fromiter(record.values(), np.float64, len(record))
                # the few listed names among its keys, looked for in its dict, while no other key is listed
                known = [name for name in chunks.ids if name in record] if len(chunks.ids) <= _FEW_LISTED else None
                wide_numbers.append((index + 1, list(record), cells, known, len(chunks.ids)))
                continue
            except OverflowError:  # an int past a float's range: with the others, where the cells' conversion reads it
                pass
        lines, counts, names, places, values, wide = numbers if types <= NUMBER_TYPES else others
        before = len(names)
        if types <= _PLAIN:  # the usual record: numbers and text only
            names.extend(record)
            values.extend(record.values())
            if places is not None:
                places.extend(range(len(record)))
        else:
            for place, (key, value) in enumerate(record.items()):
                if value is not None:
                    names.append(key)
                    places.append(place)
                    # Booleans and nested values are text here: never metrics.
                    values.append(value if type(value) in _PLAIN else _value_text(value))
        lines.append(index + 1)
        counts.append(len(names) - before)
        if len(names) - before >= _MANY_KEYS:
            wide.append((before, len(names)))
    last_line_unfinished = data[-1:] != b"\n"

    def describe(line: tuple[int, str]) -> tuple[str, str]:
        index, reason = line
        half = "half-written last line: " if last_line_unfinished and index == len(starts) - 1 else ""
        return f"line {first_line + index + 1}", f"{half}not valid JSON ({reason}); line skipped"
    report(problems, path, bad, describe, "lines that are not valid JSON skipped")
    for (lines, counts, names, places, values, wide), numbers_alone in ((numbers, True), (others, False)):
        if not names:
            continue
        cells = None
        if numbers_alone:  # float64 at once, as json's numbers convert (an int rounded correctly) ...
            try:
                cells = np.array(values, dtype=np.float64)
            except OverflowError:  # ... but an int past a float's range, which the cells' conversion reads
                pass
        if cells is None:
            cells = np.empty(len(values), dtype=object)
            cells[:] = values
        del values[:]
        line_numbers, ids = np.repeat(np.array(lines, dtype=np.int64), counts), _key_ids(chunks, names, wide)
        if places is None:
            counts = np.array(counts, dtype=np.int64)
            places = np.arange(len(ids)) - np.repeat(np.cumsum(counts) - counts, counts)
        chunks.parts.append((line_numbers, ids, cells))
        chunks.seen(ids, line_numbers, np.asarray(places, dtype=np.int64))
    for line, names, cells, known, listed in wide_numbers:  # last: no later look-up of this chunk's keys enters them all
        known = known if len(chunks.ids) == listed and chunks.unlisted is None else None
        ids = chunks.key_ids(names, distinct=True, known=known)
        chunks.parts.append((np.full(len(ids), line, np.int64), ids, cells))
        chunks.seen(ids, line, np.arange(len(ids)))


def _key_ids(chunks: _Chunks, names: list[str], wide: list[tuple[int, int]]) -> np.ndarray:
    """chunks.key_ids of the names, told which runs of them are one record's many keys, never
    twice the same."""
    if not wide:
        return chunks.key_ids(names)
    if wide == [(0, len(names))]:  # one record's keys alone (a wide line in a chunk of its own): no copy
        return chunks.key_ids(names, distinct=True)
    pieces, done = [], 0
    for start, end in wide:
        pieces += [chunks.key_ids(names[done:start]), chunks.key_ids(names[start:end], distinct=True)]
        done = end
    return np.concatenate(pieces + [chunks.key_ids(names[done:])])


# ---- JSON lines: per-format steps and tags ---------------------------------------------------

def _by_line(points: Points | None, line_count: int, fill: object = np.nan) -> np.ndarray:
    """A per-line array (index = 1-based line number) of one key's values."""
    out = np.full(line_count + 1, fill, dtype=object if fill is None else np.float64)
    if points is not None:
        out[points[0]] = points[1]
    return out


# Each format's build: (metrics' points, steps by line, the step's name) from the points of the
# metrics (`numbers`), of the step counters and other bookkeeping read (`counters`) and of text keys.

def _detectron2(numbers: Keyed, counters: Keyed, texts: Keyed, line_count: int):
    return numbers, _by_line(counters.get("iteration"), line_count), "iteration"


def _split_by_mode(metrics: Keyed, modes: np.ndarray) -> Keyed:
    """Train keys keep their names; keys of other modes become `<mode>/<key>` so that a
    validation `loss` never mixes with the training `loss`."""
    mode_codes, mode_names = _factorized(modes)  # no mode (the mmdetection header line): -1
    point_modes = mode_codes[metrics.lines]
    train = mode_names.index("train") if "train" in mode_names else -2
    is_lr = np.array([name == "lr" for name in metrics.names], dtype=bool)
    # validation records repeat the training LR
    keep = (point_modes >= 0) & ~(is_lr[metrics.keys] & (point_modes != train))
    width = max(len(mode_names), 1)
    combos = metrics.keys[keep].astype(np.int64) * width + point_modes[keep]
    if len(metrics.names) * width <= 4 * combos.size + 1024:  # a lookup table, not a sort
        used = np.flatnonzero(np.bincount(combos, minlength=len(metrics.names) * width))
        table = np.zeros(len(metrics.names) * width, np.int64)
        table[used] = np.arange(used.size)
        keys = table[combos]
    else:
        used, keys = np.unique(combos, return_inverse=True)
    names = [metrics.names[key] if mode == train else f"{mode_names[mode]}/{metrics.names[key]}"
             for key, mode in zip((used // width).tolist(), (used % width).tolist())]
    return Keyed(names, metrics.lines[keep], keys.reshape(-1).astype(np.int64), metrics.values[keep])


def _factorized(modes: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """pandas.factorize of a line's mode (text, or None where a line has none): a code per line
    (-1 for None) and the modes in the order the file first shows them."""
    table: dict[str, int] = {}
    codes = [-1 if mode is None else table.setdefault(mode, len(table)) for mode in modes.tolist()]
    return np.array(codes, dtype=np.int64), list(table)


def _mmdet(numbers: Keyed, counters: Keyed, texts: Keyed, line_count: int):
    """mmdetection 2.x: `iter` restarts every epoch, so step = (epoch - 1) * iters per epoch + iter.

    Iters per epoch is the largest `iter` seen; a validation record's `iter` is the epoch's
    length, which the last logged training iter may fall short of."""
    modes = _by_line(texts.get("mode"), line_count, fill=None)
    epochs, iters = _by_line(counters.get("epoch"), line_count), _by_line(counters.get("iter"), line_count)
    records = np.not_equal(modes, None)  # the header line (env_info, config, seed) has no mode
    by_epoch = records & ~np.isnan(epochs)
    iters_per_epoch = np.nanmax(iters[by_epoch]) if (by_epoch & ~np.isnan(iters)).any() else 0
    steps = np.where(np.isnan(epochs), iters, (epochs - 1) * iters_per_epoch + iters)  # iter-based runners: no epoch
    steps[~records] = np.nan
    return _split_by_mode(numbers, modes), steps, "step"


def _mmengine(numbers: Keyed, counters: Keyed, texts: Keyed, line_count: int):
    """mmengine scalars.json: `step` keys every line. Validation lines carry no `iter`, and with
    an epoch-based loop their `step` is the epoch; they move to the last training iter of that
    epoch so that every series counts iterations."""
    steps = _by_line(counters.get("step"), line_count)
    if counters.get("iter") is None:
        return numbers, steps, "step"
    iters, epochs = _by_line(counters.get("iter"), line_count), _by_line(counters.get("epoch"), line_count)
    validation = ~np.isnan(steps) & np.isnan(iters)
    training = ~np.isnan(iters) & ~np.isnan(epochs)
    if training.any():
        epoch_values, epoch_of = np.unique(epochs[training], return_inverse=True)
        last_iter_of_epoch = np.full(len(epoch_values), -np.inf)
        np.maximum.at(last_iter_of_epoch, epoch_of, iters[training])
        at = np.minimum(np.searchsorted(epoch_values, steps[validation]), len(epoch_values) - 1)
        steps[validation] = np.where(epoch_values[at] == steps[validation], last_iter_of_epoch[at], steps[validation])
    modes = np.where(validation, "val", "train").astype(object)
    return _split_by_mode(numbers, modes), steps, "step"


def _series_with_restarts(held: list, path: pathlib.Path, problems: list[Problem],
                          notes: list[str]) -> dict[str, Series]:
    """Series from per-line points, after resumed runs replace what they overlap (_kept_points).

    `held`: [(points, steps by line, step name)] from the format's build, emptied here so that the
    points are freed as they are gathered into series (a point costs 16 bytes in the table, 16 in
    its series)."""
    points, steps_by_line, step_name = held.pop()
    keep, steps_by_line = _kept_points(points, steps_by_line, step_name, path, problems, notes)
    if steps_by_line is None:
        return {}
    lines, values, bounds = points.pop_by_key(keep)
    names = points.names
    del points, keep
    # float64 values and int64 steps, which Series.of_arrays takes unchecked (already so: no copy)
    values = values.astype(np.float64, copy=False)
    has_points = bounds[1:] > bounds[:-1]
    if has_points.all():  # as they nearly always are: no copy of a million names
        present = np.arange(len(names))
    else:
        present, names = np.flatnonzero(has_points), list(itertools.compress(names, has_points.tolist()))
    steps = _cut(lines, bounds, present, shared=True, lookup=steps_by_line)  # kept lines all have a step
    del lines
    with gc_paused():  # a file may hold 100,000 keys: a Series each
        return dict(zip(names, map(Series.of_arrays, names, steps, _cut(values, bounds, present))))


def _kept_points(points: Keyed, steps_by_line: np.ndarray, step_name: str, path: pathlib.Path,
                 problems: list[Problem], notes: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(whether each point is kept, None where every one is; int64 steps by line); (None, None)
    when there is no point.

    A record whose step goes back to k (a resumed run), or repeats the previous record's step with a
    key that record had (a duplicated line), drops every earlier point at step >= k, for all tags.
    An evaluation record sharing the iteration of a training record is not a repeat. Arrays of a
    line each die with this call, before the table is sorted."""
    tag_count = len(points.names)
    point_lines, point_tags = points.lines, points.keys
    if not point_lines.size:
        return None, None
    # marked rather than counted: bincount would first copy the line numbers to int64
    has_points = np.zeros(len(steps_by_line), bool)
    has_points[point_lines] = True
    no_step = np.flatnonzero(has_points & np.isnan(steps_by_line))
    report(problems, path, no_step, lambda line: (f"line {line}", f"no {step_name!r}; record skipped"),
           f"records without {step_name!r} skipped")
    has_step, whole_steps_by_line = whole_steps(steps_by_line, has_points & ~np.isnan(steps_by_line),
                                                range(len(steps_by_line)), step_name, path, problems)
    every_line = np.count_nonzero(has_step) == np.count_nonzero(has_points)  # that has points has a step
    del has_points
    record_lines = np.flatnonzero(has_step)
    del has_step
    record_steps = steps_by_line[record_lines]
    restart = np.zeros(len(record_lines), bool)
    restart[1:] = record_steps[1:] < record_steps[:-1]
    same = np.flatnonzero(record_steps[1:] == record_steps[:-1]) + 1
    if len(same):
        previous_line = np.zeros(len(steps_by_line), np.int64)  # 0: no line (line numbers start at 1)
        previous_line[record_lines[same]] = record_lines[same - 1]
        is_previous = np.zeros(len(steps_by_line), bool)
        is_previous[record_lines[same - 1]] = True
        # the points on those lines, few, looked at alone
        rows = np.flatnonzero(((previous_line > 0) | is_previous)[point_lines])
        lines, tags = point_lines[rows], point_tags[rows]
        on_same, on_previous = previous_line[lines] > 0, is_previous[lines]
        logged = lines[on_previous].astype(np.int64) * tag_count + tags[on_previous]
        repeated = np.isin(previous_line[lines[on_same]] * tag_count + tags[on_same], logged)
        restart[same] = np.isin(record_lines[same], lines[on_same][repeated])
    if every_line and not restart.any():  # every point kept: no mask of them (a pass over the table)
        return None, whole_steps_by_line
    kept_line = np.zeros(len(steps_by_line), bool)
    if restart.any():
        # A record survives when no later restart goes back to its step or below.
        restart_steps = np.where(restart, record_steps, np.inf)
        lowest_later = np.append(np.minimum.accumulate(restart_steps[::-1])[::-1][1:], np.inf)
        kept_record = record_steps < lowest_later
        points_per_record = np.bincount(point_lines, minlength=len(steps_by_line))[record_lines]
        notes.extend(_restart_notes(record_lines, record_steps, restart, kept_record, points_per_record, step_name))
        kept_line[record_lines[kept_record]] = True
    else:
        kept_line[record_lines] = True
    del record_lines, record_steps
    return kept_line[point_lines], whole_steps_by_line


def _cut(points: np.ndarray, bounds: np.ndarray, keys: np.ndarray, shared: bool = False,
         lookup: np.ndarray | None = None) -> list[np.ndarray]:
    """points[bounds[k]:bounds[k + 1]] for each key k (lookup[...] of them, given `lookup`): keys with
    few points (a line of 100,000 keys) as rows of one 2-D array per count, listed by numpy's own
    iteration and put back in key order in one pass (a million one-point keys: 0.13 s; a slice each
    0.25 s), or, where but a few keys have another count (the loss and LR beside a wide line's
    keys), with those few inserted where they belong.

    `shared`: where most of those rows repeat the row before (the steps of one line's many keys),
    each run of equal rows is one read-only array that its keys share (a million keys: 0.02 s); and
    a key of _SHARED points or more on the very points of the key before it (losses and LR logged
    on the same lines) shares that key's array, looked up once (a million-line log: 8 MB a key)."""
    counts, firsts = (bounds[1:] - bounds[:-1])[keys], bounds[keys]
    few = counts <= 16
    groups, pieces = [], []
    for count in np.flatnonzero(np.bincount(counts[few])).tolist():  # counts up to 16: no sort
        places = np.flatnonzero(few & (counts == count))
        groups.append(places)
        rows = points[firsts[places][:, None] + np.arange(count)]
        rows = rows if lookup is None else lookup[rows]
        repeats = (rows[1:] == rows[:-1]).all(axis=1)
        if shared and 2 * np.count_nonzero(repeats) >= len(rows):
            starts = np.flatnonzero(np.r_[True, ~repeats])
            rows = rows[starts]
            rows.flags.writeable = False  # and so each row: a change to one series' steps would change its peers'
            runs = np.diff(starts, append=len(places)).tolist()
            pieces.extend(itertools.chain.from_iterable(map(itertools.repeat, rows, runs)))
        else:
            pieces.extend(rows)
    many = np.flatnonzero(~few)
    groups.append(many)
    before = piece = np.zeros(0, points.dtype)
    for first, count in zip(firsts[many].tolist(), counts[many].tolist()):
        these = points[first:first + count]
        if shared and count >= _SHARED and np.array_equal(these, before):
            piece.flags.writeable = False
        else:
            before, piece = these, these if lookup is None else lookup[these]
        pieces.append(piece)
    order = np.concatenate(groups)
    if np.array_equal(order, np.arange(len(order))):  # one count for every key: in key order already
        return pieces
    if len(groups) == 2 and 0 < len(many) <= 16:  # one count but for a few keys of many points (beside a wide line)
        pieces, others = pieces[:-len(many)], pieces[-len(many):]
        for place, piece in zip(many.tolist(), others):  # in key order, each where it belongs
            pieces.insert(place, piece)
        return pieces
    at = np.empty_like(order)
    at[order] = np.arange(len(order))
    return list(map(pieces.__getitem__, at.tolist()))


def _restart_notes(record_lines, record_steps, restart, kept_record, points_per_record, step_name) -> list[str]:
    """One note per restart saying what it replaced; one summary when there are very many."""
    restarts = np.flatnonzero(restart)
    if len(restarts) > MAX_PROBLEMS:
        return [f"{len(restarts)} restarts or repeated {step_name}s; "
                f"{points_per_record[~kept_record].sum()} earlier points replaced"]
    notes, alive = [], np.ones(len(record_lines), bool)
    for index in restarts:
        step, before = int(record_steps[index]), int(record_steps[index - 1])
        replaced = alive[:index] & (record_steps[:index] >= step)
        alive[:index] &= ~replaced
        how = f"restart at line {record_lines[index]}: {step_name} {step} after {before}" if step < before else \
            f"repeat at line {record_lines[index]}: {step_name} {step} logged again"
        notes.append(f"{how}; {points_per_record[:index][replaced].sum()} earlier points replaced")
    return notes


# ---- whole-document formats -------------------------------------------------------------------

def _decoded(data: bytes, path: pathlib.Path, problems: list[Problem]) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        problems.append(Problem(str(path), f"line {line}", f"not UTF-8 text: {error.reason} at byte {error.start}"))
        return data.decode("utf-8-sig", "replace")


def _read_trainer_state(data: bytes, path: pathlib.Path, problems: list[Problem]) -> dict[str, Series]:
    streamed = _streamed_log_history(data)
    if streamed is not None:
        del data  # tabled: the bytes go before the table is joined (a 1 GB file: 2.0x -> 1.4x its size)
        state, entries, places, not_objects = streamed
        columns = entries.columns()
        del entries
    else:  # damaged (or not shaped as usual): read whole, which names what is wrong
        text = _decoded(data, path, problems)
        try:
            state = _loads(text)
            entries = state.get("log_history") if isinstance(state, dict) else None
        except json.JSONDecodeError as error:
            state, entries = {}, _salvage_log_history(text, error, path, problems)
        del text
        if not isinstance(entries, list):
            problems.append(Problem(str(path), "", "no log_history list"))
            return {}
        is_object = np.array([isinstance(entry, dict) for entry in entries], dtype=bool)
        places, not_objects = np.flatnonzero(is_object), np.flatnonzero(~is_object)
        table = _Entries()
        for index in places.tolist():
            table.add(entries[index])
        columns = table.columns()
    report(problems, path, not_objects,
           lambda index: (f"log_history[{index}]", "entry is not a JSON object; skipped"), "entries that are not objects")
    if not len(places) or not columns:
        problems.append(Problem(str(path), "", "log_history is empty"))
        return {}
    # The closing summary row (train_runtime, total_flos, ...) has a `train_loss` that is the mean
    # over the whole run, not a point of the curve; as its own one-point series it would also pass
    # for the training loss in role inference. Leave the row out.
    if "train_runtime" in columns:
        summary = ~_missing(columns["train_runtime"])
        columns = {tag: cells[~summary] for tag, cells in columns.items()}
        places = places[~summary]
    steps = _trainer_steps(columns, len(places), state)
    report(problems, path, np.flatnonzero(np.isnan(steps)),
           lambda index: (f"log_history[{places[index]}]", "no step and no epoch; entry skipped"),
           "entries without step or epoch skipped")
    has_step, _ = whole_steps(steps, ~np.isnan(steps), places, "step", path, problems, where="log_history[{}]")
    steps = np.where(has_step, steps, np.nan)
    series = {}
    for tag, column in columns.items():
        if is_bookkeeping(tag):
            continue
        cells = cells_to_numbers(column, places, tag, path, problems, where="log_history[{}]")
        if cells is None:
            continue
        points = cells[0] & ~np.isnan(steps)
        if points.any():
            series[tag] = Series(tag, np.rint(steps[points]).astype(np.int64), cells[1][points])
    return series


def _streamed_log_history(data: bytes):
    """(state without log_history, the entries that are objects as _Entries, the log_history index
    of each, indices of entries that are not objects) of a well-formed trainer_state.json, decoded
    a window at a time and tabled a batch of entries at a time, so that memory holds the bytes and
    the table but never a Python object per value of the whole file (a 66 MiB file took 6.4x its
    size read whole). None when anything is off (bad UTF-8 or JSON, no log_history list, nesting
    past the parser's limit): the caller then reads the document whole and names the damage."""
    key = data.find(b'"log_history"')
    bracket = data.find(b"[", key)
    if key < 0 or bracket < 0 or data[key + len(b'"log_history"'):bracket].strip() != b":":
        return None
    decoder = json.JSONDecoder(parse_constant=str)
    entries, places, not_objects = _Entries(), [], []
    index, text, at, byte = 0, "", 0, bracket + 1  # `text`: the bytes before `byte` not yet parsed
    whole = True  # the complete entries in view are tried as one JSON list, once a window

    def window() -> None:
        nonlocal text, at, byte, whole
        whole = True
        cut = min(byte + _WINDOW, len(data))
        while cut < len(data) and 0x80 <= data[cut] < 0xC0:  # never inside a UTF-8 sequence
            cut -= 1
        if cut <= byte:
            raise ValueError("not UTF-8")
        text, at, byte = text[at:] + data[byte:cut].decode("utf-8"), 0, cut
    try:
        while True:
            at = _SEPARATORS.match(text, at).end()
            if len(text) - at < _LOOKAHEAD and byte < len(data):  # keep a whole entry in view
                window()
                continue
            if at >= len(text):
                return None  # the list never closes
            if text[at] == "]":
                break
            if whole:
                # Up to the last `}` in view, the entries decoded in one call, by orjson (_record):
                # faster than json.load (a `}` that closes no entry, or the document's own, fails the
                # call: the entries are then decoded one by one until the next window).
                whole, end = False, text.rfind("}", at)
                try:
                    decoded = _record("[" + text[at:end + 1] + "]", fast=True) if end > at else None
                    next_at = end + 1
                except (ValueError, RecursionError):
                    decoded = None

            else:
                decoded = None
            if decoded is None:
                try:
                    entry, next_at = decoder.raw_decode(text, at)
                    if next_at == len(text) and byte < len(data):  # a number cut where the text in view ends
                        raise json.JSONDecodeError("cut", text, next_at)
                except json.JSONDecodeError:
                    if byte >= len(data):
                        raise
                    window()  # an entry longer than the look-ahead: decode it with more in view
                    continue
                decoded = [entry]

            at = next_at
            for entry in decoded:
                if isinstance(entry, dict):
                    entries.add(entry)
                    places.append(index)
                else:
                    not_objects.append(index)
                index += 1

        # The state's other keys (global_step, epoch): the document with an empty log_history.
        after = byte - len(text[at + 1:].encode("utf-8"))
        state = _loads(data[:bracket + 1].decode("utf-8-sig") + "]" + data[after:].decode("utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if not isinstance(state, dict):
        return None
    return state, entries, np.array(places, dtype=np.int64), np.array(not_objects, dtype=np.int64)


class _Entries:
    """log_history entries as columns, without pandas and never a Python object per value of the
    whole file: entries are kept a batch at a time, grouped by their keys (a trainer logs a few
    kinds of entry, each with the same keys every time), and each group's numbers become one
    float64 block. Columns come in the order the entries first show their keys, as
    pandas.DataFrame.from_records orders them."""

    def __init__(self) -> None:
        self.count = 0
        self.batch: dict[tuple, tuple[list[int], list[list]]] = {}  # keys -> (rows, values of each row)
        self.pieces: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}  # column -> (rows, cells) pieces

    def add(self, entry: dict) -> None:
        keys = tuple(entry)
        group = self.batch.get(keys)
        if group is None:
            group = self.batch[keys] = ([], [])
        group[0].append(self.count)
        group[1].append(list(entry.values()))

        self.count += 1
        if self.count % _BATCH == 0:
            self._table()

    def _table(self) -> None:
        for keys, (rows, values) in self.batch.items():
            for key in keys:
                self.pieces.setdefault(key, [])
            rows = np.array(rows, dtype=np.int64)
            block = None
            if set(map(type, itertools.chain.from_iterable(values))) <= {int, float}:
                try:
                    block = np.array(values, dtype=np.float64)
                except OverflowError:  # an int past a float's range: the cells' own conversion says what it is
                    pass
            for column, key in enumerate(keys):
                if block is not None:
                    cells = block[:, column]
                else:  # text, booleans, nulls, nested values (as their markers)
                    cells = np.empty(len(values), dtype=object)
                    cells[:] = [_value_text(row[column]) if isinstance(row[column], (dict, list)) else row[column]
                                for row in values]
                self.pieces[key].append((rows, cells))
        self.batch = {}

    def columns(self) -> dict[str, np.ndarray]:
        """Each key's cells by row: float64 (NaN where an entry lacks the key) when every cell is a
        number, else object (None where it lacks it)."""
        self._table()
        columns = {}
        for key, pieces in self.pieces.items():
            numeric = all(cells.dtype.kind == "f" for _, cells in pieces)
            column = np.full(self.count, np.nan) if numeric else np.full(self.count, None, dtype=object)
            for rows, cells in pieces:
                column[rows] = cells
            columns[key] = column
        self.pieces = {}
        return columns


def _missing(cells: np.ndarray) -> np.ndarray:
    """pandas.isna of a column from _Entries."""
    return np.isnan(cells) if cells.dtype.kind == "f" else np.array([is_missing(cell) for cell in cells.tolist()], bool)


def _trainer_steps(columns: dict[str, np.ndarray], count: int, state: dict) -> np.ndarray:
    """The step of each log_history row.

    A row without `step` (Seq2SeqTrainer's predict_* rows) was logged right after the row before
    it, so it takes that row's step. Rows before any step get epoch x steps per epoch, the ratio
    measured on the rows that have both (or the state's global_step / epoch)."""
    nothing = np.full(count, np.nan)
    steps, epochs = (to_floats(columns[key]) if key in columns else nothing for key in ("step", "epoch"))
    last_known = np.maximum.accumulate(np.where(np.isnan(steps), -1, np.arange(count)))  # ffill
    filled = np.where(last_known >= 0, steps[np.maximum(last_known, 0)], np.nan)
    with np.errstate(all="ignore"):  # a step of 1e308 over an epoch of 0.1 is inf, as pandas gives it
        return _filled_from_epochs(filled, steps, epochs, state)


def _filled_from_epochs(filled: np.ndarray, steps: np.ndarray, epochs: np.ndarray, state: dict) -> np.ndarray:
    if np.isnan(filled).any():
        measured = (epochs > 0) & ~np.isnan(steps)

        if measured.any():
            ratios = steps[measured] / epochs[measured]
            per_epoch = np.median(ratios[~np.isnan(ratios)]) if not np.isnan(ratios).all() else np.nan
        else:
            global_step, epoch = state.get("global_step"), state.get("epoch")
            known = isinstance(global_step, (int, float)) and isinstance(epoch, (int, float)) and epoch
            per_epoch = global_step / epoch if known else np.nan
        filled = np.where(np.isnan(filled), np.round(epochs * per_epoch), filled)
    return filled



def _salvage_log_history(text: str, error: json.JSONDecodeError, path: pathlib.Path, problems: list[Problem]) -> list:
    """The log_history entries of a damaged trainer_state.json, each bad one a problem."""
    start = text.find('"log_history"')
    if start < 0 or text.find("[", start) < 0:
        problems.append(Problem(str(path), f"line {error.lineno}", f"not valid JSON ({error.msg})"))
        return []
    decoder, entries, found_bad = json.JSONDecoder(parse_constant=str), [], False
    position = text.find("[", start) + 1
    while True:
        position = _SEPARATORS.match(text, position).end()
        if position >= len(text) or text[position] == "]":
            break
        try:
            try:
                entry, position = decoder.raw_decode(text, position)
            except RecursionError:
                raise _too_deep(text, position) from None
            entries.append(entry)
        except json.JSONDecodeError as bad:
            found_bad = True
            where = f"line {text.count(chr(10), 0, bad.pos) + 1}"
            problems.append(Problem(str(path), where,
                                    f"log_history entry is not valid JSON ({bad.msg}); entry skipped"))
            # entries are flat objects: the next `{` starts the next entry
            position = text.find("{", max(bad.pos, position + 1))
            if position < 0:
                break
    if not found_bad:
        problems.append(Problem(str(path), f"line {error.lineno}", f"not valid JSON ({error.msg})"))
    return entries


def _read_keras_history(data: bytes, path: pathlib.Path, problems: list[Problem]) -> dict[str, Series]:
    """Keras `History.history`: steps are the list index, i.e. the 0-based epoch that Keras'
    own CSVLogger writes too."""
    text = _decoded(data, path, problems)
    try:
        history = _loads(text)
    except json.JSONDecodeError as error:
        problems.append(Problem(str(path), f"line {error.lineno}", f"not valid JSON ({error.msg})"))
        return {}
    series = {}
    for tag, values in history.items() if isinstance(history, dict) else ():
        if not isinstance(values, list) or is_bookkeeping(tag):
            continue
        where = tag.replace("{", "{{").replace("}", "}}") + "[{}]"
        epochs = np.arange(len(values))
        cells = cells_to_numbers(_flattened(values), epochs, tag, path, problems, where=where)

        if cells is not None and cells[0].any():
            series[tag] = Series(tag, epochs[cells[0]], cells[1][cells[0]])
    return series
