"""Read Weights & Biases runs kept on disk: `wandb/run-*/` and `wandb/offline-run-*/` folders, each
read from its binary `run-<id>.wandb` file.

The file is read here byte by byte, without the `wandb` package: the core install stays small,
and wandb no longer ships a Python reader for its own files (0.2x's `wandb-core` reads and
writes them in Go). The framing is LevelDB's log format: after a 7-byte header (`:W&B`, magic
0xBEE1, version), 32 KiB blocks of records, each a 7-byte header (CRC32 as zlib computes it,
seeded with the record type's byte; length; type FULL/FIRST/MIDDLE/LAST) and its data, a
protobuf `wandb.internal.Record`. Only a few fields are decoded, by a small wire-format reader:
history items (`key`, or `nested_key` joined with `/`; `value_json`, or the typed `number` /
`integer`), the history step, and the run record's project, name and config. A checksum
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
# Field numbers in wandb/proto/wandb_internal.proto.
_RECORD_HISTORY, _RECORD_CONFIG, _RECORD_RUN = 2, 5, 17
_HISTORY_ITEM, _HISTORY_STEP = 1, 2
_ITEM_KEY, _ITEM_NESTED_KEY, _ITEM_INTEGER, _ITEM_NUMBER, _ITEM_VALUE_JSON = 1, 2, 5, 6, 16
_RUN_ID, _RUN_PROJECT, _RUN_CONFIG, _RUN_DISPLAY_NAME = 1, 3, 4, 8
_CONFIG_UPDATE = 1


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
    points: dict[str, tuple[list[int], list[float], list[float]]] = {}
    config: dict[str, object] = {}
    step = -1
    for record, offset in records(data, path, result.problems):
        try:
            for number, value in _fields(record):
                if number == _RECORD_HISTORY:
                    step = _add_history(value, step, points)
                elif number == _RECORD_RUN:
                    config.update(_run_fields(value)["config"])
                elif number == _RECORD_CONFIG:
                    config.update(_config(value))
        except (ValueError, struct.error) as error:
            result.problems.append(Problem(where, f"offset {offset}", f"record skipped: {error}"))
    for key in sorted(points):
        steps, values, times = points[key]
        result.series[key] = Series(key, steps, values, times)
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


def _add_history(history: bytes, step: int, points: dict) -> int:
    """Add one history record's numeric items to `points`; the record's step."""
    items: dict[str, object] = {}
    step_field = None
    for number, value in _fields(history):
        if number == _HISTORY_ITEM:
            key, item = _item(value)
            if key is not None:
                items[key] = item
        elif number == _HISTORY_STEP:
            step_field = dict(_fields(value)).get(1, 0)
    logged_step = items.get("_step")
    if isinstance(logged_step, (int, float)) and not isinstance(logged_step, bool) and np.isfinite(logged_step):
        step = int(logged_step)
    else:
        step = step_field if step_field is not None else step + 1
    wall_time = items.get("_timestamp")
    wall_time = float(wall_time) if isinstance(wall_time, (int, float)) else np.nan
    for key, value in _numbers(items):
        if not key.startswith("_"):
            steps, values, times = points.setdefault(key, ([], [], []))
            steps.append(step)
            values.append(value)
            times.append(wall_time)
    return step


def _item(item: bytes) -> tuple[str | None, object]:
    key, nested, value = "", [], None
    for number, field in _fields(item):
        if number == _ITEM_KEY:
            key = field.decode("utf-8", "replace")
        elif number == _ITEM_NESTED_KEY:
            nested.append(field.decode("utf-8", "replace"))
        elif number == _ITEM_VALUE_JSON:
            try:
                value = json.loads(field)
            except ValueError:
                value = None
        elif number == _ITEM_NUMBER:
            value = struct.unpack("<d", field)[0]
        elif number == _ITEM_INTEGER:
            value = (field >> 1) ^ -(field & 1)  # sint64: zigzag
    name = key or "/".join(nested)
    return (name or None), value


def _numbers(items: dict, prefix: str = ""):
    """(key, float) of every numeric value, dicts flattened with `/`; media dicts (`_type`) skipped."""
    for key, value in items.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            yield prefix + key, float(value)
        elif isinstance(value, dict) and "_type" not in value:
            yield from _numbers(value, f"{prefix}{key}/")


def _run_fields(run: bytes) -> dict:
    fields = {"config": {}, "id": "", "project": "", "name": ""}
    for number, value in _fields(run):
        if number == _RUN_CONFIG:
            fields["config"] = _config(value)
        elif number in (_RUN_ID, _RUN_PROJECT, _RUN_DISPLAY_NAME):
            fields[{_RUN_ID: "id", _RUN_PROJECT: "project", _RUN_DISPLAY_NAME: "name"}[number]] = value.decode(
                "utf-8", "replace")
    return fields


def _config(config: bytes) -> dict:
    updates = {}
    for number, value in _fields(config):
        if number == _CONFIG_UPDATE:
            key, item = _item(value)
            if key is not None:
                updates[key] = item.get("value", item) if isinstance(item, dict) else item
    return updates


def _fields(message: bytes):
    """(field number, value) of each field of a protobuf message: varints as int, others as bytes."""
    position, size = 0, len(message)
    while position < size:
        tag, position = _varint(message, position)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, position = _varint(message, position)
        elif wire == 1:
            value, position = message[position:position + 8], position + 8
        elif wire == 2:
            length, position = _varint(message, position)
            value, position = message[position:position + length], position + length
        elif wire == 5:
            value, position = message[position:position + 4], position + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not one wandb writes")
        if position > size:
            raise ValueError("protobuf field runs past its message")
        yield number, value


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("protobuf varint runs past its message")
        byte = data[position]
        result |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            return result, position
        shift += 7


def _run_name(path: Path) -> str:
    """`project/display name` (or the run id when the run has no name yet, as offline runs)."""
    try:
        head = files.read_bytes(path, _BLOCK)
    except OSError:
        return path.stem
    for record, _ in records(head, path, []):
        for number, value in _fields(record):
            if number == _RECORD_RUN:
                run = _run_fields(value)
                name = run["name"] or run["id"] or path.stem.removeprefix("run-")
                return f"{run['project']}/{name}" if run["project"] else name
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
