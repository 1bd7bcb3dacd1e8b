"""lrdiag watch: logs read while they are written give the findings of `lrdiag analyze` on the same data,
each finding printed once, a half-written record is "not yet", and the command follows a live writer."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lrdiag.config import project_setup
from lrdiag.ingest import csvlog, jsonlog, tfevents
from lrdiag.live.tail import Tail
from lrdiag.live.watcher import Watcher
from lrdiag.pipeline import Options, analyze

SAMPLES = Path(__file__).resolve().parent.parent / "sample_logs"
ROOT = SAMPLES.parent


@pytest.fixture(scope="module")
def setup():
    _, engine, roles = project_setup(None)
    return engine, roles


def _analyzed(folder: Path, engine, roles) -> dict:
    doc = analyze([str(folder)], Options(engine=engine, roles=roles), jobs=1, progress=False)
    return {run["run"]: run["findings"] for run in doc["runs"]}


def _watched(watcher: Watcher) -> dict:
    return {name: [finding.to_dict() for finding in found] for name, found in watcher.findings().items()}


def _whole_records(watcher: Watcher, into: Path, live: Path) -> None:
    """What the watcher's tails hold, written out as files: the data it has judged."""
    shutil.rmtree(into, ignore_errors=True)
    for state in watcher.runs.values():
        for path, tail in state.tails.items():
            if tail.data:
                target = into / path.relative_to(live)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tail.data)


@pytest.mark.parametrize("sample", ["tensorboard", "keras_csv", "lightning_csv", "trainer_state", "detectron2"])
def test_logs_written_piece_by_piece_give_the_findings_of_analyze_at_every_poll(tmp_path, setup, sample):
    engine, roles = setup
    source = SAMPLES / sample
    live = tmp_path / "live"
    files = {path: path.read_bytes() for path in sorted(source.rglob("*")) if path.is_file()}
    watcher = Watcher([str(live)], engine, roles)
    pieces = 5
    for piece in range(1, pieces + 1):
        for path, data in files.items():
            target = live / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[: len(data) * piece // pieces])  # cuts fall inside records and lines
        watcher.poll()
        _whole_records(watcher, tmp_path / "judged", live)
        judged = tmp_path / "judged"
        expected = _analyzed(judged, engine, roles) if judged.exists() else {}  # a half-saved JSON: nothing yet
        assert _watched(watcher) == expected, f"piece {piece}"
        assert not watcher.problems, "a cut-short record must be 'not yet', never a problem"
    assert _watched(watcher) == _analyzed(source, engine, roles)


def test_a_csv_replayed_line_by_line_reports_each_finding_once_and_ends_as_analyze(tmp_path, setup):
    engine, roles = setup
    source = SAMPLES / "keras_csv" / "mlp_sgd_lr_growth_nan"
    log = source / "training.log"
    lines = log.read_bytes().splitlines(keepends=True)
    live = tmp_path / "run"
    live.mkdir()
    watcher = Watcher([str(live)], engine, roles)
    events = []
    for count in range(1, len(lines) + 1):
        (live / log.name).write_bytes(b"".join(lines[:count]))
        events += watcher.poll()
        copy = tmp_path / "copy" / "run"
        copy.mkdir(parents=True, exist_ok=True)
        (copy / log.name).write_bytes(b"".join(lines[:count]))
        if count > 1:
            assert _watched(watcher) == _analyzed(copy, engine, roles), f"after line {count}"
    new = [(e.finding.rule, e.finding.metric, e.finding.step_start) for e in events if e.status == "new"]
    assert len(new) == len(set(new)), "a finding is reported once, then only updated"
    assert ("LRD105", "loss", 12) in new
    final = {(f.rule, f.metric, f.step_start, f.step_end) for f in watcher.findings()["run"]}
    assert ("LRD105", "loss", 12, 19) in final


def _event_file(tmp_path: Path, steps: int) -> bytes:
    from torch.utils.tensorboard import SummaryWriter

    folder = tmp_path / "writer"
    writer = SummaryWriter(str(folder))
    for step in range(steps):
        writer.add_scalar("loss", 1.0 / (step + 1), step)
    writer.close()
    return next(folder.glob("events.out.tfevents.*")).read_bytes()


def test_an_event_file_cut_inside_a_record_keeps_the_whole_records_and_takes_the_rest_when_it_is_written(tmp_path):
    data = _event_file(tmp_path, 50)
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(data[: len(data) - 7])
    tail = Tail(path, tfevents)
    assert tail.advance()
    first = tfevents.read_files([path], contents={path: tail.data})
    assert not first.problems
    assert first.series["loss"].steps.tolist() == list(range(49))
    assert not tail.advance()  # nothing written since
    path.write_bytes(data)
    assert tail.advance()
    assert tail.data == data
    assert tfevents.read_files([path], contents={path: tail.data}).series["loss"].steps.tolist() == list(range(50))


def test_a_csv_rewritten_with_a_new_header_is_read_again_from_its_start(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"step,loss\n0,1.0\n1,0.9\n2,0.")
    tail = Tail(path, csvlog)
    assert tail.advance() and tail.data == b"step,loss\n0,1.0\n1,0.9\n"
    # Lightning's CSVLogger rewrites the whole file when a new metric appears.
    path.write_bytes(b"step,loss,val_loss\n0,1.0,\n1,0.9,\n2,0.8,\n2,,0.85\n")
    assert tail.advance()
    assert csvlog.read(path, data=tail.data).series["val_loss"].values.tolist() == [0.85]
    assert csvlog.read(path, data=tail.data).series["loss"].steps.tolist() == [0, 1, 2]


def test_trainer_state_is_taken_when_it_parses_and_its_log_history_grew(tmp_path):
    path = tmp_path / "trainer_state.json"
    state = {"global_step": 2, "log_history": [{"loss": 1.0, "step": 1}, {"loss": 0.9, "step": 2}]}
    path.write_text(json.dumps(state))
    tail = Tail(path, jsonlog)
    assert tail.advance()
    half = json.dumps({**state, "log_history": state["log_history"] + [{"loss": 0.8, "step": 3}]})
    path.write_text(half[: len(half) // 2])  # the Trainer caught rewriting it
    assert not tail.advance()
    assert jsonlog.read(path, data=tail.data).series["loss"].steps.tolist() == [1, 2]
    path.write_text(half)
    assert tail.advance()
    assert jsonlog.read(path, data=tail.data).series["loss"].steps.tolist() == [1, 2, 3]
    path.write_text(json.dumps({**json.loads(half), "best_metric": 0.5}))  # saved again, no new log entry
    assert not tail.advance()


def test_a_new_event_file_of_a_run_and_a_new_run_are_picked_up(tmp_path, setup):
    engine, roles = setup
    data = _event_file(tmp_path, 40)
    root = tmp_path / "runs"
    watcher = Watcher([str(root)], engine, roles)
    assert watcher.poll() == [] and not watcher.runs  # nothing there yet
    (root / "a").mkdir(parents=True)
    (root / "a" / "events.out.tfevents.1.host").write_bytes(data)
    watcher.poll()
    assert set(watcher.runs) == {"a"}
    (root / "a" / "events.out.tfevents.2.host").write_bytes(data)  # a restart writes a new file
    (root / "b").mkdir()
    (root / "b" / "events.out.tfevents.1.host").write_bytes(data)
    watcher.poll()
    assert set(watcher.runs) == {"a", "b"}
    assert len(watcher.runs["a"].tails) == 2


def test_a_run_in_an_mlflow_file_store_is_followed_as_it_grows(tmp_path, setup):
    # A tracker's store has no file of the run's own to tail: the store reads the run whole at each
    # poll, and the rules judge it again when its points changed (a NaN logged later is found then).
    engine, roles = setup
    experiment = tmp_path / "mlruns" / "1"
    run = experiment / "0123456789abcdef0123456789abcdef"
    (run / "metrics").mkdir(parents=True)
    (experiment / "meta.yaml").write_text("artifact_location: file:///x\nexperiment_id: '1'\n"
                                          "lifecycle_stage: active\nname: exp\n")
    (run / "meta.yaml").write_text("artifact_uri: file:///x/a\nexperiment_id: '1'\nlifecycle_stage: active\n"
                                   f"run_id: {run.name}\nrun_name: first\nstatus: 1\n")
    lines = [f"{1700000000000 + step} {2.0 * 0.99 ** step} {step}\n" for step in range(60)]
    (run / "metrics" / "train_loss").write_text("".join(lines))
    watcher = Watcher([str(tmp_path / "mlruns")], engine, roles)
    assert watcher.poll() == [] and set(watcher.runs) == {"exp/first"}
    assert watcher.poll() == []  # nothing new: nothing judged again
    with open(run / "metrics" / "train_loss", "a") as metric:
        metric.write("".join(f"{1700000000000 + step} nan {step}\n" for step in range(60, 70)))
    [event] = watcher.poll()
    assert (event.run, event.finding.rule, event.finding.step_start, event.status) == ("exp/first", "LRD105", 60, "new")
    assert _watched(watcher) == _analyzed(tmp_path / "mlruns", engine, roles)


# --- the command, as a subprocess, against a live writer -----------------------------------------------

def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _watch(*args) -> tuple[subprocess.Popen, queue.Queue]:
    process = subprocess.Popen([sys.executable, "-m", "lrdiag", "watch", *args], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()
    return process, lines


def _next_line(lines: queue.Queue, deadline: float) -> str | None:
    try:
        return lines.get(timeout=max(0.01, deadline - time.monotonic()))
    except queue.Empty:
        return None


def _write_live(folder: Path, nan_at: int, steps: int, written: dict) -> None:
    """A SummaryWriter log and a CSV log written point by point; NaN from `nan_at` on; a half record at the end."""
    from torch.utils.tensorboard import SummaryWriter

    time.sleep(1.0)  # the folder does not exist when watch starts
    writer = SummaryWriter(str(folder / "tb"))
    (folder / "csv").mkdir(parents=True)
    csv = open(folder / "csv" / "metrics.csv", "w")
    csv.write("step,loss\n")
    for step in range(steps):
        loss = float("nan") if step >= nan_at else 2.0 * 0.99 ** step + 0.01 * ((step * 7919) % 13) / 13
        writer.add_scalar("loss", loss, step)
        writer.flush()
        csv.write(f"{step},{loss}\n")
        csv.flush()
        if step == nan_at:
            written["nan"] = time.time()
        time.sleep(0.01)
    csv.write("9999,0.12")  # a row still being written
    csv.flush()
    writer.close()
    event_file = next((folder / "tb").glob("events.out.tfevents.*"))
    with open(event_file, "ab") as handle:
        handle.write(b"\x40\x00\x00\x00\x00\x00\x00\x00\x01\x02")  # a record still being written


def test_watch_follows_a_run_that_starts_later_and_exits_at_the_first_error(tmp_path):
    live = tmp_path / "live"
    process, lines = _watch(str(live), "--interval", "0.2", "--format", "json", "--exit-on-finding")
    written: dict = {}
    writer = threading.Thread(target=_write_live, args=(live, 150, 170, written), daemon=True)
    writer.start()
    deadline = time.monotonic() + 60
    found = []
    try:
        while (line := _next_line(lines, deadline)) is not None:
            found.append(json.loads(line))
        process.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        process.kill()
    stderr = process.stderr.read()
    assert process.returncode == 1, stderr
    errors = [event for event in found if event["finding"]["severity"] == "error"]
    assert errors, (found, stderr)
    first = errors[0]
    assert first["finding"]["rule"] == "LRD105" and first["finding"]["step_start"] == 150
    assert first["run"] in {"tb", "csv"}
    assert set(first) >= {"run", "finding", "seen_at"} and first["seen_at"].endswith("Z")
    assert "problem" not in stderr and "Traceback" not in stderr


def test_watch_prints_each_finding_once_and_a_summary_on_sigterm(tmp_path):
    live = tmp_path / "live"
    written: dict = {}
    _write_live(live, 150, 170, written)
    process, lines = _watch(str(live), "--interval", "0.2")
    deadline = time.monotonic() + 30
    seen = []
    while len(seen) < 2 and (line := _next_line(lines, deadline)) is not None:
        seen.append(line)
    time.sleep(1.0)  # a few more polls of unchanged files: nothing printed again
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    finally:
        process.kill()
    while (line := _next_line(lines, time.monotonic() + 1)) is not None:
        seen.append(line)
    assert process.returncode == 1  # the NaN is an error, at or above the default --fail-on
    events = [line for line in seen if line.startswith("20")]
    assert len(events) == 2, seen  # one LRD105 per run, once each
    assert all("error LRD105 loss.nonfinite  loss steps 150–169" in line for line in events), events
    assert seen[-1].startswith("watched 2 runs: 2 errors"), seen


def test_watch_escapes_control_characters_in_run_names(tmp_path):
    live = tmp_path / "live"
    _write_live(live, 150, 170, {})
    (live / "csv").rename(live / "bad\x1b[31mname")
    process, lines = _watch(str(live), "--interval", "0.2", "--exit-on-finding")
    try:
        process.wait(timeout=30)
    finally:
        process.kill()
    out = []
    while (line := _next_line(lines, time.monotonic() + 1)) is not None:
        out.append(line)
    assert process.returncode == 1
    assert "\x1b" not in "".join(out) + process.stderr.read()


def test_a_growing_finding_is_reported_again_only_when_its_step_range_doubled(tmp_path, setup):
    engine, roles = setup
    run = tmp_path / "run"
    run.mkdir()
    rows = ["step,loss"] + [f"{step},{2.0 * 0.99 ** step + 0.01 * ((step * 7919) % 13) / 13}" for step in range(100)]
    watcher = Watcher([str(run)], engine, roles)
    events = []
    for step in range(100, 164):  # NaN from step 100 on, one point a poll
        rows.append(f"{step},nan")
        (run / "metrics.csv").write_text("\n".join(rows) + "\n")
        events += [(e.status, e.finding.step_start, e.finding.step_end) for e in watcher.poll()
                   if e.finding.rule == "LRD105"]
    assert events == [("new", 100, 100), ("updated", 100, 101), ("updated", 100, 103), ("updated", 100, 107),
                      ("updated", 100, 115), ("updated", 100, 131), ("updated", 100, 163)]


def test_an_event_file_damaged_mid_file_is_read_past_the_damage_as_analyze_reads_it(tmp_path, setup):
    from lrdiag.ingest.tfrecord import Buffer, walk

    engine, roles = setup
    data = bytearray(_event_file(tmp_path, 60))
    starts = walk(Buffer.from_bytes(bytes(data)), 0)[0]
    data[int(starts[30]) + 3] ^= 0x40  # a length field gone bad: its checksum no longer matches
    run = tmp_path / "runs" / "damaged"
    run.mkdir(parents=True)
    path = run / "events.out.tfevents.1.host"
    path.write_bytes(bytes(data))
    watcher = Watcher([str(tmp_path / "runs")], engine, roles)
    watcher.poll()
    read = tfevents.read_files([path])
    watched = watcher.runs["damaged"].run
    assert watched.series["loss"].steps.tolist() == read.series["loss"].steps.tolist()
    assert len(read.series["loss"]) > 40  # the points after the damage are kept
    assert [problem for _, problem in watcher.problems] == read.problems and read.problems


def test_a_trainer_state_seen_empty_at_first_is_still_read_as_a_whole_document(tmp_path):
    path = tmp_path / "trainer_state.json"
    path.write_text("")  # the Trainer opened it and has not written yet
    tail = Tail(path, jsonlog)
    assert not tail.advance()
    path.write_text(json.dumps({"global_step": 1, "log_history": [{"loss": 1.0, "step": 1}]}, indent=2))
    assert tail.advance()
    assert jsonlog.read(path, data=tail.data).series["loss"].steps.tolist() == [1]


def test_an_event_file_with_a_record_length_of_2_to_the_60_is_read_past_it_once_and_reported_once(tmp_path, setup):
    import struct

    from lrdiag.ingest.tfrecord import Buffer, masked_crc, walk

    engine, roles = setup
    data = _event_file(tmp_path, 60)
    starts = walk(Buffer.from_bytes(data), 0)[0]
    length = struct.pack("<Q", 1 << 60)  # a length field whose own checksum is intact
    bogus = length + struct.pack("<I", masked_crc(length))
    cut = int(starts[30])
    run = tmp_path / "runs" / "huge"
    run.mkdir(parents=True)
    path = run / "events.out.tfevents.1.host"
    path.write_bytes(data[:cut] + bogus)  # what a writer still writing that record would have left
    watcher = Watcher([str(tmp_path / "runs")], engine, roles)
    watcher.poll()
    assert watcher.runs["huge"].run.series["loss"].steps.tolist() == list(range(29))  # record 0 is the version
    assert not watcher.problems  # a record being written is "not yet"
    path.write_bytes(data[:cut] + bogus + data[cut:])  # intact records after it: it was damage
    watcher.poll()
    read = tfevents.read_files([path])
    steps = watcher.runs["huge"].run.series["loss"].steps.tolist()
    assert steps == read.series["loss"].steps.tolist() == list(range(60))
    assert [problem for _, problem in watcher.problems] == read.problems
    assert "runs past the end of the file" in read.problems[0].message
    watcher.problems.clear()
    with path.open("ab") as log:
        log.write(data[int(starts[40]):int(starts[42])])  # two more records, after the damage
    watcher.poll()
    assert not watcher.problems  # reported once
    assert watcher.runs["huge"].run.series["loss"].steps.tolist()[-2:] == [39, 40]
    assert _watched(watcher) == _analyzed(tmp_path / "runs", engine, roles)


IMMEDIATE = ("spike", "nonfinite", "explosion")


def _reported(watcher: Watcher) -> dict:
    return {name: [f for f in state.findings.reported if f.category in IMMEDIATE]
            for name, state in watcher.runs.items()}


def _no_later(screened: Watcher, reference: Watcher, when: str) -> None:
    """Each spike, NaN or explosion the reference (judging every run at every poll it grew) has reported, the
    screened watcher has reported too: same rule and metric, overlapping steps."""
    mine = _reported(screened)
    for name, found in _reported(reference).items():
        for finding in found:
            assert any(f.rule == finding.rule and f.metric == finding.metric and f.step_start <= finding.step_end
                       and finding.step_start <= f.step_end for f in mine.get(name, [])), f"{when}: {name} {finding}"


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.iterdir() if p.is_dir()))
def test_the_screen_reports_spikes_nans_and_explosions_at_the_poll_a_full_judgement_would(tmp_path, setup, sample):
    engine, roles = setup
    source = SAMPLES / sample
    live = tmp_path / "live"
    files = {path: path.read_bytes() for path in sorted(source.rglob("*")) if path.is_file()}
    screened, reference = Watcher([str(live)], engine, roles), Watcher([str(live)], engine, roles, growth=0)
    pieces = 40
    for piece in range(1, pieces + 1):
        for path, data in files.items():
            target = live / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[: len(data) * piece // pieces])
        screened.poll()
        reference.poll()
        _no_later(screened, reference, f"piece {piece}")
    assert _watched(screened) == _watched(reference) == _analyzed(live, engine, roles)


def test_a_noisy_csv_replayed_point_by_point_reports_its_spikes_and_its_nan_at_their_poll(tmp_path, setup):
    import numpy as np

    engine, roles = setup
    rng = np.random.default_rng(7)
    steps = np.arange(600)
    loss = (2.0 * np.exp(-steps / 150) + 0.3) * np.exp(0.08 * rng.standard_t(3, steps.size))
    loss[[200, 201, 380]] *= [4.0, 3.0, 2.5]  # a two-point burst and a lone spike
    loss[560:] = np.nan
    rows = ["step,loss,lr"] + [f"{s},{v},0.01" for s, v in zip(steps, loss)]
    live = tmp_path / "run"
    live.mkdir()
    screened, reference = Watcher([str(live)], engine, roles), Watcher([str(live)], engine, roles, growth=0)
    for count in range(2, len(rows) + 1, 3):
        (live / "metrics.csv").write_text("\n".join(rows[:count]) + "\n")
        screened.poll()
        reference.poll()
        _no_later(screened, reference, f"after row {count}")
    assert {f.rule for f in reference.findings()["run"]} >= {"LRD101", "LRD105"}
    assert _watched(screened) == _analyzed(live.parent, engine, roles)
    judged = screened.runs["run"]
    assert judged.judged == judged.seen  # the summary judged what it read


def test_a_folder_that_cannot_be_listed_is_reported_once(tmp_path, setup, monkeypatch):
    from lrdiag.ingest.discover import RunSpec
    from lrdiag.live import watcher as watching

    engine, roles = setup
    locked = RunSpec("locked", where=str(tmp_path / "locked"), unlisted="Permission denied")
    monkeypatch.setattr(watching, "find_runs", lambda paths: [locked])  # root lists any folder: the spec as found
    watcher = Watcher([str(tmp_path)], engine, roles)
    watcher.poll()
    watcher.poll()
    assert [(name, problem.message) for name, problem in watcher.problems] == [
        ("locked", "cannot read this folder: Permission denied")]
    assert watcher.findings() == {}


def test_the_live_anchors_stop_where_their_sources_say():
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from anchors import kill_loss_spike_at, lightning_spike_at

    flat = np.full(300, 1.0)
    high = flat.copy()
    high[150:160] = 2.5  # 2.5x the window's mean: an outlier from the first such loss on
    assert kill_loss_spike_at(high) == 154  # the fifth in a row (patience 4)
    assert kill_loss_spike_at(flat) is None and kill_loss_spike_at(high[:140]) is None
    nan = flat.copy()
    nan[150:] = np.nan
    assert kill_loss_spike_at(nan) is None  # a NaN joins its window: its mean is NaN from then on
    assert lightning_spike_at(nan) == 150
    assert lightning_spike_at(high) is None  # 2.5x is under its 3x running mean
    high[200] = 9.0
    assert lightning_spike_at(high) == 200
