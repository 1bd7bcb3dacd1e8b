"""JSON lines that share one layout, parsed as a block: numpy checks the layout, Arrow reads the numbers.

A logger writes the same keys in the same order on line after line (detectron2's metrics.json,
mmdetection's training records): only the numbers change. A *template* is one such line cut
into its separators (every byte that is not a number: braces, quoted keys, `": `, `, `, and
values that are text, true, false or null) and the number slots between them. A line belongs
to the template when its commas fall where the template's do and every separator byte equals
the template's, compared eight bytes at a time; its numbers are then checked against the JSON
grammar (Arrow and pandas read `01`, `+1`, `.5`, `1.`, `1.e5`, which json.loads refuses) and parsed
all at once: laid end to end, by Arrow's cast of bytes to float64 (fast_float, correctly rounded
as json.loads is; 0.05 s for 3M full-precision floats, pandas' C parser 0.35 s), or, where pyarrow
is missing or a number is not clean, as one CSV by pandas' C parser, which then says which lines
are not.

Anything else (another layout, a nested value, an escape, a number json.loads would give
differently: -0, a value past 2**53 or not finite, any damage) is left for the caller's exact
path, line by line: a line read here gives the very cells json.loads gives (float bits equal).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from dataclasses import dataclass

import numpy as np

# A line is tried as a template at most _ATTEMPTS times a chunk, and no more after _MISSES layouts
# in a row that fewer than _FEWEST lines or a _SHARE of the lines left share: lines of many
# layouts (keys that vary from line to line) go the exact way at the cost of two vector passes.
_ATTEMPTS, _MISSES, _FEWEST, _SHARE = 8, 2, 16, 0.1
# A layout is first tried on this many of its lines (where it has four times as many), and checked
# on them all unless the sample says it holds under a quarter of the lines it needs (_few_share)
_SAMPLE = 64
_KEY = re.compile(rb'\s*("[^"\\]*")\s*:\s*')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_CONSTANT = re.compile(rb'"[^"\\]*"|true|false|null')
_AFTER_VALUE = re.compile(rb"\s*([,}])")
_NEWLINE, _COMMA = 10, 44
# A block's numbers as CSV: the bytes of JSON numbers, commas and newlines as they are, E as e;
# any other byte is deleted.
_CSV = "0123456789.-+eE,\n"
_CSV_BYTES = bytes.maketrans(b"E", b"e")
_NOT_CSV = bytes(code for code in range(256) if chr(code) not in _CSV)
_NOT_NUMBER = bytes(code for code in range(256) if chr(code) not in "0123456789.-+eE")

_EXACT_INTEGERS = 2.0 ** 53  # below this a float64 holds every integer, as json's int would give it
_NEGATIVE_ZERO = np.float64(-0.0).view(np.int64)


@dataclass
class Template:
    """One line's layout: separators[i] comes before number slot i (the last one closes the line)."""

    separators: list[bytes]
    keys: list[str]  # the key of each number slot
    constants: dict[str, object]  # keys whose value is part of the layout: text, bool or None
    places: dict[str, int]  # every key's place among the line's keys


@dataclass
class Block:
    """Lines of one template: 0-based line indices in the chunk and their numbers, a column per slot."""

    lines: np.ndarray
    template: Template
    values: np.ndarray  # float64, (lines, slots)


def template(line: bytes) -> Template | None:
    """The layout of a flat JSON object line with at least one number, or None."""
    try:
        record = json.loads(line, parse_constant=lambda word: None)  # NaN / Infinity: never a layout
    except ValueError:
        return None
    if not isinstance(record, dict) or not line.startswith(b"{"):
        return None
    separators, keys, constants, cut, at, seen = [], [], {}, 0, 1, 0
    while True:
        key = _KEY.match(line, at)
        if key is None:
            return None
        seen += 1
        number = _NUMBER.match(line, key.end())
        if number is not None and _AFTER_VALUE.match(line, number.end()):
            separators.append(line[cut:number.start()])
            keys.append(json.loads(key.group(1)))
            cut, at = number.end(), number.end()
        else:
            constant = _CONSTANT.match(line, key.end())
            if constant is None:
                return None
            name = json.loads(key.group(1))
            constants[name] = json.loads(constant.group())
            at = constant.end()
        end = _AFTER_VALUE.match(line, at)
        if end is None:
            return None
        at = end.end()
        if end.group(1) == b"}":
            break
    separators.append(line[cut:])
    # a repeated key (json keeps its last value), a number json.loads reads otherwise, or text after `}`
    if at != len(line) or seen != len(record) or not keys or any(
            type(record[key]) not in (int, float) for key in keys):
        return None
    return Template(separators, keys, constants, {key: place for place, key in enumerate(record)})


def parse_blocks(data: bytes, starts: np.ndarray, ends: np.ndarray,
                 candidates: np.ndarray) -> tuple[list[Block], np.ndarray]:
    """Blocks of the candidate lines (0-based indices of lines with `{` first and `}` last) that
    share a layout; and the candidates left for the exact path. A layout is a flat line's, and a
    line that matches it is as flat: its separators are the layout's, its numbers hold no brace,
    bracket, quote or backslash."""
    buffer = np.frombuffer(data, np.uint8)
    if len(candidates) < _FEWEST or len(data) < 16:
        return [], candidates
    commas = np.flatnonzero(buffer == _COMMA)
    commas_before = np.searchsorted(commas, ends)  # a line's end; and, a line on, its start (a newline between)
    commas_per_line = np.diff(commas_before, prepend=0)
    first_commas = commas_before - commas_per_line
    found, left, tried, misses = [], candidates, set(), 0
    for _ in range(_ATTEMPTS):
        # lines tried and left over are the first of `left` (each was its first untried line)
        first = next((line for line in left[:len(tried) + 1].tolist() if line not in tried), None)
        if first is None or len(left) < _FEWEST or misses == _MISSES:
            break
        tried.add(first)
        layout = template(data[starts[first]:ends[first]])
        if layout is None:
            continue
        comma_count = sum(separator.count(b",") for separator in layout.separators)
        same = left[commas_per_line[left] == comma_count]
        enough, matched = max(_FEWEST, _SHARE * len(left)), None
        if len(same) >= enough and not _few_share(data, starts, ends, same, commas, first_commas, layout, enough):
            matched, places = _match(data, starts, ends, same, commas, first_commas[same], layout)
        if matched is None or np.count_nonzero(matched) < enough:
            misses += 1  # a layout few lines share: lines of many layouts, which the exact path reads
            continue
        misses = 0
        found.append((layout, same, places) if matched.all() else (layout, same[matched], places[:, matched]))
        taken = np.zeros(len(starts), bool)
        taken[same[matched]] = True
        left = left[~taken[left]]
    blocks = _read_blocks(buffer, starts, ends, found) if found else []
    taken = np.zeros(len(starts), bool)
    for block in blocks:
        taken[block.lines] = True
    return blocks, candidates[~taken[candidates]]


def _few_share(data: bytes, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray, commas: np.ndarray,
               first_commas: np.ndarray, layout: Template, enough: float) -> bool:
    """Whether a sample of `lines` (_SAMPLE of them spread over the chunk, where there are four
    times as many) says that fewer than a quarter of `enough` share `layout`: a layout of one line
    in a thousand (a new key each line) then costs no check of every line of its comma count."""
    if len(lines) < 4 * _SAMPLE:
        return False
    sample = lines[::len(lines) // _SAMPLE][:_SAMPLE]
    hits = np.count_nonzero(_match(data, starts, ends, sample, commas, first_commas[sample], layout)[0])
    return 4 * hits * len(lines) < enough * len(sample)


def _words(data, size: int = 8) -> np.ndarray:
    """The buffer as overlapping little-endian words: word i is bytes i .. i + size - 1."""
    return np.ndarray((len(data) - size + 1,), f"<u{size}", data, 0, (1,))


def _match(data: bytes, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray, commas: np.ndarray,
           first_comma: np.ndarray, layout: Template) -> tuple[np.ndarray, np.ndarray]:
    """(lines whose separators are the layout's, byte by byte; where each separator starts, (slots + 1, lines)).
    `first_comma`: each line's first comma's index in `commas`."""
    separators = layout.separators
    slots = len(separators) - 1
    places = np.empty((slots + 1, len(lines)), np.int64)
    places[0] = starts[lines]
    places[slots] = ends[lines] - len(separators[slots])
    if slots > 1:
        # a separator between two numbers starts with the comma after the number: the line's next one
        ranks = np.cumsum([separator.count(b",") for separator in separators[:slots - 1]])
        structural = np.array([_structural_comma(separator) for separator in separators[1:slots]])
        places[1:slots] = commas[np.minimum(first_comma + ranks[:, None], len(commas) - 1)] - structural[:, None]
    lengths = np.array([len(separator) for separator in separators])
    matched = np.logical_and.reduce(places[1:] - places[:-1] - lengths[:-1, None] >= 1)  # a number in each slot
    probes = _probes(tuple(separators))
    at = places[probes.columns]
    at += probes.offsets[:, None]
    if ((places.min(axis=1)[probes.columns] + probes.offsets).min() < 0
            or (places.max(axis=1)[probes.columns] + probes.offsets).max() > len(data) - 8):
        at = np.clip(at, 0, len(data) - 8)  # a short line or separator at the chunk's edge
    words = _words(data)[at]
    # each number's first three bytes and its last, which the words hold beside the separators
    heads = words[probes.heads] >> (8 * probes.head_bytes)[:, None]
    tails = (words[probes.tails] >> (8 * probes.tail_bytes)[:, None]).astype(np.uint8)
    matched &= np.logical_and.reduce(_grammatical(heads, tails))
    partial = probes.masks != np.uint64(2 ** 64 - 1)
    words[partial] &= probes.masks[partial, None]
    matched &= np.logical_and.reduce(words == probes.expected[:, None])
    return matched, places


@dataclass
class _Probes:
    """Eight-byte words that cover every separator (the separator, the word's offset in it, a mask
    of the separator's bytes in it and their expected values) and where they hold each number's
    first bytes (heads) and last byte (tails): the probe and the byte in it, a number slot each."""

    columns: np.ndarray
    offsets: np.ndarray
    masks: np.ndarray
    expected: np.ndarray
    heads: np.ndarray
    head_bytes: np.ndarray
    tails: np.ndarray
    tail_bytes: np.ndarray


@functools.lru_cache(maxsize=64)
def _probes(separators: tuple[bytes, ...]) -> _Probes:
    """The words read for a layout's separators: each one's bytes, and around it the last byte of
    the number before and the first three of the number after (a minus, a zero, a digit: enough to
    tell `-01` from `-0.1`).

    A separator is read from the start of that span a word at a time, the last word ending where
    the span does; a span shorter than a word is read from its start, or, the line's last
    separator, from eight bytes before its end (a short line's other bytes masked off). A read
    that would leave the chunk is moved back into it (_match) and so fails the comparison: that
    line goes the exact way."""
    columns, offsets, masks, expected, heads, tails = [], [], [], [], [], []
    last = len(separators) - 1
    for column, separator in enumerate(separators):
        size = len(separator)
        low, high = (-1 if column else 0), size + (3 if column < last else 0)
        if high - low >= 8:
            spots = sorted({*range(low, high - 7, 8), high - 8})
        else:
            spots = [high - 8 if column == last else low]
        for spot in spots:
            inside = [0 <= spot + byte < size for byte in range(8)]
            columns.append(column)
            offsets.append(spot)
            masks.append(sum(0xFF << 8 * byte for byte in range(8) if inside[byte]))
            expected.append(sum(separator[spot + byte] << 8 * byte for byte in range(8) if inside[byte]))
        if column:  # the number before: its last byte
            spot = min(spot for spot in spots if spot <= -1)
            tails.append((len(columns) - len(spots) + spots.index(spot), -1 - spot))
        if column < last:  # the number after: its first three bytes
            spot = max(spot for spot in spots if spot <= size and size + 2 <= spot + 7)
            heads.append((len(columns) - len(spots) + spots.index(spot), size - spot))
    return _Probes(np.array(columns), np.array(offsets), np.array(masks, np.uint64), np.array(expected, np.uint64),
                   np.array([probe for probe, _ in heads]), np.array([byte for _, byte in heads], np.uint64),
                   np.array([probe for probe, _ in tails]), np.array([byte for _, byte in tails], np.uint64))


def _grammatical(heads: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """Per number (slots, lines): it starts and ends as a JSON number must (`-` or a digit first,
    a digit last, no leading zero, a digit after a leading `-`), from its first three bytes
    (`heads`, the first lowest) and its last (`tails`). The byte after a number is its separator's
    first (`,`, `}` or a blank), never a digit: a one-digit number needs no width check.

    Arrow and pandas refuse the rest of what JSON refuses (`1e`, `1.2.3`, `--1`, `1-2`) save `1.e5`
    and a `+` outside an exponent, which _only_numbers looks for."""
    minus = (heads & 0xFF) == ord("-")
    heads = np.where(minus, heads >> 8, heads)  # past a leading minus
    first, second = (heads & 0xFF).astype(np.uint8), ((heads >> 8) & 0xFF).astype(np.uint8)
    return _is_digit(first) & _is_digit(tails) & ~((first == ord("0")) & _is_digit(second))


def _read_blocks(buffer: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                 found: list[tuple[Template, np.ndarray, np.ndarray]]) -> list[Block]:
    """The numbers of the lines that matched each layout (layout, lines, where its separators
    start), each a valid JSON number that parses as json.loads would, all read in one call:
    by Arrow where pyarrow is installed and every number is clean, else by pandas' C parser."""
    # The chunk's copy with the few separator bytes that a number could hold (a key's digits and
    # e's, commas) made NUL, but for each separator's structural comma, and the lines of no layout
    # blanked: deleting every byte no number holds then leaves the numbers alone, end to end (the
    # CSV path keeps the commas between them and the newlines).
    text = bytearray(buffer)
    view = np.frombuffer(text, np.uint8)
    layouts, owners, all_lines, widths = [], [], [], []
    for layout, lines, places in found:
        separators = layout.separators
        lengths = np.array([len(separator) for separator in separators])
        for row, offset in _kept_separator_bytes(separators):
            view[places[row] + offset] = 0
        widths.append(places[1:] - places[:-1] - lengths[:-1, None])  # each number's, (slots, lines)
        owners.append(np.full(len(lines), len(layouts)))
        layouts.append(layout)
        all_lines.append(lines)
    owner, lines = np.concatenate(owners), np.concatenate(all_lines)
    if len(layouts) > 1:  # a row each, in line order
        order = np.argsort(lines, kind="stable")
        owner, lines = owner[order], lines[order]
    _blank_other_lines(view, starts, ends, lines)
    numbers = _arrow_numbers(text, owner, [len(layout.keys) for layout in layouts], widths)
    if numbers is None:
        # a row's numbers and the commas between them
        row_widths = np.concatenate([width.sum(axis=0) + len(width) - 1 for width in widths])
        owner, lines, block = _csv(text, view, starts, ends, owner, lines,
                                   row_widths[order] if len(layouts) > 1 else row_widths)
        del view, text  # the chunk's copy, freed before pandas' parse, the chunk's peak
        owner, lines, numbers = _csv_numbers(block, layouts, owner, lines)
    return _blocks(layouts, owner, lines, numbers) if len(lines) else []


def _csv(text: bytearray, view: np.ndarray, starts: np.ndarray, ends: np.ndarray, owner: np.ndarray,
         lines: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray, bytes]:
    """(owner, lines, CSV) of the rows (`widths`: each one's numbers and commas, in bytes) whose
    bytes are all numbers', a CSV row each: a row whose CSV holds fewer bytes than its numbers and
    commas had a byte no JSON number holds, and goes the exact way."""
    block = text.translate(_CSV_BYTES, _NOT_CSV)
    newlines = len(ends) - (ends[-1] == len(text)) if len(ends) else 0
    if len(block) != widths.sum() + newlines:  # a byte no number holds, deleted: which lines?
        rows = np.frombuffer(block, np.uint8)
        row_ends = np.append(np.flatnonzero(rows == _NEWLINE), len(rows))[:len(starts)]
        row_widths = np.diff(row_ends, prepend=-1) - 1
        good = row_widths[lines] == widths
        _blank_other_lines(view, starts, ends, lines[good], lines[~good])
        owner, lines = owner[good], lines[good]
        block = text.translate(_CSV_BYTES, _NOT_CSV)
    if not _only_numbers(block):
        good = _lines_of_numbers(block)
        _blank_other_lines(view, starts, ends, lines[good], lines[~good])
        owner, lines = owner[good], lines[good]
        block = text.translate(_CSV_BYTES, _NOT_CSV)
    return owner, lines, block


def _csv_numbers(block: bytes, layouts: list[Template], owner: np.ndarray, lines: np.ndarray) -> tuple:
    """(owner, lines, each layout's numbers) of the CSV's rows, read by pandas' C parser; no row
    where it refuses a token (which json.loads refuses too: the exact path says which)."""
    import pandas as pd
    nothing = owner[:0], lines[:0], []
    width = max(len(layout.keys) for layout in layouts)
    if not len(lines):
        return nothing
    # rows of a narrower layout get NaN past their numbers (no number is empty: a layout's slots are not)
    missing = {"na_filter": False} if len({len(layout.keys) for layout in layouts}) == 1 else {
        "keep_default_na": False, "na_values": [""]}
    try:
        frame = pd.read_csv(io.BytesIO(block), header=None, names=range(width), dtype=np.float64,
                            quoting=csv.QUOTE_NONE, engine="c", low_memory=False, **missing, **_precise())
    except (ValueError, pd.errors.ParserError):
        return nothing
    values = frame.to_numpy(dtype=np.float64)
    if values.shape != (len(lines), width):
        return nothing
    return owner, lines, [values[owner == index, :len(layout.keys)] for index, layout in enumerate(layouts)]


def _blocks(layouts: list[Template], owner: np.ndarray, lines: np.ndarray, numbers: list[np.ndarray]) -> list[Block]:
    """Each layout's block (`numbers`: its rows' numbers, (rows, slots)) of the rows whose every
    number is the float json.loads gives."""
    blocks = []
    for index, (layout, values) in enumerate(zip(layouts, numbers)):
        # what json.loads gives otherwise: an int for -0 (0, not -0.0: the one float of these bits);
        # Infinity for an overflowing float (pandas agrees, but such a line is too rare to be worth
        # proving it); ints past 2**53
        with np.errstate(invalid="ignore"):
            same = (np.abs(values) < _EXACT_INTEGERS) & (values.view(np.int64) != _NEGATIVE_ZERO)
        rows = lines[owner == index]
        if same.all():
            blocks.append(Block(rows, layout, values))
        elif (same := same.all(axis=1)).any():
            blocks.append(Block(rows[same], layout, values[same]))
    return blocks


def _arrow_numbers(text: bytearray, owner: np.ndarray, slots: list[int],
                   widths: list[np.ndarray]) -> list[np.ndarray] | None:
    """Each layout's numbers, (rows, slots), parsed by Arrow (fast_float: correctly rounded, as
    json.loads; 2.3x pandas' C parser) from the numbers' bytes laid end to end; None where pyarrow
    is not installed or the bytes are not all JSON numbers (the CSV path then says which lines are not).

    `text`: the chunk, its separators' number bytes and its other lines zeroed; `owner`: the
    layout of each row, rows in line order; `slots`: each layout's number count; `widths`: its
    numbers' widths, (slots, rows)."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        return None
    digits = text.translate(_CSV_BYTES, _NOT_NUMBER)  # E as e, as in the CSV
    if len(slots) == 1:
        flat, places = widths[0].T.ravel(), None
    else:  # a row's numbers together, rows in line order
        counts = np.array(slots)[owner]
        first = np.cumsum(counts) - counts
        places = [first[owner == index][:, None] + np.arange(count) for index, count in enumerate(slots)]
        flat = np.empty(counts.sum(), np.int64)
        for place, width in zip(places, widths):
            flat[place] = width.T
    # a byte no number holds (deleted), or `1.e5` or `+1`, which fast_float reads: the CSV path finds the line
    if len(digits) != flat.sum() or not _only_numbers(digits):
        return None
    offsets = np.zeros(len(flat) + 1, np.int64)
    np.cumsum(flat, out=offsets[1:])
    column = pa.Array.from_buffers(pa.large_binary(), len(flat), [None, pa.py_buffer(offsets), pa.py_buffer(digits)])
    try:  # malloc's pool, whose freed pages the next chunk reuses (Arrow's own gives them back: a page fault each)
        values = pc.cast(column, pa.float64(), memory_pool=pa.system_memory_pool()).to_numpy()
    except pa.ArrowException:  # a token it refuses (or a pyarrow that cannot cast binary to float)
        return None
    if places is None:
        return [values.reshape(-1, slots[0])]
    return [values[place] for place in places]


def _kept_separator_bytes(separators: list[bytes]) -> list[tuple[int, int]]:
    """(separator, offset) of each separator byte that the CSV translation keeps, but for the
    structural comma between two numbers."""
    last = len(separators) - 1
    return [(row, offset) for row, separator in enumerate(separators) for offset, byte in enumerate(separator)
            if chr(byte) in _CSV and not (0 < row < last and offset == _structural_comma(separator))]


def _structural_comma(separator: bytes) -> int:
    """Where the comma between two key/value pairs lies in a separator (`, "key": `; a key may hold commas too)."""
    return separator.index(b",")


@functools.cache
def _precise() -> dict:
    """pandas before 3.1 parses floats exactly only when asked to (its default could be 1 ulp off)."""
    import pandas as pd
    major, minor = (int(part) for part in re.findall(r"\d+", pd.__version__)[:2])
    return {} if (major, minor) >= (3, 1) else {"float_precision": "round_trip"}


def _blank_other_lines(text: np.ndarray, starts: np.ndarray, ends: np.ndarray, kept: np.ndarray,
                       among: np.ndarray | None = None) -> None:
    """NUL bytes over every line (of `among`, else of the chunk) but the kept ones, so that they are
    empty lines once the NULs are deleted."""
    other = np.ones(len(starts), bool) if among is None else np.isin(np.arange(len(starts)), among)
    other[kept] = False
    other &= ends > starts
    others = np.flatnonzero(other)
    if len(others) <= 256:
        for first, last in zip(starts[others].tolist(), ends[others].tolist()):
            text[first:last] = 0
        return
    edges = np.zeros(len(text) + 1, np.int8)  # +1 where a blanked line starts, -1 where it ends
    edges[starts[others]] = 1
    edges[ends[others]] = -1
    text[np.cumsum(edges[:-1], dtype=np.int8).view(bool)] = 0


def _is_digit(codes: np.ndarray) -> np.ndarray:
    return (codes - ord("0")) < 10  # unsigned: bytes below "0" wrap round to large numbers


def _only_numbers(block: bytes | bytearray) -> bool:
    """The numbers' bytes (the CSV, or the numbers laid end to end; E as e) hold an e only after a
    digit (pandas and Arrow read `1.e5`) and a `+` only right after an e (they read `+1`)."""
    if b"e" in block:
        codes = np.frombuffer(block, np.uint8)
        exponents = np.flatnonzero(codes == ord("e"))
        if exponents[0] == 0 or not _is_digit(codes[exponents - 1]).all():
            return False
    return b"+" not in block or block.count(b"+") == block.count(b"e+")


def _lines_of_numbers(block: bytes) -> np.ndarray:
    """Per line of the CSV that is not empty: whether it passes _only_numbers (the rare case where one does not)."""
    codes = np.frombuffer(block, np.uint8)
    newlines = np.append(np.flatnonzero(codes == _NEWLINE), np.array([len(codes)] if block[-1:] != b"\n" else [], int))
    not_empty = newlines > np.append(0, newlines[:-1] + 1)
    bad = np.zeros(len(codes), bool)
    exponents = np.flatnonzero(codes == ord("e"))
    bad[exponents[(exponents == 0) | ~_is_digit(codes[np.maximum(exponents - 1, 0)])]] = True
    pluses = np.flatnonzero(codes == ord("+"))
    bad[pluses[(pluses == 0) | (codes[np.maximum(pluses - 1, 0)] != ord("e"))]] = True
    return ~np.isin(np.arange(len(newlines)), np.searchsorted(newlines, np.flatnonzero(bad)))[not_empty]

