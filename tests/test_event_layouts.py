"""The event reader's two numpy decoders of scalar records (the fixed-layout one for short tags and small
steps, the general one that walks the varints) against protobuf, on every layout a writer can produce."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from lrdiag.ingest import tfevents
from lrdiag.ingest.tfrecord import Buffer, frame

STEPS = [0, 1, 127, 128, 16_383, 16_384, 2**49 - 1, 2**49, 2**62, -1, -(2**63)]
TAG_LENGTHS = [0, 1, 7, 8, 9, 16, 117, 118, 119, 120, 200, 300]


def scalar_record(step: int, tag: str, value: float, wall_time: float = 1.5) -> bytes:
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])).SerializeToString()


def write(path: Path, records: list[bytes]) -> Path:
    with open(path, "wb") as handle:
        writer = RecordWriter(handle)
        for record in records:
            writer.write(record)
    return path


def decoded(records: list[bytes]):
    """Both decoders over the same framed records: (short one's columns, general one's columns)."""
    raw = b""
    for record in records:
        raw += struct.pack("<Q", len(record)) + bytes(4) + record + bytes(4)
    buf = Buffer.from_bytes(raw)
    framed = frame(buf, verify=False)
    return (tfevents._short_scalars(buf, framed.data_starts, framed.lengths),
            tfevents._fast_scalars(buf, framed.data_starts, framed.lengths), buf)


def assert_short_agrees_with_general(records: list[bytes]) -> np.ndarray:
    """Wherever the fixed-layout decoder accepts a record the general one accepts it too, with the same
    step, wall time, value bits and tag; returns which records the short one accepted."""
    (short_ok, *short), (general_ok, *general), _ = decoded(records)
    assert not (short_ok & ~general_ok).any()
    for mine, theirs in zip(short, general):
        np.testing.assert_array_equal(mine[short_ok].view(np.uint8), theirs[short_ok].view(np.uint8))
    return short_ok


def test_every_step_and_tag_length_reads_as_protobuf_wrote_it(tmp_path):
    """Steps at every varint length boundary (negative ones are 10 bytes long) and tags around the
    one-byte size limit (118 bytes: the summary's size varint turns two bytes long past it). A file
    version first, as writers write it, so that steps going back purge nothing."""
    expected = {}
    records = [event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString()]
    for length in TAG_LENGTHS:
        tag = ("t" * length) if length else ""
        for index, step in enumerate(STEPS):
            value = float(np.float32(length + index / 8))
            records.append(scalar_record(step, tag, value))
            expected.setdefault(tag, []).append((step, value))
    result = tfevents.read_files([write(tmp_path / "events.out.tfevents.1.layouts", records)])
    assert result.problems == []
    assert sorted(result.series) == sorted(expected)
    for tag, points in expected.items():
        series = result.series[tag]
        np.testing.assert_array_equal(series.steps, [step for step, _ in points])
        np.testing.assert_array_equal(series.values, [value for _, value in points])
        np.testing.assert_array_equal(series.wall_times, np.full(len(points), 1.5))


def test_fixed_layout_decoder_takes_short_tags_and_small_steps_and_leaves_the_rest():
    records = [scalar_record(step, "t" * length, 1.0) for length in TAG_LENGTHS for step in STEPS]
    short_ok = assert_short_agrees_with_general(records)
    # An empty tag is left out of the record (protobuf's default), a layout the general decoder takes.
    takes = [0 <= step < 2**49 and 0 < length <= 118 for length in TAG_LENGTHS for step in STEPS]
    assert short_ok.tolist() == takes


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fixed_layout_decoder_never_disagrees_with_the_general_one_on_odd_or_damaged_records(data):
    """Random steps, tags and values, some records with a byte changed, inserted or dropped, a wall time
    or step left out, or an extra field: the fast decoder may decline a record, never read it differently."""
    records = []
    for _ in range(data.draw(st.integers(1, 12), label="records")):
        step = data.draw(st.one_of(st.integers(0, 300), st.integers(-(2**63), 2**63 - 1)), label="step")
        tag = data.draw(st.text(max_size=130), label="tag")
        event = event_pb2.Event(wall_time=data.draw(st.sampled_from([0.0, 1.5, 1e9])), step=step)
        event.summary.value.add(tag=tag, simple_value=data.draw(st.floats(width=32)))
        if data.draw(st.booleans(), label="extra field"):
            event.summary.value[0].node_name = "node"
        record = bytearray(event.SerializeToString())
        damage = data.draw(st.sampled_from(["none", "flip", "insert", "drop"]), label="damage")
        if damage != "none" and record:
            where = data.draw(st.integers(0, len(record) - 1), label="where")
            if damage == "flip":
                record[where] ^= 1 << data.draw(st.integers(0, 7), label="bit")
            elif damage == "insert":
                record[where:where] = data.draw(st.binary(min_size=1, max_size=3), label="inserted")
            else:
                del record[where]
        records.append(bytes(record))
    assert_short_agrees_with_general(records)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_strided_field_reads_equal_gathers_whatever_the_records_lengths_and_order(data):
    """FieldReader reads a word at a distance from each record's start with strided copies when the records
    repeat a cycle of lengths end to end; on any records (cycles, a length change, a record missing, few
    records) and any distances (constant, per record, past the file's end) it returns what a gather does."""
    from lrdiag.ingest.tfrecord import FOOTER, HEADER, FieldReader

    cycle = data.draw(st.lists(st.integers(0, 40), min_size=1, max_size=6), label="cycle of lengths")
    count = data.draw(st.integers(1, 400), label="records")
    lengths = [cycle[index % len(cycle)] for index in range(count)]
    if data.draw(st.booleans(), label="a length changes"):
        lengths[data.draw(st.integers(0, count - 1))] += 1
    raw = b"".join(struct.pack("<Q", length) + bytes(4) + bytes(np.random.default_rng(length).integers(
        0, 256, length, dtype=np.uint8)) + bytes(FOOTER) for length in lengths)
    buf = Buffer.from_bytes(raw)
    framed = frame(buf, verify=False)
    starts, lengths_read = framed.data_starts, framed.lengths
    if data.draw(st.booleans(), label="a record left out") and starts.size > 1:
        keep = np.ones(starts.size, bool)
        keep[data.draw(st.integers(0, starts.size - 1))] = False
        starts, lengths_read = starts[keep], lengths_read[keep]
    reader = FieldReader(buf, starts, lengths_read)
    for view in (buf.u8, buf.u32, buf.u64):
        for distance in (0, 3, -HEADER, lengths_read - 4, lengths_read + 30, np.arange(starts.size) % 3):
            np.testing.assert_array_equal(reader.read(view, distance), view[buf.clip(starts + distance)])


def test_records_repeating_a_cycle_of_lengths_are_read_strided_and_others_are_not():
    from lrdiag.ingest.tfrecord import FieldReader

    records = [scalar_record(step, tag, 1.0) for step in range(200, 300) for tag in ("loss", "lr", "val/acc")]
    buf = Buffer.from_bytes(b"".join(struct.pack("<Q", len(r)) + bytes(4) + r + bytes(4) for r in records))
    framed = frame(buf, verify=False)
    assert FieldReader(buf, framed.data_starts, framed.lengths).period == 3
    assert FieldReader(buf, framed.data_starts[1:], framed.lengths[1:]).period == 3  # any phase first
    keep = np.arange(framed.data_starts.size) != 150  # a record left out: no longer end to end
    assert FieldReader(buf, framed.data_starts[keep], framed.lengths[keep]).period is None
    assert FieldReader(buf, framed.data_starts[:100], framed.lengths[:100]).period is None  # too few to tell


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_walk_finds_the_records_a_one_by_one_walk_finds(data):
    """The walk guesses thousands of records at once from a cycle of lengths and checks the guesses' length
    fields in strided views; it must frame exactly what following the length fields one by one frames, where
    the cycle breaks, the lengths change, the file is cut or a length field is garbage."""
    from lrdiag.ingest.tfrecord import FOOTER, HEADER, walk

    cycle = data.draw(st.lists(st.integers(0, 30), min_size=1, max_size=5), label="cycle of lengths")
    count = data.draw(st.integers(0, 3000), label="records")
    lengths = [cycle[index % len(cycle)] for index in range(count)]
    for _ in range(data.draw(st.integers(0, 3), label="changes")):
        if lengths:
            lengths[data.draw(st.integers(0, len(lengths) - 1))] = data.draw(st.integers(0, 40))
    raw = bytearray(b"".join(struct.pack("<Q", length) + bytes(HEADER - 8 + length + FOOTER) for length in lengths))
    if raw and data.draw(st.booleans(), label="garbage length"):
        where = data.draw(st.integers(0, len(raw) - 1))
        raw[where] = data.draw(st.integers(1, 255))
    raw = bytes(raw[:data.draw(st.integers(0, len(raw)), label="cut")])
    expected_starts, pos = [], 0
    while pos + HEADER <= len(raw):
        length = struct.unpack_from("<Q", raw, pos)[0]
        if pos + HEADER + length + FOOTER > len(raw):
            break
        expected_starts.append(pos)
        pos += HEADER + length + FOOTER
    starts, found_lengths, stop = walk(Buffer.from_bytes(raw), 0)
    assert starts.tolist() == expected_starts
    assert found_lengths.tolist() == [struct.unpack_from("<Q", raw, start)[0] for start in expected_starts]
    assert stop == pos


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(range(5)), cycles=st.integers(1, 50), broken=st.booleans())
def test_points_split_by_tag_the_same_whether_the_tags_repeat_in_a_cycle_or_not(order, cycles, broken):
    """Tags logged in one order at every step are split by striding; any other order by masks: same series."""
    tag_id = np.tile(np.array(order), cycles)
    if broken:
        tag_id[-1] = tag_id[0] if tag_id.size > 1 and tag_id[-1] != tag_id[0] else (tag_id[-1] + 1) % 5
    step = np.arange(tag_id.size, dtype=np.int64) * 3
    wall, value = step / 7.0, np.sqrt(step)
    names = ["loss", "lr", "val/loss", "val/acc", "grad"]
    result = tfevents._split_by_tag(tag_id, step, wall, value, names)
    for tid, name in enumerate(names):
        rows = np.flatnonzero(tag_id == tid)
        if not rows.size:
            assert name not in result
            continue
        np.testing.assert_array_equal(result[name].steps, step[rows])
        np.testing.assert_array_equal(result[name].values, value[rows])
        np.testing.assert_array_equal(result[name].wall_times, wall[rows])
    assert list(result) == [name for tid, name in enumerate(names) if (tag_id == tid).any()]
