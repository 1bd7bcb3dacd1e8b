"""Read Weights & Biases runs kept on disk: `wandb/run-*/` and `wandb/offline-run-*/` folders, each
read from its binary `run-<id>.wandb` file.

The file is read here without the `wandb` package: the core install stays small,
and wandb no longer ships a Python reader for its own files (0.2x's `wandb-core` reads and
writes them in Go). The framing is LevelDB's log format: after a 7-byte header (`:W&B`, magic
0xBEE1, version), 32 KiB blocks of records, each a 7-byte header (CRC32 as zlib computes it,
seeded with the record type's byte; length; type FULL/FIRST/MIDDLE/LAST) and its data, a
protobuf `wandb.internal.Record`. Only the few fields needed are declared (`_record_class`) and
parsed by protobuf's C backend, a core dependency already: history items (`key`, or `nested_key`
joined with `/`; `value_json`, or the typed `number` / `integer`), the history step, and the run
record's project, name and config; the values of a key become numbers at numpy speed. A checksum
mismatch skips to the next block with a problem; a record the file ends inside (a run still
being written, or killed) ends the read there, with a problem, after every whole record.

Steps: a record's `_step` item, as wandb's UI and API show it; else its step field; else one
past the previous record's, as wandb's own counter numbers records logged without a step. Keys
starting with `_` (`_step`, `_runtime`, `_timestamp`, `_wandb`) are wandb's bookkeeping, not
metrics; `_timestamp` gives the wall times. NaN and +-Inf (`NaN`, `Infinity` in the JSON) are
kept as points. Values that are not numbers (media, tables, text) are skipped; a logged dict is
flattened into `key/subkey` series.
"""

from __future__ import annotations

import functools
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from lrdiag.ingest import files
from lrdiag.series.model import Problem, ReadResult, Series

NAME = "wandb"
_IDENT = b":W&B"
_FILE_HEADER = 7
_BLOCK = 32 * 1024
_RECORD_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_TYPE_CRC = [zlib.crc32(bytes([kind])) for kind in range(5)]
_RUN_PREFIXES = ("run-", "offline-run-")


def claim(path: Path) -> list[tuple[str, str, str]] | None:
    """The runs (name, .wandb file, "") of a wandb/ folder, of one run folder, or of one .wandb file.

    wandb keeps its runs in a folder named `wandb`, claimed whole (its `latest-run` link and debug
    logs are no runs); run folders kept anywhere else are claimed one by one."""
    if path.suffix == ".wandb":
        return [(_run_name(path), str(path), "")] if path.is_file() and _has_ident(path) else None
    own = _wandb_file(path) if path.name.startswith(_RUN_PREFIXES) else None
    if own is not None:
        return [(_run_name(own), str(own), "")]
    if path.name != "wandb":
        return None
    runs, seen = [], set()
    for child in _run_folders(path):
        found = _wandb_file(child)
        if found is not None and found.resolve() not in seen:  # `latest-run` links to one of them
            seen.add(found.resolve())
            runs.append((_run_name(found), str(found)))
    if not runs:
        return None
    names = [name for name, _ in runs]
    return [(name + (f" ({Path(file).stem.removeprefix('run-')})" if names.count(name) > 1 else ""), file, "")
            for name, file in runs]


def read(where: str, run: str = "") -> ReadResult:
    """Every numeric history key of one .wandb file."""
    path = Path(where)
    result = ReadResult("wandb")
    try:
        data = files.read_bytes(path)
    except OSError as error:
        result.problems.append(Problem(where, "", f"cannot read file: {error.strerror or error}"))
        return result
    if data[:4] != _IDENT:
        result.problems.append(Problem(where, "offset 0", "not a W&B run file (no ':W&B' header)"))
        return result
    from google.protobuf.message import DecodeError  # here: discovery imports this module to claim folders

    parse = _record_class().FromString
    items = _Items()
    config: dict[str, object] = {}
    for body, offset in records(data, path, result.problems):
        try:
            record = parse(body)
        except DecodeError as error:
            result.problems.append(Problem(where, f"offset {offset}", f"record skipped: not a W&B record ({error})"))
            continue
        if record.HasField("history"):
            items.add(record.history)
        elif record.HasField("run"):
            config.update(_config(record.run.config))
        elif record.HasField("config"):
            config.update(_config(record.config))
    for key, (steps, texts, times) in items.by_key():
        for name, (named_steps, values, named_times) in _numbers(key, steps, texts, times).items():
            result.series[name] = Series(name, named_steps, values, named_times)
    result.series = dict(sorted(result.series.items()))
    shown = {key: value for key, value in config.items() if not key.startswith("_")}
    if shown:
        text = ", ".join(f"{key}={json.dumps(value)}" for key, value in sorted(shown.items()))
        result.notes.append("config: " + (text if len(text) <= 300 else text[:297] + "..."))
    return result


def records(data: bytes, path: Path, problems: list[Problem]):
    """(record bytes, offset) of every whole record with a good checksum; damage becomes problems."""
    offset, parts, first = _FILE_HEADER, [], 0
    while offset < len(data):
        left = _BLOCK - offset % _BLOCK
        if left < _RECORD_HEADER:  # the writer pads a block's tail too short for a header
            offset += left
            continue
        if offset + _RECORD_HEADER > len(data):
            problems.append(_cut(path, first if parts else offset, len(data)))
            return
        crc, length, kind = struct.unpack_from("<IHB", data, offset)
        if kind == 0 and length == 0:  # zero-filled space: preallocated, or padding to the block end
            offset += left
            continue
        end = offset + _RECORD_HEADER + length
        if end > len(data):
            problems.append(_cut(path, first if parts else offset, len(data)))
            return
        body = data[offset + _RECORD_HEADER:end]
        if kind > _LAST or length > left - _RECORD_HEADER or zlib.crc32(body, _TYPE_CRC[kind]) != crc:
            problems.append(Problem(str(path), f"offset {offset}",
                                    "record checksum mismatch: skipped to the next 32 KiB block"))
            parts, offset = [], offset + left
            continue
        if kind == _FULL:
            yield body, offset
        elif kind == _FIRST:
            parts, first = [body], offset
        elif kind == _MIDDLE and parts:
            parts.append(body)
        elif kind == _LAST and parts:
            parts.append(body)
            yield b"".join(parts), first
            parts = []
        offset = end


def _cut(path: Path, start: int, size: int) -> Problem:
    """The record that starts at `start` (its first fragment's header) runs past the end of the file."""
    return Problem(str(path), f"offset {start}", f"truncated record: the file ends {size - start} bytes into it "
                                                 "(the run is still being written, or was killed); every whole "
                                                 "record before it was read")


class _Items:
    """Every history item of a run, kept flat (key, JSON text, record) and split by key at the end
    with numpy: a run holds millions of items, and per-item work in Python is the reader's cost."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.texts: list[str] = []
        self.records: list[int] = []
        self.steps: list[int] = []
        self.times: list[float] = []

    def add(self, history) -> None:
        """One history record: its items, and its step (the `_step` item, else its step field, else
        one past the previous record's, as wandb's own counter numbers records logged without a step)."""
        keys, texts = [], []
        for item in history.item:  # attribute access on protobuf objects is this reader's main cost
            nested = item.nested_key
            keys.append(item.key or (nested[0] if len(nested) == 1 else "/".join(nested)))
            texts.append(item.value_json or _text(item))
        step = _number(keys, texts, "_step")
        if step is None or not abs(step) < 2.0 ** 63:  # NaN, +-inf or past int64, which wandb never writes
            step = history.step.num if history.HasField("step") else (self.steps[-1] + 1 if self.steps else 0)
        time = _number(keys, texts, "_timestamp")
        self.records.extend([len(self.steps)] * len(keys))
        self.steps.append(int(step))
        self.times.append(np.nan if time is None else time)
        self.keys.extend(keys)
        self.texts.extend(texts)

    def by_key(self):
        """(key, steps, JSON texts, wall times) of every key that is not wandb's bookkeeping (`_...`)."""
        codes, names = factorized(self.keys)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        records, steps, times = np.array(self.records, np.int64), np.array(self.steps, np.int64), np.array(self.times)
        texts = np.array(self.texts)
        for code, key in enumerate(names):
            if key and not key.startswith("_"):
                mine = order[bounds[code]:bounds[code + 1]]
                yield key, (steps[records[mine]], texts[mine], times[records[mine]])


def factorized(keys: list[str]) -> tuple[np.ndarray, list[str]]:
    """(a code for each key, the distinct keys) numbered in order of first appearance: `pandas.factorize`,
    without pandas' import (0.2-0.3 s of CPU, more than reading a small run); a dict is faster than it
    too (0.09 s against 0.12 s for 1.6M items of 8 keys)."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault(key, len(index)) for key in keys), np.int64, len(keys))
    return codes, list(index)


def _number(keys: list[str], texts: list[str], key: str) -> float | None:
    try:
        return float(texts[keys.index(key)])
    except (ValueError, OverflowError):
        return None


def _text(item) -> str:
    """An item's value as JSON text when it has no value_json: the typed number wandb-core may write."""
    if item.HasField("number"):
        return repr(item.number)
    return str(item.integer) if item.HasField("integer") else "null"


def _numbers(key: str, steps: np.ndarray, texts: np.ndarray, times: np.ndarray) -> dict:
    """{name: (steps, values, wall times)} of a key's numeric values: the key itself, or `key/sub`
    for each number inside logged dicts; text, media (`_type` dicts) and nulls are no points."""
    try:  # the common case, every value a number (NaN and Infinity included), at numpy speed
        return {key: (steps, texts.astype(np.float64), times)}
    except ValueError:
        pass
    found: dict[str, tuple[list, list, list]] = {}
    for step, text, wall_time in zip(steps, texts, times):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        for name, number in _flattened(key, value):
            named = found.setdefault(name, ([], [], []))
            named[0].append(step)
            named[1].append(number)
            named[2].append(wall_time)
    return found


def _flattened(key: str, value):
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        yield key, float(value)
    elif isinstance(value, dict) and "_type" not in value:
        for sub, inner in value.items():
            yield from _flattened(f"{key}/{sub}", inner)


def _config(config) -> dict:
    updates = {}
    for item in config.update:
        try:
            value = json.loads(item.value_json)
        except ValueError:
            continue
        updates[item.key or "/".join(item.nested_key)] = value.get("value", value) if isinstance(value, dict) else value
    return updates


@functools.cache
def _record_class():
    """The few fields of wandb's `Record` (wandb/proto/wandb_internal.proto) lrdiag needs, as a message
    class of its own in a pool of its own: protobuf (a core dependency) parses them in C, skips the
    rest, and never meets the wandb package's own classes. Built on first use: discovery imports this module."""
    from google.protobuf import descriptor_pool, message_factory
    from google.protobuf.descriptor_pb2 import FieldDescriptorProto, FileDescriptorProto

    optional, repeated = FieldDescriptorProto.LABEL_OPTIONAL, FieldDescriptorProto.LABEL_REPEATED
    text, message = FieldDescriptorProto.TYPE_STRING, FieldDescriptorProto.TYPE_MESSAGE
    layout = {  # message: [(field, number, type, label, message type)]
        "Item": [("key", 1, text, optional, ""), ("nested_key", 2, text, repeated, ""),
                 ("integer", 5, FieldDescriptorProto.TYPE_SINT64, optional, ""),
                 ("number", 6, FieldDescriptorProto.TYPE_DOUBLE, optional, ""), ("value_json", 16, text, optional, "")],
        "Step": [("num", 1, FieldDescriptorProto.TYPE_INT64, optional, "")],
        "History": [("item", 1, message, repeated, "Item"), ("step", 2, message, optional, "Step")],
        "Config": [("update", 1, message, repeated, "Item")],
        "Run": [("run_id", 1, text, optional, ""), ("project", 3, text, optional, ""),
                ("config", 4, message, optional, "Config"), ("display_name", 8, text, optional, "")],
        "Record": [("history", 2, message, optional, "History"), ("config", 5, message, optional, "Config"),
                   ("run", 17, message, optional, "Run")],
    }
    proto = FileDescriptorProto(name="lrdiag_wandb_record.proto", package="lrdiag_wandb", syntax="proto2")
    for name, fields in layout.items():
        described = proto.message_type.add(name=name)
        for field, number, kind, label, type_name in fields:
            described.field.add(name=field, number=number, type=kind, label=label,
                                type_name=f".lrdiag_wandb.{type_name}" if type_name else None)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    described = pool.FindMessageTypeByName("lrdiag_wandb.Record")
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(described)
    return message_factory.MessageFactory(pool).GetPrototype(described)


def _run_name(path: Path) -> str:
    """`project/display name` (or the run id when the run has no name yet, as offline runs)."""
    try:
        head = files.read_bytes(path, _BLOCK)
    except OSError:
        return path.stem
    from google.protobuf.message import DecodeError

    for body, _ in records(head, path, []):
        try:
            record = _record_class().FromString(body)
        except DecodeError:
            continue
        if record.HasField("run"):
            name = record.run.display_name or record.run.run_id or path.stem.removeprefix("run-")
            return f"{record.run.project}/{name}" if record.run.project else name
    return path.parent.name if path.parent.name.startswith(_RUN_PREFIXES) else path.stem


def _wandb_file(folder: Path) -> Path | None:
    try:
        return next(iter(sorted(path for path in folder.glob("*.wandb") if path.is_file())), None)
    except OSError:
        return None


def _has_ident(path: Path) -> bool:
    try:
        return files.read_bytes(path, 4) == _IDENT
    except OSError:
        return True  # claimed by name; reading it says why it fails


def _run_folders(path: Path) -> list[Path]:
    try:
        return sorted(child for child in path.iterdir() if child.name.startswith(_RUN_PREFIXES) and child.is_dir())
    except OSError:
        return []
