"""The new points of a live log, read cheaply for the screen (screen.py): `(key, step, value)` in the order
they were logged, from the whole records a Tail just added.

This is not the log readers' parse (lrdiag.ingest), which the rules get: it skips what a reader would
check, repair or report, and names a metric by whatever keeps its points together (a CSV column, a JSON
key with the line's `mode`). Its only job is to hand the screen each logged number once, at a cost of
microseconds a point; a record it cannot read gives no point, and a file it cannot glance at (a CSV
rewritten from its start) makes the run be judged in full.
"""

from __future__ import annotations

import json
import math

from lrdiag.ingest import csvlog, jsonlog, tfevents
from lrdiag.ingest.textlog import NAN_WORDS, STEP_COLUMNS, is_bookkeeping

_MODES = ("mode", "phase", "split", "stage")  # a JSON line's text that says which curve its numbers are on


class Glance:
    """The new points of one file, call after call."""

    def __init__(self, tail) -> None:
        self.tail = tail
        self._lengths: dict[str, int] = {}  # a document's entries (trainer_state) or list lengths (Keras) taken

    def points(self) -> list[tuple] | None:
        """The points the tail's last advance added; None when they cannot be told apart from the old ones."""
        tail = self.tail
        if tail.replaced:
            return None
        if tail.reader is csvlog:
            return _csv(tail.data, tail.added, tail.path.name)
        if tail.reader is jsonlog:
            return self._document(tail.added) if tail._document else _json_lines(tail.added)
        if tail.reader is tfevents:
            read = tfevents.read_files([tail.path], contents={tail.path: tail.added})
            return [(tag, step, value) for tag, series in read.series.items() if not is_bookkeeping(tag)
                    for step, value in zip(series.steps.tolist(), series.values.tolist())]
        return None

    def _document(self, data: bytes) -> list[tuple] | None:
        try:
            document = json.loads(data)
        except ValueError:
            return None
        points = []
        if isinstance(document, dict) and isinstance(document.get("log_history"), list):
            entries = document["log_history"]
            taken = self._lengths.get("", 0)
            if len(entries) < taken:
                return None
            for entry in entries[taken:]:
                if isinstance(entry, dict):
                    points += _numbers(entry, "", _step(entry))
            self._lengths[""] = len(entries)
        elif isinstance(document, dict):  # a Keras history: {metric: [one value an epoch]}
            for key, values in document.items():
                if isinstance(values, list):
                    taken = self._lengths.get(key, 0)
                    points += [(key, taken + index, _number(value)) for index, value in enumerate(values[taken:])]
                    self._lengths[key] = len(values)
        return [point for point in points if point[2] is not None]


def _csv(data: bytes, added: bytes, name: str) -> list[tuple]:
    header_end = data.find(b"\n")
    header = data[:header_end].decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r")
    sep = "\t" if name.lower().endswith(".tsv") or ("\t" in header and "," not in header) else ","
    columns = [column.strip().strip('"').strip() for column in header.split(sep)]
    lowered = [column.lower() for column in columns]
    step_at = next((lowered.index(name) for name in STEP_COLUMNS if name in lowered), None)
    metrics = [None if is_bookkeeping(column) else column for column in columns]
    if len(added) == len(data):  # the first whole lines of the file: the header and the rows after it
        added = added[header_end + 1:]
    points = []
    for line in added.decode("utf-8", "replace").split("\n"):
        cells = line.rstrip("\r").split(sep)
        if len(cells) != len(columns):
            continue
        step = _number(cells[step_at]) if step_at is not None else None
        for column, cell in zip(metrics, cells):
            value = _number(cell) if column else None
            if value is not None:
                points.append((column, step, value))
    return points


def _json_lines(added: bytes) -> list[tuple]:
    points = []
    for line in added.split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            mode = next((str(record[key]) for key in _MODES if isinstance(record.get(key), str)), "")
            points += _numbers(record, "" if mode in ("", "train") else mode + "/", _step(record))
    return points


def _numbers(record: dict, prefix: str, step) -> list[tuple]:
    """The numbers of a JSON object (nested objects' too), each under its key path."""
    points = []
    for key, value in record.items():
        if isinstance(value, dict):
            points += _numbers(value, f"{prefix}{key}/", step)
        elif not is_bookkeeping(str(key)):
            number = _number(value)
            if number is not None:
                points.append((prefix + str(key), step, number))
    return [point for point in points if point[2] is not None]


def _step(record: dict):
    return next((_number(record[key]) for key in STEP_COLUMNS if key in record), None)


def _number(cell) -> float | None:
    """A cell or JSON value as a number: text such as ' 0.5', 'nan', '"1e3"'; None when it is not one."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, (int, float)):
        return float(cell)
    if isinstance(cell, str):
        text = cell.strip().strip('"').strip()
        if text.lower() in NAN_WORDS:
            return math.nan
        try:
            return float(text)
        except ValueError:
            return None
    return None
