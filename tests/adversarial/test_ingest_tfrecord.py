"""A TFRecord header that claims 2^60 bytes with a valid checksum, mid-file: damage to resynchronise after, not the end."""

from __future__ import annotations

import struct

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2

from lrdiag.ingest.tfevents import read_files
from lrdiag.ingest.tfrecord import masked_crc


def record(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc(length)) + payload + struct.pack("<I", masked_crc(payload))


def scalar(step: int, value: float) -> bytes:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="loss", simple_value=value)])
    return record(event_pb2.Event(step=step, wall_time=1.0, summary=summary).SerializeToString())


def huge_header() -> bytes:
    length = struct.pack("<Q", 1 << 60)
    return length + struct.pack("<I", masked_crc(length))  # a valid header checksum


def test_a_length_past_the_end_mid_file_is_resynchronised_and_every_later_point_kept(tmp_path, bound):
    steps = 20_000
    before = b"".join(scalar(step, 1.0 / (step + 1)) for step in range(steps // 2))
    after = b"".join(scalar(step, 1.0 / (step + 1)) for step in range(steps // 2, steps))
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(before + huge_header() + b"garbage" + after)
    with bound(seconds=20, megabytes=64):
        result = read_files([path])
    np.testing.assert_array_equal(result.series["loss"].steps, np.arange(steps))
    [problem] = result.problems
    assert problem.where == f"offset {len(before)}"
    assert problem.message == (f"record length {1 << 60} runs past the end of the file; "
                               f"skipped 19 bytes, resumed at offset {len(before) + 19}")


def test_a_last_record_still_being_written_stays_truncated_after_every_whole_record(tmp_path):
    whole = b"".join(scalar(step, 0.5) for step in range(100))
    partial = scalar(100, 0.5)[:-7]
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(whole + partial)
    result = read_files([path])
    np.testing.assert_array_equal(result.series["loss"].steps, np.arange(100))
    [problem] = result.problems
    assert problem.where == f"offset {len(whole)}"
    assert problem.message.startswith(f"truncated record: the file ends {len(partial)} bytes into it")
    # a huge length at the very end, nothing whole after it: truncated too
    path.write_bytes(whole + huge_header() + b"x" * 50)
    [problem] = read_files([path]).problems
    assert problem.message.startswith("truncated record")
