"""TensorBoard event reader: agreement with tbparse / EventAccumulator, round trips, restarts, damage."""

from __future__ import annotations

import math
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter

from lrdiag.ingest.tfevents import read_files

REAL_LOGS = Path(__file__).parents[2] / "shared" / "real_logs"
REAL_TFEVENTS = REAL_LOGS / "tfevents"
REAL_FOLDERS = sorted(p.name for p in REAL_TFEVENTS.iterdir()) if REAL_TFEVENTS.is_dir() else ["(absent)"]
DAMAGE_SETTINGS = settings(max_examples=150, deadline=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture])


def real_folder(name: str) -> Path:
    """A run folder of the shared real logs, read in place; skips when they are absent."""
    if not REAL_TFEVENTS.is_dir():
        pytest.skip(f"{REAL_LOGS} is absent")
    return REAL_TFEVENTS / name


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*tfevents*"))


def scalar_event(step: int, tag: str, value: float) -> event_pb2.Event:
    return event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)]))


def accumulator(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def tbparse_points(folder: Path) -> dict[str, np.ndarray]:
    """tbparse's scalars plus its one-element tensors, as sorted (step, value) rows per tag."""
    import pandas as pd
    from tbparse import SummaryReader

    reader = SummaryReader(str(folder), pivot=False)
    frames = [reader.scalars[["tag", "step", "value"]]] if len(reader.scalars) else []
    tensors = reader.tensors
    if len(tensors):
        scalar_rows = tensors["value"].map(lambda value: np.size(value) == 1)
        scalars = tensors[scalar_rows][["tag", "step"]].copy()
        scalars["value"] = [float(np.asarray(value).reshape(-1)[0]) for value in tensors[scalar_rows]["value"]]
        frames.append(scalars)
    table = pd.concat(frames)
    return {tag: np.array(sorted(zip(group.step.tolist(), group.value.tolist())), dtype=np.float64).reshape(-1, 2)
            for tag, group in table.groupby("tag")}


def sorted_points(series) -> np.ndarray:
    return np.array(sorted(zip(series.steps.tolist(), series.values.tolist())), dtype=np.float64).reshape(-1, 2)


# --- real logs, read in place -------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_FOLDERS)
def test_real_log_points_per_tag_equal_tbparse_scalars_and_scalar_tensors(name):
    folder = real_folder(name)
    result = read_files(event_files(folder))
    expected = tbparse_points(folder)
    assert result.problems == []
    assert {tag: len(one) for tag, one in result.series.items()} == {tag: len(rows) for tag, rows in expected.items()}
    for tag, rows in expected.items():
        got = sorted_points(result.series[tag])
        np.testing.assert_array_equal(got[:, 0], rows[:, 0], err_msg=tag)
        np.testing.assert_allclose(got[:, 1], rows[:, 1], rtol=1e-6, atol=0, equal_nan=True, err_msg=tag)


@pytest.mark.parametrize("name", ["FRMiner-Training-Results__log_train",
                                  "Kaggle_Predict_Customer_Churn__catboost_test"])
def test_real_v1_log_points_equal_event_accumulator_without_sampling(name):
    folder = real_folder(name)
    result = read_files(event_files(folder))
    acc = accumulator(folder)
    tags = acc.Tags()["scalars"]
    assert sorted(result.series) == sorted(tags)
    for tag in tags:
        events = acc.Scalars(tag)
        np.testing.assert_array_equal(result.series[tag].steps, [e.step for e in events])
        np.testing.assert_array_equal(result.series[tag].values, np.float32([e.value for e in events]))
        np.testing.assert_array_equal(result.series[tag].wall_times, [e.wall_time for e in events])


def test_tf2_tensor_scalars_are_read_and_image_tensors_are_not():
    train = read_files(event_files(real_folder("TFODCourse__train")))
    assert {"Loss/total_loss", "Loss/localization_loss", "learning_rate", "steps_per_sec"} <= set(train.series)
    assert "train_input_images" not in train.series
    assert all(len(one) > 0 for one in train.series.values())
    evaluation = read_files(event_files(real_folder("TFODCourse__eval")))
    assert "DetectionBoxes_Precision/mAP" in evaluation.series
    assert not [tag for tag in evaluation.series if tag.startswith("eval_side_by_side")]


def test_event_file_with_only_a_file_version_reads_with_no_points_and_no_problem():
    folder = real_folder("TFODCourse__train")
    tiny = [path for path in event_files(folder) if path.stat().st_size == 40]
    assert len(tiny) == 1
    result = read_files(tiny)
    assert result.series == {}
    assert result.problems == []


def test_two_real_event_files_of_one_run_are_merged():
    folder = real_folder("TFODCourse__train")
    files = event_files(folder)
    assert len(files) == 2
    merged = read_files(files[::-1])  # the reader orders them by name itself
    alone = read_files([max(files, key=lambda path: path.stat().st_size)])
    assert merged.problems == []
    assert sorted(merged.series) == sorted(alone.series)
    for tag, one in alone.series.items():
        np.testing.assert_array_equal(merged.series[tag].steps, one.steps)
        np.testing.assert_array_equal(merged.series[tag].values, one.values)


# --- round trips with the real writer -----------------------------------------------------------

ROUND_TRIP_STEPS = [0, 1, 2, 7, 2**31 - 1, 2**31, 2**31 + 5, 2**40, 2**62]
ROUND_TRIP_VALUES = [0.0, -1.5, 1 / 3, 1.0000000001, float("nan"), float("inf"), float("-inf"), 3.0e38, -2.5e-40]
ROUND_TRIP_TAGS = ["loss", "train/loss", "损失/训练", "Ünïcode tag with spaces", "a" * 200]


def expected_value(value: float, number: int) -> float:
    """Each tag gets its own multiple of the value, so that tags cannot be mixed up unseen."""
    return value * (number + 1) if math.isfinite(value) else value


def write_with_summary_writer(folder: Path, new_style: bool) -> tuple[float, float]:
    from torch.utils.tensorboard import SummaryWriter

    before = time.time()
    writer = SummaryWriter(str(folder))
    for step, value in zip(ROUND_TRIP_STEPS, ROUND_TRIP_VALUES):
        for number, tag in enumerate(ROUND_TRIP_TAGS):
            writer.add_scalar(tag, expected_value(value, number), step, new_style=new_style)
    writer.close()
    return before, time.time()


def stored_summaries(path: Path) -> list[event_pb2.Event]:
    """Every event with a summary, framed by hand (the file is intact)."""
    raw = path.read_bytes()
    events, pos = [], 0
    while pos < len(raw):
        length = struct.unpack_from("<Q", raw, pos)[0]
        event = event_pb2.Event.FromString(raw[pos + 12:pos + 12 + length])
        if event.HasField("summary"):
            events.append(event)
        pos += 16 + length
    return events


def test_summary_writer_simple_values_read_back_as_float32_with_exact_int64_steps(tmp_path):
    before, after = write_with_summary_writer(tmp_path, new_style=False)
    result = read_files(event_files(tmp_path))
    assert result.problems == []
    assert sorted(result.series) == sorted(ROUND_TRIP_TAGS)
    for number, tag in enumerate(ROUND_TRIP_TAGS):
        one = result.series[tag]
        assert one.steps.dtype == np.int64
        np.testing.assert_array_equal(one.steps, np.array(ROUND_TRIP_STEPS, np.int64))
        expected = np.float32([expected_value(value, number) for value in ROUND_TRIP_VALUES]).astype(np.float64)
        np.testing.assert_array_equal(one.values, expected)
        assert ((one.wall_times >= before - 1) & (one.wall_times <= after + 1)).all()
    # float64 precision is lost as float32 would lose it, not more or less
    assert result.series["loss"].values[3] == float(np.float32(1.0000000001)) == 1.0
    assert result.series["loss"].values[2] != 1 / 3


def test_summary_writer_new_style_tensors_read_back_as_the_float32_the_writer_stored(tmp_path):
    before, after = write_with_summary_writer(tmp_path, new_style=True)
    [path] = event_files(tmp_path)
    stored: dict[str, list[tuple[int, float]]] = {}
    for event in stored_summaries(path):
        for item in event.summary.value:
            assert item.WhichOneof("value") == "tensor"
            assert item.tensor.dtype == 1  # DT_FLOAT: the writer keeps float32 only
            stored.setdefault(item.tag, []).append((event.step, item.tensor.float_val[0]))
    result = read_files([path])
    assert result.problems == []
    assert sorted(result.series) == sorted(ROUND_TRIP_TAGS)
    for number, tag in enumerate(ROUND_TRIP_TAGS):
        one = result.series[tag]
        np.testing.assert_array_equal(one.steps, [step for step, _ in stored[tag]])
        np.testing.assert_array_equal(one.steps, np.array(ROUND_TRIP_STEPS, np.int64))
        np.testing.assert_array_equal(one.values, [value for _, value in stored[tag]])
        expected = np.float32([expected_value(value, number) for value in ROUND_TRIP_VALUES]).astype(np.float64)
        np.testing.assert_array_equal(one.values, expected)
        assert ((one.wall_times >= before - 1) & (one.wall_times <= after + 1)).all()


def test_two_summary_writer_files_in_one_folder_merge_in_file_name_order(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    for part, steps in enumerate((range(0, 10), range(10, 20))):
        writer = SummaryWriter(str(tmp_path), filename_suffix=f".part{part}")
        for step in steps:
            writer.add_scalar("loss", float(step), step)
        writer.close()
    files = event_files(tmp_path)
    assert len(files) == 2
    result = read_files(files[::-1])
    np.testing.assert_array_equal(result.series["loss"].steps, np.arange(20))
    acc = accumulator(tmp_path)
    assert len(acc.Scalars("loss")) == 20


# --- restarts -----------------------------------------------------------------------------------


def test_session_log_start_replaces_earlier_points_at_or_after_its_step_like_event_accumulator(tmp_path):
    writer = EventFileWriter(str(tmp_path))  # writes file_version "brain.Event:2" first
    for step in range(100):
        writer.add_event(scalar_event(step, "loss", float(step)))
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=50,
                                     session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    for step in range(50, 80):
        writer.add_event(scalar_event(step, "loss", 1000.0 + step))
    writer.close()
    result = read_files(event_files(tmp_path))
    loss = result.series["loss"]
    np.testing.assert_array_equal(loss.steps, np.arange(80))
    np.testing.assert_array_equal(loss.values, np.concatenate([np.arange(50.0), 1000.0 + np.arange(50, 80)]))
    assert any("restart" in note for note in result.notes)
    assert result.problems == []
    events = accumulator(tmp_path).Scalars("loss")
    np.testing.assert_array_equal(loss.steps, [e.step for e in events])
    np.testing.assert_array_equal(loss.values, [e.value for e in events])


def test_steps_going_back_without_file_version_purge_that_tags_later_points_like_event_accumulator(tmp_path):
    path = tmp_path / "events.out.tfevents.1.legacy"
    with open(path, "wb") as handle:
        writer = RecordWriter(handle)  # no file_version record: EventAccumulator's legacy rule
        for step in range(10):
            writer.write(scalar_event(step, "a", float(step)).SerializeToString())
            writer.write(scalar_event(step, "b", float(step)).SerializeToString())
        for step in range(5, 8):
            writer.write(scalar_event(step, "a", 100.0 + step).SerializeToString())
        writer.flush()
    result = read_files([path])
    np.testing.assert_array_equal(result.series["a"].steps, [0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(result.series["a"].values, [0, 1, 2, 3, 4, 105, 106, 107])
    np.testing.assert_array_equal(result.series["b"].steps, np.arange(10))  # the other tag is untouched
    assert any("steps go back to 5" in note for note in result.notes)
    acc = accumulator(tmp_path)
    for tag in ("a", "b"):
        events = acc.Scalars(tag)
        np.testing.assert_array_equal(result.series[tag].steps, [e.step for e in events])
        np.testing.assert_array_equal(result.series[tag].values, [e.value for e in events])


# --- damage -------------------------------------------------------------------------------------


class Intact:
    """A real-writer file and, per record, where it lies and which points it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw = path.read_bytes()
        self.starts, self.ends, self.points = [], [], []
        pos = 0
        while pos < len(self.raw):
            length = struct.unpack_from("<Q", self.raw, pos)[0]
            event = event_pb2.Event.FromString(self.raw[pos + 12:pos + 12 + length])
            self.starts.append(pos)
            self.ends.append(pos + 16 + length)
            self.points.append([(item.tag, event.step, float(np.float32(item.simple_value)))
                                for item in event.summary.value])
            pos += 16 + length

    def points_where(self, keep) -> set:
        return {point for start, end, points in zip(self.starts, self.ends, self.points) if keep(start, end)
                for point in points}

    def record_at(self, offset: int) -> int:
        """Index of the record holding this byte."""
        return max(index for index, start in enumerate(self.starts) if start <= offset)


def points_of(result) -> set:
    return {(tag, int(step), float(value)) for tag, one in result.series.items()
            for step, value in zip(one.steps.tolist(), one.values.tolist())}


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> Intact:
    from torch.utils.tensorboard import SummaryWriter

    folder = tmp_path_factory.mktemp("intact")
    writer = SummaryWriter(str(folder))
    rng = np.random.default_rng(7)
    for step in range(100):
        writer.add_scalar("loss", float(rng.normal()), step)
        writer.add_scalar("lr", 1e-3 * 0.99**step, step)
        writer.add_scalar("accuracy/validation", float(rng.uniform()), step * 1000)
    writer.close()
    [path] = event_files(folder)
    return Intact(path)


@pytest.fixture(scope="module")
def damaged_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("damaged") / "events.out.tfevents.1.damaged"


def test_intact_file_reads_every_point_without_problems_and_identically_without_verify(intact):
    checked = read_files([intact.path])
    assert checked.problems == []
    assert points_of(checked) == intact.points_where(lambda start, end: True)
    assert sum(len(one) for one in checked.series.values()) == 300
    unchecked = read_files([intact.path], verify=False)
    assert unchecked.problems == [] and unchecked.notes == checked.notes
    assert list(unchecked.series) == list(checked.series)
    for tag, one in checked.series.items():
        np.testing.assert_array_equal(unchecked.series[tag].steps, one.steps)
        np.testing.assert_array_equal(unchecked.series[tag].values, one.values)
        np.testing.assert_array_equal(unchecked.series[tag].wall_times, one.wall_times)


@DAMAGE_SETTINGS
@given(data=st.data())
def test_truncation_keeps_every_record_before_the_cut_and_names_the_offset(intact, damaged_path, data):
    cut = data.draw(st.integers(0, len(intact.raw)), label="cut")
    damaged_path.write_bytes(intact.raw[:cut])
    result = read_files([damaged_path])
    assert points_of(result) == intact.points_where(lambda start, end: end <= cut)
    if cut == 0:
        assert [p.message for p in result.problems if "empty" in p.message]
    elif cut in intact.ends:
        assert result.problems == []
    else:
        [problem] = result.problems
        assert "truncated" in problem.message
        assert problem.file == str(damaged_path)
        assert problem.where == f"offset {intact.starts[intact.record_at(cut)]}"


@DAMAGE_SETTINGS
@given(data=st.data())
def test_flipped_bytes_keep_records_before_the_damage_and_never_yield_damaged_values(intact, damaged_path, data):
    size = len(intact.raw)
    offsets = data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=4, unique=True), label="offsets")
    deltas = data.draw(st.lists(st.integers(1, 255), min_size=len(offsets), max_size=len(offsets)), label="deltas")
    raw = bytearray(intact.raw)
    for offset, delta in zip(offsets, deltas):
        raw[offset] ^= delta
    damaged_path.write_bytes(bytes(raw))
    result = read_files([damaged_path])
    first = min(offsets)
    got = points_of(result)
    assert intact.points_where(lambda start, end: end <= first) <= got
    assert got <= intact.points_where(lambda start, end: True)  # nothing from a damaged record
    assert result.problems
    assert all(p.file == str(damaged_path) and p.where.startswith("offset ") for p in result.problems)
    assert min(int(p.where.split()[1]) for p in result.problems) == intact.starts[intact.record_at(first)]


@DAMAGE_SETTINGS
@given(data=st.data())
def test_identical_damage_in_several_equal_length_records_is_still_caught(intact, damaged_path, data):
    # Checksums checked a group at a time must not let equal errors in two records cancel out.
    lengths = np.array(intact.ends) - np.array(intact.starts)
    shared = sorted(int(n) for n in set(lengths.tolist()) if (lengths == n).sum() >= 2)
    length = data.draw(st.sampled_from(shared), label="record length")
    same_length = np.flatnonzero(lengths == length).tolist()
    records = data.draw(st.lists(st.sampled_from(same_length), min_size=2, max_size=4, unique=True), label="records")
    offset = data.draw(st.integers(0, length - 1), label="offset in record")
    delta = data.draw(st.integers(1, 255), label="delta")
    raw = bytearray(intact.raw)
    for record in records:
        raw[intact.starts[record] + offset] ^= delta
    damaged_path.write_bytes(bytes(raw))
    result = read_files([damaged_path])
    got = points_of(result)
    assert got <= intact.points_where(lambda start, end: True)
    assert intact.points_where(lambda start, end: end <= intact.starts[min(records)]) <= got
    assert len(result.problems) >= 1


def test_garbage_that_repeats_a_records_first_byte_leaves_the_record_readable(intact, damaged_path):
    # Found by the property test below: one byte equal to a record's first byte, inserted just
    # after it, leaves the whole record intact one byte on; reading it there loses nothing.
    record = len(intact.starts) // 2
    start = intact.starts[record]
    damaged_path.write_bytes(intact.raw[:start + 1] + intact.raw[start:start + 1] + intact.raw[start + 1:])
    result = read_files([damaged_path])
    assert points_of(result) == intact.points_where(lambda start, end: True)
    assert [p.where for p in result.problems] == [f"offset {start}"]


@DAMAGE_SETTINGS
@given(data=st.data())
def test_inserted_garbage_is_skipped_and_reading_resumes_after_it(intact, damaged_path, data):
    size = len(intact.raw)
    at = data.draw(st.integers(size // 4, 3 * size // 4), label="insert at")
    garbage = data.draw(st.binary(min_size=1, max_size=64), label="garbage")
    damaged = intact.raw[:at] + garbage + intact.raw[at:]
    damaged_path.write_bytes(damaged)
    result = read_files([damaged_path])
    got = points_of(result)
    before = intact.points_where(lambda start, end: end <= at)
    after = intact.points_where(lambda start, end: start >= at)
    # The record the garbage split is lost, unless its bytes still stand whole in the file: garbage
    # that repeats the record's first bytes leaves an intact copy just after it, rightly read.
    split = intact.points_where(lambda start, end: start < at < end and intact.raw[start:end] in damaged)
    assert before <= got
    assert after <= got  # resynchronised: every record after the garbage is back
    assert before | after <= got <= before | after | split
    assert any("resumed at offset" in p.message for p in result.problems)
    assert all(p.file == str(damaged_path) for p in result.problems)


def test_empty_event_file_is_a_problem_with_no_points(tmp_path):
    path = tmp_path / "events.out.tfevents.0.empty"
    path.write_bytes(b"")
    result = read_files([path])
    assert result.series == {}
    [problem] = result.problems
    assert "empty" in problem.message and problem.file == str(path)


def test_random_bytes_named_like_an_event_file_are_a_problem_not_an_exception(tmp_path):
    path = tmp_path / "events.out.tfevents.x"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    result = read_files([path])
    assert result.series == {}
    assert result.problems and all(p.file == str(path) for p in result.problems)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_unreadable_event_file_is_a_cannot_read_problem(tmp_path, intact):
    path = tmp_path / "events.out.tfevents.locked"
    path.write_bytes(intact.raw)
    path.chmod(0)
    try:
        result = read_files([path])
    finally:
        path.chmod(0o600)
    assert result.series == {}
    [problem] = result.problems
    assert "cannot read" in problem.message and problem.file == str(path)


def test_folder_named_like_an_event_file_is_a_cannot_read_problem_and_other_files_still_read(tmp_path, intact):
    folder = tmp_path / "events.out.tfevents.0.folder"
    folder.mkdir()
    result = read_files([folder, intact.path])
    assert [p.file for p in result.problems] == [str(folder)]
    assert "cannot read" in result.problems[0].message
    assert points_of(result) == intact.points_where(lambda start, end: True)


def test_same_byte_flipped_in_two_equal_length_records_is_reported_and_their_values_dropped(intact, tmp_path):
    lengths = np.array(intact.ends) - np.array(intact.starts)
    first, second = np.flatnonzero(lengths == lengths[-2])[-3:-1].tolist()
    raw = bytearray(intact.raw)
    for record in (first, second):
        raw[intact.ends[record] - 5] ^= 0x40  # the same bit of the float in both records
    path = tmp_path / "events.out.tfevents.1.twice"
    path.write_bytes(bytes(raw))
    result = read_files([path])
    assert points_of(result) == intact.points_where(lambda start, end: start not in (intact.starts[first],
                                                                                     intact.starts[second]))
    assert sorted(p.where for p in result.problems) == sorted(f"offset {intact.starts[r]}" for r in (first, second))


def test_framing_names_exactly_the_damaged_records_across_checksum_chunks():
    from lrdiag.ingest.tfrecord import HEADER, Buffer, frame

    class Sink:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.parts.append(data)

    sink = Sink()
    writer = RecordWriter(sink)
    count, record_size = 140_000, HEADER + 12 + 4  # more records of one length than one chunk holds
    for index in range(count):
        writer.write(struct.pack("<Qf", index, index / 7))
    raw = bytearray(b"".join(sink.parts))
    damaged = [5, 6, 70_000, count - 1]  # an even number of equal errors, in three chunks
    for record in damaged:
        raw[record * record_size + HEADER + 3] ^= 0x10  # same change, so XOR-style folds would cancel
    records = frame(Buffer.from_bytes(bytes(raw)))
    assert sorted(offset for offset, _ in records.damage) == [record * record_size for record in damaged]
    kept = (records.data_starts - HEADER) // record_size
    np.testing.assert_array_equal(kept, np.setdiff1d(np.arange(count), damaged))
    assert (records.lengths == 12).all()


# ---- the hand decoder of plain events (eventwire) against protobuf --------------------------

SAMPLE_LOGS = Path(__file__).parents[1] / "sample_logs"


def protobuf_plain(data: bytes):
    """What protobuf says of a record, in eventwire.plain_event's shape; 'not an Event' when it raises."""
    from google.protobuf.message import DecodeError

    try:
        event = event_pb2.Event.FromString(data)
    except DecodeError:
        return "not an Event"
    kind = event.WhichOneof("what")
    payload = {"file_version": event.file_version, "session_log": event.session_log.status,
               "summary": [(value.tag, value.simple_value) for value in event.summary.value]}.get(kind)
    return event.wall_time, event.step, kind, payload


def same_event(hand, proto) -> bool:
    """Equal as written out: NaN equals NaN (a diverged run logs NaN), -0.0 differs from 0.0."""
    return repr(hand) == repr(proto)


def every_record(path: Path) -> list[bytes]:
    from lrdiag.ingest.tfrecord import Buffer, frame

    buf = Buffer.from_file(path)
    records = frame(buf)
    return [buf.bytes_at(start, length)
            for start, length in zip(records.data_starts.tolist(), records.lengths.tolist())]


def real_and_sample_event_files() -> list[Path]:
    roots = [SAMPLE_LOGS] + ([REAL_TFEVENTS] if REAL_TFEVENTS.is_dir() else [])
    return sorted(path for root in roots for path in root.rglob("*tfevents*") if path.is_file())


def test_every_plain_record_of_real_and_sample_files_decodes_by_hand_as_protobuf_decodes_it():
    """Every record the hand decoder answers for equals protobuf's reading; the rest (tensors, images,
    hparams) it leaves to protobuf. Real logs are read in place when ../shared is there."""
    from lrdiag.ingest.eventwire import plain_event

    answered = left = 0
    for path in real_and_sample_event_files():
        for data in every_record(path):
            hand = plain_event(data)
            if hand is None:
                left += 1
                continue
            answered += 1
            assert same_event(hand, protobuf_plain(data)), (path, data[:80])
    assert answered > 10_000 and left > 0


@pytest.mark.parametrize("path", real_and_sample_event_files(), ids=lambda path: path.parent.name)
def test_real_and_sample_files_read_the_same_points_with_and_without_the_hand_decoder(path, monkeypatch):
    from lrdiag.ingest import eventwire

    by_hand = read_files([path])
    monkeypatch.setattr(eventwire, "plain_event", lambda data: None)
    by_protobuf = read_files([path])
    assert by_hand.problems == by_protobuf.problems and by_hand.notes == by_protobuf.notes
    assert list(by_hand.series) == list(by_protobuf.series)
    for tag, series in by_hand.series.items():
        other = by_protobuf.series[tag]
        assert np.array_equal(series.steps, other.steps) and np.array_equal(series.wall_times, other.wall_times)
        assert np.array_equal(series.values, other.values, equal_nan=True)


def plain_records() -> list[bytes]:
    """Events of every plain shape, and some near misses: a tensor value, metadata, an unknown field."""
    from tensorboard.compat.proto import tensor_pb2

    value = summary_pb2.Summary.Value
    events = [
        event_pb2.Event(wall_time=1.5, file_version="brain.Event:2",
                        source_metadata=event_pb2.SourceMetadata(writer="tensorboard.summary.writer")),
        event_pb2.Event(wall_time=2.0, step=7, session_log=event_pb2.SessionLog(status=1, checkpoint_path="c")),
        event_pb2.Event(step=-3, session_log=event_pb2.SessionLog(status=3, msg="m")),
        event_pb2.Event(wall_time=3.0, step=2**62, summary=summary_pb2.Summary(value=[
            value(tag="loss", simple_value=0.25, node_name="n"), value(tag="lr", simple_value=float("nan"))])),
        event_pb2.Event(step=1, summary=summary_pb2.Summary()),
        event_pb2.Event(wall_time=4.0),
        event_pb2.Event(step=5, summary=summary_pb2.Summary(value=[value(
            tag="t", tensor=tensor_pb2.TensorProto(dtype=1, float_val=[1.0]))])),
        event_pb2.Event(step=5, summary=summary_pb2.Summary(value=[value(
            tag="t", simple_value=1.0, metadata=summary_pb2.SummaryMetadata(display_name="d"))])),
        event_pb2.Event(step=6, summary=summary_pb2.Summary(value=[value(tag="t")])),
    ]
    records = [event.SerializeToString() for event in events]
    # the same fields in another order, a field repeated, a oneof set twice, an unknown field
    return records + [records[3][9:] + records[3][:9], records[5] + records[5], records[0] + records[4],
                      records[5] + b"\x58\x01"]


def test_hand_decoder_reads_plain_shapes_and_leaves_tensors_metadata_and_odd_layouts_to_protobuf():
    from lrdiag.ingest.eventwire import plain_event

    answers = [plain_event(record) for record in plain_records()]
    assert [answer is not None for answer in answers] == [True] * 6 + [False] * 3 + [True] + [False] * 3
    assert answers[3] == (3.0, 2**62, "summary", [("loss", 0.25), ("lr", answers[3][3][1][1])])
    assert answers[0] == (1.5, 0, "file_version", "brain.Event:2") and answers[2][:2] == (0.0, -3)
    for record, answer in zip(plain_records(), answers):
        assert answer is None or same_event(answer, protobuf_plain(record))


@settings(max_examples=3000, deadline=None)
@given(data=st.data())
def test_hand_decoder_never_disagrees_with_protobuf_on_damaged_or_odd_records(data):
    """Random byte flips, cuts and insertions in plain records: the hand decoder answers as protobuf
    does, or leaves the record to protobuf (None); it never invents a reading."""
    from lrdiag.ingest.eventwire import plain_event

    record = bytearray(data.draw(st.sampled_from(plain_records())))
    for _ in range(data.draw(st.integers(0, 3))):
        where = data.draw(st.integers(0, len(record)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and where < len(record):
            record[where] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del record[where:where + data.draw(st.integers(1, 4))]
        else:
            record[where:where] = data.draw(st.binary(min_size=1, max_size=3))
    hand = plain_event(bytes(record))
    if hand is not None:
        assert same_event(hand, protobuf_plain(bytes(record))), bytes(record)


def raw_scalar_record(tag: bytes, step: int, value: float) -> bytes:
    """A simple_value Event written byte by byte, so that a tag can hold bytes protobuf would refuse."""
    item = b"\x0a" + bytes([len(tag)]) + tag + b"\x15" + struct.pack("<f", value)
    summary = b"\x0a" + bytes([len(item)]) + item
    return b"\x09" + struct.pack("<d", 1.0) + b"\x10" + bytes([step]) + b"\x2a" + bytes([len(summary)]) + summary


def test_tags_with_a_nul_bad_utf8_or_any_script_keep_their_text_with_bad_bytes_replaced(tmp_path):
    """Tag names are decoded for many tags in one call; a NUL or a cut UTF-8 sequence in one must
    neither shift nor merge its neighbours' names."""
    tags = [b"loss", b"a\x00b", b"cut\xe2\x82", "λ/精度".encode(), b"\xff", b"lr"]
    path = tmp_path / "events.out.tfevents.1.tags"
    with open(path, "wb") as handle:
        writer = RecordWriter(handle)
        for step in range(3):
            for index, tag in enumerate(tags):
                writer.write(raw_scalar_record(tag, step, index + step / 10))
    result = read_files([path])
    assert result.problems == []
    assert list(result.series) == [tag.decode("utf-8", "replace") for tag in tags]
    for index, tag in enumerate(tags):
        series = result.series[tag.decode("utf-8", "replace")]
        np.testing.assert_array_equal(series.steps, [0, 1, 2])
        np.testing.assert_array_equal(series.values, np.float32([index, index + 0.1, index + 0.2]))


def test_checksums_use_the_crc32c_c_function_without_importing_the_crc32c_package():
    """The reader loads crc32c's C extension alone (the package's __init__ costs 20-30 ms of start-up):
    same function, same answers, and `import crc32c` still works afterwards."""
    import subprocess
    import sys

    code = ("import sys; from lrdiag.ingest import tfrecord; f = tfrecord.crc32c_function(); "
            "print('crc32c' in sys.modules, f(b'123456789'), f(b'tail', 7)); import crc32c; "
            "print(crc32c.crc32c(b'123456789'), crc32c.crc32c(b'tail', 7))")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    loaded_package, check, chained = lines[0].split()
    assert loaded_package == "False"
    assert lines[1].split() == [check, chained]
    assert int(check) == 0xE3069283  # CRC-32C's standard check value
