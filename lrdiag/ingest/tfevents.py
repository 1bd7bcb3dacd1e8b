"""TensorBoard event files: every scalar point (v1 `simple_value` and v2 tensors), no sampling.

The common record, one `simple_value` scalar in one event, has a fixed field layout, so it is
decoded for all records at once with numpy; any other record (v2 tensors, several values per
event, file_version, session_log, graphs, images) goes through the `Event` protobuf that the
tensorboard package ships. Restarts are resolved as TensorBoard's EventAccumulator does
(purge_orphaned_data): with file_version >= 2 a SessionLog.START drops every earlier point at
or after its step; without a file version an out-of-order step drops that tag's earlier points
at or after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrdiag.ingest import eventwire
from lrdiag.ingest.bulk import gc_paused
from lrdiag.ingest.tfrecord import HEADER, Buffer, FieldReader, frame
from lrdiag.series.model import Problem, ReadResult, Series

NAME = "tensorboard"
_CHUNK = 1 << 16  # records decoded at a time: bounds the temporaries' memory
_SAMPLE_ROWS = 1024  # rows whose distinct tags are found by sorting; the others are matched against them

# TensorProto dtypes holding a scalar we can turn into a float, and the field that carries it.
_DTYPE_NUMPY = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?",
                17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}


def claims(path: Path, head: bytes) -> bool:
    return "tfevents" in path.name


_COLUMNS = (("record", np.int64), ("tag_id", np.int64), ("step", np.int64), ("wall", np.float64),
            ("value", np.float64))


class _Points:
    """Scalar points in file order, as parallel columns (record: the global record index, which restart
    handling needs). The fast path writes a file's points into one block of columns made for it (at most a
    point a record), so that they need no joining afterwards; other records' points come as parts."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name, _ in _COLUMNS}
        self.fast_parts: list[np.ndarray] = []  # the record column of each block
        self.block: dict[str, np.ndarray] | None = None
        self.filled = 0

    def start_block(self, capacity: int) -> None:
        self.end_block()
        self.block = {name: np.empty(capacity, dtype) for name, dtype in _COLUMNS}  # untouched until written
        self.filled = 0

    def fill(self, record, tag_id, step, wall, value) -> None:
        end = self.filled + len(record)
        for (name, _), column in zip(_COLUMNS, (record, tag_id, step, wall, value)):
            self.block[name][self.filled:end] = column
        self.filled = end

    def end_block(self) -> None:
        if self.block is not None:
            for name, _ in _COLUMNS:
                self.parts[name].append(self.block[name][:self.filled])
            self.fast_parts.append(self.parts["record"][-1])
            self.block = None

    def add(self, record, tag_id, step, wall, value) -> None:
        for (name, dtype), column in zip(_COLUMNS, (record, tag_id, step, wall, value)):
            self.parts[name].append(np.asarray(column, dtype))

    def fast_records(self) -> np.ndarray:
        """The records whose point the fast path read."""
        self.end_block()
        if len(self.fast_parts) == 1:
            return self.fast_parts[0]
        return np.concatenate(self.fast_parts) if self.fast_parts else np.zeros(0, np.int64)

    def columns(self) -> tuple[np.ndarray, ...]:
        """Each column joined into one array, its parts released as it goes (memory peak); one part (a
        file read by the fast path: in record order already) is passed on as it is."""
        self.end_block()
        # One part is in record order: a block by construction, or the points of slow records alone.
        in_order = len(self.parts["record"]) <= 1
        cols = []
        for name, dtype in _COLUMNS:
            parts = self.parts[name]
            cols.append(parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, dtype))
            parts.clear()
        if in_order or (np.diff(cols[0]) >= 0).all():
            return tuple(cols)
        order = np.argsort(cols[0], kind="stable")
        return tuple(c[order] for c in cols)


@dataclass
class _Control:
    """Events that steer restart handling, by global record index."""

    record: int
    step: int
    file_version: float | None = None
    start: bool = False
    has_summary: bool = False


class _Tags:
    """Tag names by id, ids given in order of first appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.plugin: dict[str, str] = {}

    def id_list(self, names) -> list[int]:
        ids = self.ids
        return [ids.setdefault(name, len(ids)) for name in names]

    @property
    def names(self) -> list[str]:
        return list(self.ids)  # a dict keeps insertion order: the ids' order


def _varint(buf: Buffer, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a protobuf varint at each position: (value as uint64, byte length, well formed).

    Most varints here (sizes, small steps) are one byte, so each further byte is decoded only
    for the rows still running."""
    pos = buf.clip(pos)
    byte = buf.u8[pos]
    value = (byte & 0x7F).astype(np.uint64)
    length = np.ones(pos.shape, np.int64)
    running = np.flatnonzero(byte >= 0x80)
    for i in range(1, 10):
        if running.size == 0:
            break
        byte = buf.u8[np.minimum(pos[running] + i, buf.size)]
        value[running] |= (byte & 0x7F).astype(np.uint64) << np.uint64(7 * i)
        length[running] += 1
        running = running[byte >= 0x80]
    done = np.ones(pos.shape, bool)
    done[running] = False
    return value, length, done


def _fast_scalars(buf: Buffer, starts: np.ndarray, lengths: np.ndarray):
    """Decode records shaped `wall_time, [step], summary{value{tag, simple_value}}` at once.

    Returns (ok, step, wall, value, tag_start, tag_len); rows where ok is False need protobuf.
    """
    ends = starts + lengths
    at = lambda pos: buf.u8[buf.clip(pos)]  # noqa: E731 - rows whose positions run wild are masked by ok
    ok = (lengths >= 20) & (at(starts) == 0x09)
    wall = buf.u64[buf.clip(starts + 1)].view(np.float64)
    pos = starts + 9
    has_step = at(pos) == 0x10
    step, step_len, step_ok = _varint(buf, pos + 1)
    ok &= step_ok | ~has_step
    step = np.where(has_step, step, np.uint64(0)).view(np.int64)
    pos = np.where(has_step, pos + 1 + step_len, pos)
    # summary (field 5) holding a single value (field 1), each ending where the record ends
    for field_tag in (0x2A, 0x0A):
        ok &= at(pos) == field_tag
        size, size_len, size_ok = _varint(buf, pos + 1)
        pos = pos + 1 + size_len
        ok &= size_ok & (pos + size.astype(np.int64) == ends)
    ok &= at(pos) == 0x0A  # the value's tag (field 1), then simple_value (field 2, fixed32)
    tag_len, tag_len_len, tag_len_ok = _varint(buf, pos + 1)
    tag_start = pos + 1 + tag_len_len
    tag_len = tag_len.astype(np.int64)
    after_tag = tag_start + tag_len
    ok &= tag_len_ok & (at(after_tag) == 0x15) & (after_tag + 5 == ends)
    value = buf.u32[buf.clip(after_tag + 1)].view(np.float32)
    return ok, step, wall, value, tag_start, tag_len


_BYTE_MASKS = np.array([(1 << (8 * count)) - 1 for count in range(9)], np.uint64)  # the low `count` bytes
# The bytes after the step of a one-value summary whose tag is under 119 bytes (every size then fits in a
# one-byte varint): summary (field 5) of tag_len + 9 bytes, value (field 1) of tag_len + 7, tag (field 1)
# of tag_len; as a little-endian word, tag_len added at bits 8, 24 and 40.
_SHORT_SUMMARY = np.uint64(0x2A | 9 << 8 | 0x0A << 16 | 7 << 24 | 0x0A << 32)
_SHORT_TAG = 118


def _short_scalars(buf: Buffer, starts: np.ndarray, lengths: np.ndarray, reader: FieldReader | None = None):
    """`_fast_scalars` for the record nearly every writer writes: `wall_time, [step], summary{value{tag,
    simple_value}}` with a tag under 119 bytes and a step under 2^49. Then every field but the step lies at
    a fixed distance from the record's start or end, so six reads (strided where the records repeat a
    cycle, gathers otherwise) and word arithmetic check and decode it, where the general decoder walks four
    varints. Same returns; ok is False for any other record (the general decoder tries those). `reader`:
    the chunk's FieldReader."""
    u64 = np.uint64
    reader = reader or FieldReader(buf, starts, lengths)
    # Framed records end at least FOOTER bytes before the file does: reads up to 16 bytes past a
    # record's start stay in the buffer's padding.
    ok = (lengths >= 20) & (reader.read(buf.u8, 0) == 0x09)
    wall = reader.read(buf.u64, 1).view(np.float64)
    after = reader.read(buf.u64, 9)
    has_step = (after & u64(0xFF)) == u64(0x10)
    varint = after >> u64(8)  # the step's first 7 bytes
    last_bytes = ~varint & u64(0x0080808080808080)  # bit 7 clear: a varint's last byte
    last = last_bytes & (~last_bytes + u64(1))  # the first of them
    ok &= ~has_step | (last != 0)
    within = np.where(has_step & (last != 0), (last << u64(1)) - u64(1), u64(0))  # the step's bytes
    varint &= within
    step = np.zeros(starts.size, u64)
    step_len = np.zeros(starts.size, u64)
    for byte in range(int(within.max(initial=0)).bit_length() // 8):
        step |= ((varint >> u64(8 * byte)) & u64(0x7F)) << u64(7 * byte)
        step_len += (within >> u64(8 * byte)) & u64(1)
    summary_at = 9 + np.where(has_step, step_len.astype(np.int64) + 1, 0)  # from the record's start
    tag_len = lengths - summary_at - 11
    ok &= (tag_len >= 0) & (tag_len <= _SHORT_TAG)
    short_len = np.where(ok, tag_len, 0).astype(u64)
    expected = _SHORT_SUMMARY + (short_len << u64(8)) + (short_len << u64(24)) + (short_len << u64(40))
    ok &= (reader.read(buf.u64, summary_at) & _BYTE_MASKS[6]) == expected
    ok &= reader.read(buf.u8, lengths - 5) == 0x15  # simple_value (field 2, fixed32), the record's last 5 bytes
    value = reader.read(buf.u32, lengths - 4).view(np.float32)
    return ok, step.view(np.int64), wall, value, starts + summary_at + 6, tag_len


def _tag_words(buf: Buffer, tag_start: np.ndarray, tag_len: np.ndarray, word: int,
               reader: FieldReader | None = None) -> np.ndarray:
    """The `word`-th 8 bytes of each tag, bytes past the tag's end zeroed (`reader`: one for these rows)."""
    mask = _BYTE_MASKS[np.clip(tag_len - 8 * word, 0, 8)]
    if reader is not None:
        return reader.read(buf.u64, tag_start - reader.starts + 8 * word) & mask
    return buf.u64[np.minimum(tag_start + 8 * word, buf.size)] & mask


def _group_tags(buf: Buffer, tag_start: np.ndarray, tag_len: np.ndarray, tags: _Tags,
                reader: FieldReader | None = None):
    """Tag ids for fast-path rows, hashing tag bytes 8 at a time; returns (tag_id, confirmed). `reader`: a
    FieldReader for exactly these rows."""
    if tag_start.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    words = [_tag_words(buf, tag_start, tag_len, word, reader) for word in range((int(tag_len.max()) + 7) // 8)]
    digest = tag_len.astype(np.uint64)
    for word in words:
        digest = (digest ^ word) * np.uint64(1099511628211)
        digest ^= digest >> np.uint64(29)
    group, first = _digest_groups(digest)
    in_order = np.argsort(first)  # new tags get ids in the order the file shows them
    ids = np.empty(first.size, np.int64)
    ids[in_order] = tags.id_list(_decoded_tags(buf, tag_start[first[in_order]], tag_len[first[in_order]]))
    # A hash collision would merge two tags: confirm every row's bytes equal its group's first row's.
    same = tag_len == tag_len[first][group]
    for word in words:
        same &= word == word[first][group]
    return ids[group], same


def _digest_groups(digest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group of each row, first row of each group) for equal digests. A file repeats a few tags, so the
    groups met in the first rows usually cover every row: rows are matched against those, and only the
    rows left over (a file of many distinct tags) are sorted, where np.unique sorts every row."""
    known, first = np.unique(digest[:_SAMPLE_ROWS], return_index=True)
    group = np.full(digest.size, -1, np.int64)
    if known.size <= 8:  # a comparison per tag beats a binary search
        for index, value in enumerate(known.tolist()):
            group[digest == np.uint64(value)] = index
    else:
        where = np.minimum(np.searchsorted(known, digest), known.size - 1)
        found = known[where] == digest
        group[found] = where[found]
    rest = np.flatnonzero(group < 0)
    if rest.size:
        _, rest_first, rest_group = np.unique(digest[rest], return_index=True, return_inverse=True)
        group[rest] = known.size + rest_group.reshape(-1)
        first = np.concatenate([first, rest[rest_first]])
    return group, first


def _decoded_tags(buf: Buffer, tag_start: np.ndarray, tag_len: np.ndarray) -> list[str]:
    """The tags' text (bad UTF-8 replaced), decoded in one call: the bytes of all of them gathered
    with NUL between (a tag that holds a NUL is decoded on its own)."""
    ends = np.cumsum(tag_len + 1)
    source = np.repeat(tag_start - (ends - tag_len - 1), tag_len + 1) + np.arange(int(ends[-1]) if ends.size else 0)
    gathered = buf.u8[buf.clip(source)]
    gathered[ends - 1] = 0
    names = gathered.tobytes().decode("utf-8", "replace").split("\0")[:-1]
    if len(names) != tag_start.size:  # some tag holds a NUL
        names = [buf.bytes_at(start, length).decode("utf-8", "replace")
                 for start, length in zip(tag_start.tolist(), tag_len.tolist())]
    return names


def _tensor_scalar(tensor) -> float | None:
    """The value of a one-element numeric TensorProto, else None."""
    dims = [d.size for d in tensor.tensor_shape.dim]
    if any(d != 1 for d in dims) or tensor.dtype not in _DTYPE_NUMPY:
        return None
    if tensor.tensor_content:
        values = np.frombuffer(tensor.tensor_content, dtype=_DTYPE_NUMPY[tensor.dtype])
    elif tensor.dtype == 19:  # DT_HALF: the bits of a float16 in half_val
        values = np.array(tensor.half_val, dtype=np.uint16).view(np.float16)
    else:
        values = (tensor.float_val or tensor.double_val or tensor.int_val or tensor.int64_val
                  or tensor.bool_val or tensor.uint32_val or tensor.uint64_val)
    return float(values[0]) if len(values) == 1 else None


def _slow_records(buf: Buffer, starts, lengths, first_record, tags, points, controls, problems, path):
    """Decode records the fast path left: plain ones by hand (eventwire), the rest with protobuf."""
    for index, start, length in zip(first_record, starts.tolist(), lengths.tolist()):
        data = buf.bytes_at(start, length)
        event = eventwire.plain_event(data) or _protobuf_event(data, tags)
        if event is None:
            problems.append(Problem(str(path), f"offset {start - HEADER}", "record is not an Event protobuf; skipped"))
            continue
        wall_time, step, kind, payload = event
        if kind == "file_version":
            controls.append(_Control(index, step, file_version=_as_float(payload.partition(":")[2])))
        elif kind == "session_log":
            controls.append(_Control(index, step, start=payload == 1))
        elif kind != "summary":
            controls.append(_Control(index, step))
        else:
            controls.append(_Control(index, step, has_summary=True))
            if payload:
                points.add([index] * len(payload), tags.id_list(tag for tag, _ in payload), [step] * len(payload),
                           [wall_time] * len(payload), [value for _, value in payload])


def _protobuf_event(data: bytes, tags: _Tags) -> tuple[float, int, str | None, object] | None:
    """An Event decoded by protobuf, in eventwire.plain_event's shape (a summary's payload: its
    scalar (tag, value) pairs, v1 and v2); None when it is not an Event. Protobuf is imported
    here, on the first record that needs it: a file of plain scalars never does."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2
    try:
        event = event_pb2.Event.FromString(data)
    except DecodeError:
        return None
    kind = event.WhichOneof("what")
    if kind == "file_version":
        return event.wall_time, event.step, kind, event.file_version
    if kind == "session_log":
        return event.wall_time, event.step, kind, event.session_log.status
    if kind != "summary":
        return event.wall_time, event.step, kind, None
    scalars = []
    for item in event.summary.value:
        if item.HasField("metadata") and item.metadata.plugin_data.plugin_name:
            tags.plugin.setdefault(item.tag, item.metadata.plugin_data.plugin_name)
        which = item.WhichOneof("value")
        if which == "simple_value":
            scalars.append((item.tag, item.simple_value))
        elif which == "tensor" and tags.plugin.get(item.tag, "scalars") == "scalars":
            value = _tensor_scalar(item.tensor)
            if value is not None:
                scalars.append((item.tag, value))
    return event.wall_time, event.step, kind, scalars


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _purge(columns, controls: list[_Control], fast_records: np.ndarray, tag_names: list[str]):
    """Drop orphaned points as EventAccumulator(purge_orphaned_data=True) does: (kept mask, notes)."""
    record, tag_id, step, _, _ = columns
    keep = np.ones(record.size, bool)
    notes: list[str] = []
    versions = [c.file_version for c in controls if c.file_version is not None]
    if not versions or versions[-1] < 2:
        return _out_of_order_keep(columns, controls, fast_records, notes, tag_names), notes
    for control in controls:
        if control.start:
            dropped = keep & (record < control.record) & (step >= control.step)
            if dropped.any():
                notes.append(f"restart (SessionLog START) at step {control.step}: "
                             f"{int(dropped.sum())} earlier points at or after it replaced")
            keep &= ~dropped
    return keep, notes


def _out_of_order_keep(columns, controls, fast_records, notes, tag_names):
    """Files without a v2 file_version: an event whose step is below the most recent one purges
    its own tags' earlier points at or after that step (EventAccumulator's older rule)."""
    record, tag_id, step, _, _ = columns
    keep = np.ones(record.size, bool)
    fast_steps = step[np.searchsorted(record, fast_records)] if fast_records.size else fast_records
    event_record = np.concatenate([[c.record for c in controls], fast_records]).astype(np.int64)
    event_step = np.concatenate([[c.step for c in controls], fast_steps]).astype(np.int64)
    has_summary = np.concatenate([[c.has_summary for c in controls], np.ones(fast_records.size, bool)])
    order = np.argsort(event_record, kind="stable")
    most_recent = 0
    purges = []
    for index, event_step_, summary in zip(event_record[order].tolist(), event_step[order].tolist(),
                                           has_summary[order].tolist()):
        if summary and event_step_ < most_recent:
            purges.append((index, event_step_))
        else:
            most_recent = event_step_
    for index, event_step_ in purges:
        purged_tags = np.unique(tag_id[record == index])
        dropped = keep & (record < index) & (step >= event_step_) & np.isin(tag_id, purged_tags)
        if dropped.any():
            names = ", ".join(tag_names[t] for t in purged_tags[:3].tolist())
            notes.append(f"steps go back to {event_step_} ({names}): {int(dropped.sum())} earlier points replaced")
        keep &= ~dropped
    return keep


def read_files(paths: list[Path], verify: bool = True, contents: dict[Path, bytes] | None = None) -> ReadResult:
    """One run's event files, merged in file-name order (TensorBoard's order). `contents`: the bytes
    of some of them already in hand (a live run's whole records so far), read instead of the file."""
    tags = _Tags()
    points = _Points()
    controls: list[_Control] = []
    problems: list[Problem] = []
    record_base = 0
    buf = records = reader = None
    for path in sorted(paths, key=lambda p: p.name):
        try:
            buf = Buffer.from_bytes(contents[path]) if contents and path in contents else Buffer.from_file(path)
        except OSError as error:
            problems.append(Problem(str(path), "", f"cannot read: {error.strerror or error}"))
            continue
        if not buf.size:
            problems.append(Problem(str(path), "offset 0", "empty event file: no records"))
            continue
        records = frame(buf, verify=verify)
        problems.extend(Problem(str(path), f"offset {offset}", message) for offset, message in records.damage)
        points.start_block(records.data_starts.size)
        for chunk in range(0, records.data_starts.size, _CHUNK):
            starts = records.data_starts[chunk:chunk + _CHUNK]
            lengths = records.lengths[chunk:chunk + _CHUNK]
            index = record_base + chunk + np.arange(starts.size)
            reader = FieldReader(buf, starts, lengths)
            decoded = _short_scalars(buf, starts, lengths, reader)
            others = np.flatnonzero(~decoded[0])
            if others.size:  # long tags, steps past 2^49, other field orders: the general decoder
                for column, part in zip(decoded, _fast_scalars(buf, starts[others], lengths[others])):
                    column[others] = part
            ok, step, wall, value, tag_start, tag_len = decoded
            every = bool(ok.all())  # the usual file: no row to pick out, no copies
            rows = slice(None) if every else ok
            tag_id, same = _group_tags(buf, tag_start[rows], tag_len[rows], tags, reader if every else None)
            if not same.all():
                ok[np.flatnonzero(ok)[~same]] = False
                tag_id, every = tag_id[same], False
            rows = slice(None) if every else ok
            points.fill(index[rows], tag_id, step[rows], wall[rows], value[rows])
            if not every:
                slow = ~ok
                _slow_records(buf, starts[slow], lengths[slow], index[slow].tolist(), tags, points, controls,
                              problems, path)
        record_base += records.data_starts.size
    del buf, records, reader  # the file's bytes go before the columns are joined (the memory peak)
    fast_summary = points.fast_records()
    columns = points.columns()
    keep, notes = _purge(columns, controls, fast_summary, tags.names)
    if not keep.all():
        columns = tuple(c[keep] for c in columns)
    series = _split_by_tag(*columns[1:], tags.names)
    backwards = [name for name, one in series.items() if one.steps.size > 1 and (np.diff(one.steps) < 0).any()]
    if backwards:
        notes.append("steps go backwards in " + ", ".join(backwards[:5]) + (" ..." if len(backwards) > 5 else "")
                     + " with no restart marker: kept as TensorBoard shows them")
    return ReadResult(NAME, series, problems, notes)


def _split_by_tag(tag_id, step, wall, value, names: list[str]) -> dict[str, Series]:
    """One Series per tag, points in file order."""
    period = len(names)
    if 0 < period <= 64 and tag_id.size >= period and sorted(tag_id[:period].tolist()) == list(range(period)) \
            and (tag_id[period:] == tag_id[:-period]).all():
        # Every tag once a cycle, in one order (as a writer logging each tag at each step writes them):
        # each tag's points are every period-th row, copied with a stride and no index.
        phase = {tid: first for first, tid in enumerate(tag_id[:period].tolist())}
        return {name: Series(name, step[phase[tid]::period].copy(), value[phase[tid]::period].copy(),
                             wall[phase[tid]::period].copy()) for tid, name in enumerate(names)}
    if len(names) <= 64:  # a mask per tag beats sorting when tags are few
        rows = (np.flatnonzero(tag_id == tid) for tid in range(len(names)))
        return {name: Series(name, step[one], value[one], wall[one]) for name, one in zip(names, rows) if one.size}
    # Many tags: sort once, then each tag's points are a slice (a view, no copy per tag).
    order = np.argsort(tag_id, kind="stable")
    step, wall, value = step[order], wall[order], value[order]
    bounds = np.searchsorted(tag_id[order], np.arange(len(names) + 1)).tolist()
    with gc_paused():
        return {name: Series(name, step[first:last], value[first:last], wall[first:last])
                for name, first, last in zip(names, bounds[:-1], bounds[1:]) if last > first}


def read(path: Path, verify: bool = True) -> ReadResult:
    return read_files([path], verify=verify)
