"""TFRecord framing: find every record of a file, verify its checksums, resynchronise after damage.

A record is `uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)`.
Four tricks keep this at numpy speed instead of a Python loop per record:

- Walking the length fields is serial, but writers repeat a short cycle of record lengths (one
  per tag). After a few records walked one by one, the walk guesses that the cycle goes on and
  checks thousands of guessed headers at once; every accepted length was read from the file
  at a start implied by the previous accepted one, so a wrong guess can only stop the
  speculation early, never frame a record wrongly.
- A length's checksum depends on the length alone: one CRC per distinct length checks every
  header exactly.
- CRC32C is affine over GF(2), and a message followed by its own CRC has a CRC-register
  value that does not depend on the message. So in a scratch copy of a stretch of records,
  each header is zeroed and each stored CRC becomes `crc(m) ^ crc(0^n)` (n: the record's
  length): an intact record then brings a zero register back to zero, and one C-speed crc32c
  call checks the whole stretch; only a stretch that fails is checked record by record, to
  name the bad ones. (XOR-folding the messages instead would let the same error in two
  records cancel out; laid end to end they sit at different distances from the end, so they
  cancel only when the CRC polynomial divides the whole error, as for one record.)
- Records that repeat a cycle of lengths end to end put each field of the records of one phase of
  the cycle at even spacing: such fields are read and written as strided views of the file
  (FieldReader, _put, the walk's guesses), several times faster than numpy's gathers and
  scatters through unaligned word views. The tfevents decoder reads its fields the same way.
"""

from __future__ import annotations

import functools
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lrdiag.ingest import files

HEADER = 12  # length (8) + masked crc of length (4)
FOOTER = 4
PAD = 16  # zero bytes after the file, so that word reads near its end stay in bounds
_MASK_DELTA = 0xA282EAD8
_SPAN_BYTES = 1 << 22  # bytes of records checked at a time, to bound the scratch copy
_VERIFY_AT_ONCE = 1 << 16  # records whose checksums are checked together
_u64 = struct.Struct("<Q").unpack_from
_u32 = struct.Struct("<I").unpack_from


class Buffer:
    """A file's bytes plus unaligned little-endian word views over them (no copies)."""

    def __init__(self, raw: np.ndarray, size: int) -> None:
        self.raw = raw  # uint8: size bytes of file followed by PAD zero bytes
        self.size = size
        self.u8 = raw
        self.u64 = np.ndarray((size + PAD - 7,), dtype="<u8", buffer=raw, strides=(1,))
        self.u32 = np.ndarray((size + PAD - 3,), dtype="<u4", buffer=raw, strides=(1,))

    @staticmethod
    def _room(size: int) -> np.ndarray:
        # numpy's own allocation, not a bytearray: it is not zeroed first, and numpy asks the kernel for huge
        # pages for large arrays (reading a 50 MB file: 825 page faults instead of 12,600, 14 ms instead of 40).
        raw = np.empty(size + PAD, np.uint8)
        raw[size:] = 0
        return raw

    @classmethod
    def from_file(cls, path: Path) -> "Buffer":
        with files.open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            raw = cls._room(size)
            read = handle.readinto(memoryview(raw)[:size])
        raw[read:] = 0  # a file cut while being read: what was not read is padding
        return cls(raw, read)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Buffer":
        raw = cls._room(len(data))
        raw[:len(data)] = np.frombuffer(data, np.uint8)
        return cls(raw, len(data))

    def clip(self, positions: np.ndarray) -> np.ndarray:
        """Positions forced inside the file, for gathers whose rows are masked out anyway."""
        return np.clip(positions, 0, self.size)

    def bytes_at(self, start: int, length: int) -> bytes:
        return self.raw[start:start + length].tobytes()


class FieldReader:
    """Reads one word at some distance from the start of each record of a run of framed records (a chunk).

    Writers repeat a short cycle of record lengths (one per tag), so the records of a chunk usually
    repeat with a period p <= 64 while lying end to end: then the records of one phase of the cycle
    (every p-th) are evenly spaced, and a field at the same distance from each of their starts is a
    strided view of the file. One strided copy per phase then replaces a gather through the unaligned
    word views, which numpy does about five times slower. Anything else (damaged records left out, a
    length that changes mid-chunk, distances that do not repeat with the period): the gather."""

    def __init__(self, buf: Buffer, starts: np.ndarray, lengths: np.ndarray) -> None:
        self.buf, self.starts = buf, starts
        self.period = _period(starts, lengths)

    def read(self, view: np.ndarray, distance) -> np.ndarray:
        """`view`'s word (buf.u8, u32 or u64) at each start + distance (an int, or one per record); positions
        outside the file read as at its end, as Buffer.clip has it (rows whose fields run wild are masked)."""
        period, starts = self.period, self.starts
        # Bytes gather fast (the slow gathers are those of unaligned words): no strided copies for them.
        if view.itemsize > 1 and period is not None and (np.isscalar(distance)
                                                         or (distance[period:] == distance[:-period]).all()):
            first = starts[:period] + (distance if np.isscalar(distance) else distance[:period])
            stride = int(starts[period] - starts[0])
            last = first + stride * ((starts.size - 1 - np.arange(period)) // period)  # each phase's last read
            if first.min() >= 0 and last.max() <= self.buf.size:  # as the gather reads them, padding included
                out = np.empty(starts.size, view.dtype)
                for phase, offset in enumerate(first.tolist()):
                    rows = out[phase::period]
                    # Copied to contiguous memory first: numpy copies unaligned words into a strided
                    # destination several times slower than in two steps.
                    rows[...] = np.ndarray(rows.shape, view.dtype, buffer=self.buf.raw, offset=offset,
                                           strides=(stride,)).copy()
                return out
        return view[self.buf.clip(starts + distance)]


def _period(starts: np.ndarray, lengths: np.ndarray) -> int | None:
    """The shortest period (up to 64) with which the records repeat their lengths, lying end to end; None
    when they do not (or are too few to tell)."""
    if starts.size < 128:
        return None
    head = lengths[:128].tolist()
    period = next((p for p in range(1, 65) if head[p:] == head[:-p]), None)
    if period is None or not (lengths[period:] == lengths[:-period]).all():
        return None
    return period if (np.diff(starts) == lengths[:-1] + HEADER + FOOTER).all() else None


@dataclass
class Records:
    """Where the good records of a file lie: data starts and lengths, plus what went wrong."""

    data_starts: np.ndarray  # int64, offset of each record's data
    lengths: np.ndarray  # int64
    damage: list[tuple[int, str]] = field(default_factory=list)  # (byte offset, message)


@functools.cache
def crc32c_function():
    """The crc32c package's C function `crc32c(data, value=0)`, loaded on first use (a run without event
    files never loads it) and without running the package's __init__: that asks importlib.metadata for
    the package's own version and imports its command-line module, 20-30 ms of every event file's
    analysis for nothing read here. Anything unexpected in the package's layout: the plain import."""
    import importlib.machinery
    import importlib.util

    try:
        folder = importlib.util.find_spec("crc32c").submodule_search_locations[0]
        name = next(entry for entry in sorted(os.listdir(folder)) if entry.startswith("_crc32c.")
                    and entry.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)))
        spec = importlib.util.spec_from_file_location("crc32c._crc32c", os.path.join(folder, name))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if module.crc32c(b"123456789") == 0xE3069283:  # CRC-32C's check value
            return module.crc32c
    except Exception:  # noqa: BLE001 - any surprise: fall back to the package's own import
        pass
    import crc32c

    return crc32c.crc32c


def masked_crc(data) -> int:
    crc = crc32c_function()(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _unmask(masked: np.ndarray) -> np.ndarray:
    rotated = masked.astype(np.uint32) - np.uint32(_MASK_DELTA)  # uint32 arithmetic wraps as the mask does
    return (rotated << np.uint32(15)) | (rotated >> np.uint32(17))


def _walk_serial(buf: Buffer, pos: int, count: int) -> tuple[list[int], list[int], int, bool]:
    """Up to `count` records one by one: (starts, lengths, next position, reached the end)."""
    starts, lengths = [], []
    raw, size = buf.raw, buf.size
    for _ in range(count):
        if pos + HEADER > size:
            return starts, lengths, pos, True
        length = _u64(raw, pos)[0]
        if pos + HEADER + length + FOOTER > size:
            return starts, lengths, pos, True
        starts.append(pos)
        lengths.append(length)
        pos += HEADER + length + FOOTER
    return starts, lengths, pos, False


def _cycle(lengths: list[int]) -> list[int] | None:
    """The shortest cycle (up to 64 long) that all of `lengths` repeats at least twice, or None."""
    for period in range(1, min(64, len(lengths) // 2) + 1):
        if lengths[period:] == lengths[:-period]:
            return lengths[-period:]
    return None


def _guess_holds(buf: Buffer, pos: int, cycle: list[int], cycles: int) -> int:
    """How many of the records guessed from `pos` (`cycles` repeats of `cycle`'s lengths, end to end) hold:
    the index of the first whose length field differs from the guess or that ends past the file. The
    records of one phase of the cycle lie evenly spaced, so their length fields are one strided view
    each, compared without a gather."""
    sizes = np.array(cycle, np.int64) + HEADER + FOOTER
    ends = np.cumsum(sizes).tolist()  # of each phase's first record, from pos
    stride = ends[-1]
    period = len(cycle)
    held = cycles * period
    for phase, (length, end) in enumerate(zip(cycle, ends)):
        count = max(0, min(cycles, (buf.size - pos - end) // stride + 1))  # those ending inside the file
        if count:
            lengths = np.ndarray((count,), "<u8", buffer=buf.raw, offset=pos + end - length - HEADER - FOOTER,
                                 strides=(stride,))
            same = lengths == np.uint64(length)
            count = count if same.all() else int(np.argmin(same))
        if count < cycles:
            held = min(held, count * period + phase)
    return held


def walk(buf: Buffer, pos: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Follow the length fields from `pos` until the file ends or a length cannot fit.

    Returns (record starts, lengths, position where the walk stopped)."""
    start_parts: list[np.ndarray] = []
    length_parts: list[np.ndarray] = []
    serial = 16
    while True:
        starts, lengths, pos, at_end = _walk_serial(buf, pos, serial)
        start_parts.append(np.array(starts, np.int64))
        length_parts.append(np.array(lengths, np.int64))
        if at_end:
            break
        cycle = _cycle(lengths)
        # No cycle yet: walk further one by one next time, to catch a longer one.
        serial = 16 if cycle else min(serial * 2, 256)
        guess = 256
        while cycle is not None:
            # A whole number of cycles, so that the next round starts in phase.
            cycles = guess // len(cycle) + 1
            accepted = _guess_holds(buf, pos, cycle, cycles)
            sizes = np.array(cycle, np.int64) + HEADER + FOOTER
            rounds = accepted // len(cycle) + 1
            # The accepted records' starts: each round of the cycle one stride after the last.
            phase_starts = np.cumsum(sizes) - sizes
            guessed_starts = np.add.outer(pos + int(sizes.sum()) * np.arange(rounds), phase_starts)
            start_parts.append(guessed_starts.reshape(-1)[:accepted])
            length_parts.append(np.tile(sizes - HEADER - FOOTER, rounds)[:accepted])
            if accepted:
                pos = int(start_parts[-1][-1] + length_parts[-1][-1] + HEADER + FOOTER)
            if accepted < cycles * len(cycle):
                break
            guess = min(guess * 4, 1 << 16)  # temporaries that stay in the CPU's cache
    return np.concatenate(start_parts), np.concatenate(length_parts), pos


def _per_length(lengths: np.ndarray, function) -> np.ndarray:
    """`function(length)` (a uint32) for each record, computed once per distinct length: records of one
    file come in a few lengths, so a table indexed by length (or by rank among the lengths) is one gather."""
    if lengths.size == 0:
        return np.zeros(0, np.uint32)
    if lengths.max() < (1 << 20):  # records are short: a table as long as the longest
        distinct = np.flatnonzero(np.bincount(lengths))
        table = np.zeros(int(distinct[-1]) + 1, np.uint32)
        table[distinct] = [function(length) for length in distinct.tolist()]
        return table[lengths]
    # np.unique would import numpy.ma (~40 ms at start-up, for a masked-array check): sort and drop repeats
    ordered = np.sort(lengths)
    distinct = ordered[np.diff(ordered, prepend=-1) != 0]
    return np.array([function(length) for length in distinct.tolist()], np.uint32)[np.searchsorted(distinct, lengths)]


def _fold_ok(buf: Buffer, starts: np.ndarray, lengths: np.ndarray, stored: np.ndarray, scratch: bytearray,
             period: int | None = None) -> np.ndarray:
    """Per record: False where its span of records fails the joint checksum test.

    Records lie end to end in the file. A scratch copy of a span of them has each header zeroed
    and each stored CRC replaced by crc(m) ^ crc(0^n) (n: that record's length), so that an
    intact record brings a zero CRC register back to zero whatever its length; leading zeros
    leave a zero register at zero. One C-speed pass then checks the whole span. `period`: the records'
    FieldReader period, if they repeat a cycle of lengths (then the patches are strided writes)."""
    crc32c = crc32c_function()
    ok = np.ones(starts.size, dtype=bool)
    if not starts.size:
        return ok
    patched = _unmask(stored) ^ _per_length(lengths, lambda length: crc32c(bytes(length)))
    record_starts, record_ends = starts - HEADER, starts + lengths + FOOTER
    # A span ends where records stop being adjacent or it outgrows the budget (bounds the copy).
    breaks = np.flatnonzero(record_starts[1:] != record_ends[:-1]) + 1
    budget = np.flatnonzero(np.diff(record_starts // _SPAN_BYTES)) + 1
    # np.unique would import numpy.ma (~40 ms at start-up, for a masked-array check): sort and drop repeats
    bounds = np.sort(np.concatenate(([0], breaks, budget, [starts.size])))
    bounds = bounds[np.diff(bounds, prepend=-1) != 0]
    sizes = record_ends[bounds[1:] - 1] - record_starts[bounds[:-1]]
    if len(scratch) < sizes.max():  # one buffer for a whole file: fresh pages cost more than the copy
        scratch.extend(bytes(int(sizes.max()) - len(scratch)))
    source = memoryview(buf.raw)
    for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        begin, end = int(record_starts[first]), int(record_ends[last - 1])
        span = memoryview(scratch)[:end - begin]
        span[:] = source[begin:end]
        heads = record_starts[first:last] - begin
        _put(span, "<u8", heads, 0, period)
        _put(span, "<u4", heads + 8, 0, period)
        _put(span, "<u4", record_ends[first:last] - FOOTER - begin, patched[first:last], period)
        # A finished CRC of 0xFFFFFFFF puts zero in the register: the result is then all ones
        # exactly when every record contributed nothing, i.e. every record is intact.
        if crc32c(span, 0xFFFFFFFF) != 0xFFFFFFFF:
            ok[first:last] = False
    return ok


def _put(target: memoryview, dtype: str, positions: np.ndarray, values, period: int | None) -> None:
    """Set the (unaligned) `dtype` words of `target` at `positions` to `values` (one a position, or a scalar).
    Where the positions repeat with `period` (records repeating a cycle of lengths end to end), one strided
    write per phase of the cycle, several times faster than the scatter used otherwise."""
    values = np.broadcast_to(np.asarray(values, dtype), positions.shape)
    if period is not None and positions.size > period:
        stride = int(positions[period] - positions[0])
        if stride > 0 and (positions[period:] - positions[:-period] == stride).all():
            for phase in range(period):
                part = np.ascontiguousarray(values[phase::period])
                words = np.ndarray(part.shape, dtype, buffer=target, offset=int(positions[phase]), strides=(stride,))
                words[...] = part
            return
    np.ndarray((len(target) - np.dtype(dtype).itemsize + 1,), dtype, buffer=target, strides=(1,))[positions] = values


def _headers_ok(buf: Buffer, starts: np.ndarray, lengths: np.ndarray, reader: FieldReader) -> np.ndarray:
    """Per record: does its stored length checksum match? A header's CRC depends on the length
    alone, so one CRC per distinct length checks every record exactly."""
    return reader.read(buf.u32, 8) == _per_length(lengths, lambda length: masked_crc(struct.pack("<Q", length)))


def _records_ok(buf: Buffer, starts: np.ndarray, lengths: np.ndarray, crc_at: np.ndarray) -> np.ndarray:
    """Record-by-record check of records whose group failed; only runs on damaged files."""
    raw = buf.raw
    return np.array([masked_crc(raw[s:s + n]) == _u32(raw, c)[0]
                     for s, n, c in zip(starts.tolist(), lengths.tolist(), crc_at.tolist())], dtype=bool)


def _checked(buf: Buffer, reader: FieldReader, lengths: np.ndarray, scratch: bytearray) -> np.ndarray:
    """Which records' data match their stored masked CRC (`reader`: over the records' header starts): folded
    first, one by one only on failure."""
    starts = reader.starts + HEADER
    ok = _fold_ok(buf, starts, lengths, reader.read(buf.u32, HEADER + lengths), scratch, reader.period)
    if not ok.all():
        suspects = np.flatnonzero(~ok)
        ok[suspects] = _records_ok(buf, starts[suspects], lengths[suspects], starts[suspects] + lengths[suspects])
    return ok


def _resync(buf: Buffer, start: int) -> int | None:
    """The first offset at or after `start` where a record header checks out, or None."""
    window = 1 << 20
    for chunk_start in range(start, buf.size - HEADER + 1, window):
        positions = np.arange(chunk_start, min(chunk_start + window, buf.size - HEADER + 1), dtype=np.int64)
        # Candidates: a length below 16 MiB that fits in the file, with a non-zero checksum
        # (which rules out runs of zero padding); only they get a real CRC check.
        lengths = buf.u64[positions]
        positions = positions[(lengths < (1 << 24)) & (positions + HEADER + lengths.astype(np.int64) + FOOTER
                                                        <= buf.size) & (buf.u32[positions + 8] != 0)]
        for pos in positions.tolist():
            if masked_crc(buf.raw[pos:pos + 8]) == _u32(buf.raw, pos + 8)[0]:
                return pos
    return None


def _verified(buf: Buffer, starts: np.ndarray, lengths: np.ndarray, data_starts: list, data_lengths: list,
              damage: list, scratch: bytearray) -> int | None:
    """Append the data starts and lengths of the walked records whose checksums hold (checked a slice at a
    time: the temporaries of 65,536 records stay in the CPU's cache); the offset of a bad length checksum,
    else None.

    A bad length checksum means the framing went wrong there: what follows in this walk is suspect, so
    the records before it are kept and the caller resynchronises after it."""
    keep = None  # which records to keep, once one is damaged
    cut, bad_from = starts.size, None
    for first in range(0, starts.size, _VERIFY_AT_ONCE):
        some_starts, some_lengths = starts[first:first + _VERIFY_AT_ONCE], lengths[first:first + _VERIFY_AT_ONCE]
        reader = FieldReader(buf, some_starts, some_lengths)
        head_ok = _headers_ok(buf, some_starts, some_lengths, reader)
        if not head_ok.all():
            first_bad = int(np.argmin(head_ok))
            bad_from, cut = int(some_starts[first_bad]), first + first_bad
            some_starts, some_lengths = some_starts[:first_bad], some_lengths[:first_bad]
            reader = FieldReader(buf, some_starts, some_lengths)
        data_ok = _checked(buf, reader, some_lengths, scratch)
        if not data_ok.all():
            for bad in np.flatnonzero(~data_ok).tolist():
                damage.append((int(some_starts[bad]), "record data checksum mismatch; record skipped"))
            keep = np.ones(starts.size, bool) if keep is None else keep
            keep[first:first + data_ok.size] = data_ok
        if bad_from is not None:
            break
    # The usual file: every record kept, passed on without a copy per slice.
    starts, lengths = starts[:cut], lengths[:cut]
    if keep is not None:
        starts, lengths = starts[keep[:cut]], lengths[keep[:cut]]
    data_starts.append(starts + HEADER)
    data_lengths.append(lengths)
    return bad_from


def frame(buf: Buffer, verify: bool = True) -> Records:
    """Every intact record of the buffer; damaged stretches are skipped and reported."""
    all_starts: list[np.ndarray] = []
    all_lengths: list[np.ndarray] = []
    damage: list[tuple[int, str]] = []
    scratch = bytearray()  # _fold_ok's copies of records
    pos = 0
    while True:
        starts, lengths, stop = walk(buf, pos)
        bad_from = None
        if verify:
            bad_from = _verified(buf, starts, lengths, all_starts, all_lengths, damage, scratch)
        else:
            all_starts.append(starts + HEADER)
            all_lengths.append(lengths)
        if bad_from is None and stop < buf.size:
            header_intact = stop + HEADER > buf.size or masked_crc(buf.raw[stop:stop + 8]) == _u32(buf.raw, stop + 8)[0]
            # A length running past the end with an intact record after it is damage, not the end
            # of the file: a record still being written is the last one, with nothing whole after it.
            resumed = _resync(buf, stop + 1) if header_intact and stop + HEADER <= buf.size else None
            if resumed is not None:
                damage.append((stop, f"record length {_u64(buf.raw, stop)[0]} runs past the end of the file; "
                                     f"skipped {resumed - stop} bytes, resumed at offset {resumed}"))
                pos = resumed
                continue
            if header_intact or not verify:
                damage.append((stop, f"truncated record: the file ends {buf.size - stop} bytes into it "
                                     "(still being written, or cut short)"))
            else:
                bad_from = stop
        if bad_from is None:
            break
        resumed = _resync(buf, bad_from + 1)
        if resumed is None:
            damage.append((bad_from, f"record header checksum mismatch; no intact record after it "
                                     f"({buf.size - bad_from} bytes skipped)"))
            break
        damage.append((bad_from, f"record header checksum mismatch; skipped {resumed - bad_from} bytes, "
                                 f"resumed at offset {resumed}"))
        pos = resumed
    if not all_starts:
        return Records(np.zeros(0, np.int64), np.zeros(0, np.int64), damage)
    if len(all_starts) == 1:  # one walk, the usual file: no joining copy
        return Records(all_starts[0], all_lengths[0], damage)
    return Records(np.concatenate(all_starts), np.concatenate(all_lengths), damage)
