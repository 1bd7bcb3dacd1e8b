"""A hand decoder for the plain shapes of TensorBoard's `Event` protobuf, so reading them never imports protobuf.

Importing protobuf and tensorboard's `event_pb2` costs about as much CPU as reading a small
run. Almost every record whose layout the numpy fast path in tfevents does not fit is still
plain: a `file_version` (the first record of every file), a `SessionLog` (restarts), or
`simple_value` scalars with a field order or an extra `node_name` that the fast path does not
expect. This module decodes exactly those and answers None for anything else (tensors, plugin
metadata, images, graphs, unknown fields, repeated fields, invalid UTF-8), which then goes to
protobuf. Where it answers, the answer equals protobuf's: a test checks every record of the
real event files both ways, and randomly damaged records.

Wire format (protobuf encoding): each field is a varint key `field_number << 3 | wire_type`
then a value: varint (type 0), 8 bytes (1), a varint length and that many bytes (2), 4 bytes (5).
"""

from __future__ import annotations

import struct

_double = struct.Struct("<d").unpack_from
_float = struct.Struct("<f").unpack_from

# Event fields: wall_time = 1 (double), step = 2 (int64), source_metadata = 10 (SourceMetadata,
# whose writer = 1 is a string: tensorboard's writers add it to the file_version event), then the
# `what` oneof: file_version = 3 (string), summary = 5 (Summary), session_log = 7 (SessionLog);
# the other members are left to protobuf.
_WALL_TIME, _STEP, _FILE_VERSION, _SUMMARY, _SESSION_LOG, _SOURCE = 0x09, 0x10, 0x1A, 0x2A, 0x3A, 0x52
_WRITER = 0x0A
_SUMMARY_VALUE = 0x0A  # Summary.value = 1 (repeated Value)
_TAG, _SIMPLE_VALUE, _NODE_NAME = 0x0A, 0x15, 0x3A  # Value.tag = 1, simple_value = 2 (float), node_name = 7
_STATUS, _CHECKPOINT_PATH, _MESSAGE = 0x08, 0x12, 0x1A  # SessionLog fields 1 (enum), 2, 3 (strings)


class _NotPlain(Exception):
    """The record is not one of the plain shapes (or is malformed): protobuf decides."""


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(unsigned value, position after it); at most 10 bytes, as protobuf allows."""
    value = shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if shift == 63 and byte > 1:  # a 10th byte may only carry the 64th bit
                raise _NotPlain
            return value, pos
        shift += 7
    raise _NotPlain


def _chunk(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(start, end) of a length-delimited value whose length varint is at `pos`."""
    length, pos = _varint(data, pos, end)
    if pos + length > end:
        raise _NotPlain
    return pos, pos + length


def _text(data: bytes, start: int, end: int) -> str:
    try:
        return data[start:end].decode("utf-8")
    except UnicodeDecodeError:  # protobuf rejects the record or keeps it otherwise: its call
        raise _NotPlain from None


def _fields(data: bytes, start: int, end: int, allowed: frozenset[int]):
    """(key, value start, value end) for each field; any key not allowed, or seen twice, is not plain."""
    seen = set()
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        if key not in allowed or key in seen:
            raise _NotPlain
        seen.add(key)
        wire_type = key & 7
        if wire_type == 0:
            value_start = pos
            _, pos = _varint(data, pos, end)
            yield key, value_start, pos
        elif wire_type == 1 or wire_type == 5:
            size = 8 if wire_type == 1 else 4
            if pos + size > end:
                raise _NotPlain
            yield key, pos, pos + size
            pos += size
        else:  # only length-delimited keys are allowed besides
            value_start, pos = _chunk(data, pos, end)
            yield key, value_start, pos


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


_EVENT_KEYS = frozenset({_WALL_TIME, _STEP, _FILE_VERSION, _SUMMARY, _SESSION_LOG, _SOURCE})
_VALUE_KEYS = frozenset({_TAG, _SIMPLE_VALUE, _NODE_NAME})
_SESSION_KEYS = frozenset({_STATUS, _CHECKPOINT_PATH, _MESSAGE})


def _summary_values(data: bytes, start: int, end: int) -> list[tuple[str, float]]:
    """(tag, simple_value) of each Value; a Value with anything but tag, simple_value, node_name is not plain."""
    values = []
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        if key != _SUMMARY_VALUE:
            raise _NotPlain
        value_start, pos = _chunk(data, pos, end)
        tag, number = "", None
        for field, field_start, field_end in _fields(data, value_start, pos, _VALUE_KEYS):
            if field == _TAG:
                tag = _text(data, field_start, field_end)
            elif field == _SIMPLE_VALUE:
                number = _float(data, field_start)[0]
            else:
                _text(data, field_start, field_end)  # node_name: a string protobuf checks too
        if number is None:  # an empty `value` oneof: protobuf's reading skips it, but leave it to it
            raise _NotPlain
        values.append((tag, number))
    return values


def plain_event(data: bytes) -> tuple[float, int, str | None, object] | None:
    """(wall_time, step, what, payload) of a plain Event, else None.

    `what` names the oneof that is set (None when none is), and payload is the file_version
    string, the SessionLog status, or the summary's [(tag, simple_value), ...]."""
    try:
        wall_time, step, what, payload = 0.0, 0, None, None
        for key, start, end in _fields(data, 0, len(data), _EVENT_KEYS):
            if key == _WALL_TIME:
                wall_time = _double(data, start)[0]
            elif key == _STEP:
                step = _signed(_varint(data, start, end)[0], 64)
            elif key == _SOURCE:
                for _, field_start, field_end in _fields(data, start, end, frozenset({_WRITER})):
                    _text(data, field_start, field_end)
            elif what is not None:  # two members of the oneof: protobuf keeps the last; leave it to it
                raise _NotPlain
            elif key == _FILE_VERSION:
                what, payload = "file_version", _text(data, start, end)
            elif key == _SUMMARY:
                what, payload = "summary", _summary_values(data, start, end)
            else:
                what, payload = "session_log", 0
                for field, field_start, field_end in _fields(data, start, end, _SESSION_KEYS):
                    if field == _STATUS:
                        payload = _signed(_varint(data, field_start, field_end)[0], 32)
                    else:
                        _text(data, field_start, field_end)
        return wall_time, step, what, payload
    except _NotPlain:
        return None
