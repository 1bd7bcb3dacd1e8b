"""W&B runs on disk: `.wandb` files written by the real wandb package (offline mode) and the real runs in
real_logs, read without wandb and checked against what was logged, wandb's own protobuf classes and
the runs' wandb-summary.json; torn, damaged and step-less records."""

from __future__ import annotations

import json
import math
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from lrdiag.ingest import wandb_local
from lrdiag.ingest.discover import find_runs
from lrdiag.ingest.runs import read_run

REAL_WANDB = Path(__file__).parents[2] / "shared" / "real_logs" / "wandb"
STEPS = 1500  # enough records for several 32 KiB blocks


def logged_values(step: int) -> dict:
    values = {"train/loss": 1.0 / (step + 1), "Training/step": step * 10, "nested": {"a": step, "b": {"c": 2 * step}}}
    if step % 25 == 0:
        values["val/loss"] = 3.0 - step / 1000  # a sparse key
    if step == 3:
        values["train/loss"] = float("nan")
    if step == 4:
        values["train/loss"] = float("inf")
    return values


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One offline run written by the wandb package: (its wandb/ folder, its .wandb file)."""
    pytest.importorskip("wandb")
    folder = tmp_path_factory.mktemp("wandb_run")
    saved = {key: os.environ.get(key) for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_SILENT")}
    os.environ.update(WANDB_MODE="offline", WANDB_DIR=str(folder), WANDB_SILENT="true")
    try:
        import wandb

        run = wandb.init(project="proj", name="my run", config={"lr": 0.1, "optimizer": {"name": "adam"}})
        wandb.define_metric("Training/step")
        wandb.define_metric("val/*", step_metric="Training/step")  # a custom step key
        for step in range(STEPS):
            wandb.log(logged_values(step))
        wandb.log({"late": 1.0}, step=STEPS + 10)  # an explicit step
        run.finish()
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    [file] = (folder / "wandb").glob("offline-run-*/run-*.wandb")
    from wandb.proto.wandb_internal_pb2 import Record

    deadline = time.monotonic() + 60
    while not any(Record.FromString(body).HasField("exit")  # wandb-core may still be flushing after finish()
                  for body, _ in wandb_local.records(file.read_bytes(), file, [])):
        assert time.monotonic() < deadline, "wandb never wrote the run's exit record"
        time.sleep(0.2)
    return folder / "wandb", file


def expected_series() -> dict[str, tuple[list[int], list[float]]]:
    expected: dict[str, tuple[list[int], list[float]]] = {}

    def add(key, step, value):
        steps, values = expected.setdefault(key, ([], []))
        steps.append(step)
        values.append(float(value))

    for step in range(STEPS):
        values = logged_values(step)
        add("train/loss", step, values["train/loss"])
        add("Training/step", step, values["Training/step"])
        add("nested/a", step, step)
        add("nested/b/c", step, 2 * step)
        if "val/loss" in values:
            add("val/loss", step, values["val/loss"])
    add("late", STEPS + 10, 1.0)
    return expected


def test_written_run_every_point_as_logged(written):
    folder, file = written
    [spec] = find_runs([str(folder)])  # the latest-run link to the same run is not a second run
    assert (folder / "latest-run").exists()
    assert spec.name == "proj/my run" and spec.store == "wandb" and spec.where == str(file)
    run = read_run(spec)
    assert run.problems == [] and run.source == "wandb"
    got = {key: (series.steps.tolist(), series.values.tolist()) for key, series in run.series.items()}
    expected = expected_series()
    assert sorted(got) == sorted(expected)
    for key, (steps, values) in expected.items():
        assert got[key][0] == steps
        np.testing.assert_array_equal(got[key][1], values)
    assert math.isnan(run.series["train/loss"].values[3]) and run.series["train/loss"].values[4] == math.inf
    assert run.notes == ['config: lr=0.1, optimizer={"name": "adam"}']
    assert np.isfinite(run.series["train/loss"].wall_times).all()  # from _timestamp


def test_written_run_folder_or_file_given_directly(written):
    folder, file = written
    assert [spec.where for spec in find_runs([str(file.parent)])] == [str(file)]
    assert [spec.where for spec in find_runs([str(file)])] == [str(file)]
    assert [spec.name for spec in find_runs([str(folder.parent)])] == ["proj/my run"]  # named after wandb/'s place


def test_run_folders_outside_a_wandb_folder_are_claimed_one_by_one(written, tmp_path):
    import shutil

    _, file = written
    shutil.copytree(file.parent, tmp_path / "project" / file.parent.name)
    (tmp_path / "project" / "metrics.csv").write_text("step,loss\n0,1.0\n1,0.5\n")
    specs = find_runs([str(tmp_path / "project")])
    assert sorted((spec.name, spec.store) for spec in specs) == [("proj/my run", "wandb"), ("project", "")]


def record_ends(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every record's bytes: the header of its first fragment to the end of its last."""
    spans, offset, start = [], 7, None
    while offset < len(data):
        left = 32768 - offset % 32768
        if left < 7:
            offset += left
            continue
        _, length, kind = struct.unpack_from("<IHB", data, offset)
        if kind in (1, 2):
            start = offset
        if kind in (1, 4):
            spans.append((start, offset + 7 + length))
        offset += 7 + length
    return spans


def test_torn_file_keeps_every_whole_record_before_the_cut(written, tmp_path):
    _, file = written
    data = file.read_bytes()
    spans = record_ends(data)
    full = read_run(find_runs([str(file)])[0]).series
    assert len(data) > 3 * 32768
    for cut in range(40_000, len(data), 9_973):
        torn = tmp_path / "run-torn.wandb"
        torn.write_bytes(data[:cut])
        result = wandb_local.read(str(torn))
        torn_record = next((start for start, end in spans if start < cut < end), None)
        if torn_record is None:  # the cut falls between records, or in a block's zero padding
            assert result.problems == []
        else:
            [problem] = result.problems
            assert problem.where == f"offset {torn_record}" and "truncated record" in problem.message
        last_step = max(int(series.steps[-1]) for series in result.series.values())
        assert len(result.series["train/loss"]) == min(last_step + 1, STEPS)
        np.testing.assert_array_equal(result.series["train/loss"].values, full["train/loss"].values[:last_step + 1])


def test_damaged_record_is_skipped_to_the_next_block_with_a_problem(written, tmp_path):
    _, file = written
    data = bytearray(file.read_bytes())
    spans = record_ends(bytes(data))
    start, end = next((start, end) for start, end in spans if start > 40_000)
    data[end - 3] ^= 0xFF
    damaged = tmp_path / "run-damaged.wandb"
    damaged.write_bytes(bytes(data))
    result = wandb_local.read(str(damaged))
    [problem] = result.problems
    assert problem.where == f"offset {start}" and "checksum" in problem.message
    loss = result.series["train/loss"]
    assert loss.steps[-1] == STEPS - 1  # the records after the next block boundary are read
    lost = STEPS - len(loss)
    assert 1 <= lost < 32768 // 100  # at most one block's worth of records is lost


def frame(records: list[bytes]) -> bytes:
    """A .wandb file as wandb writes it: header, then records in 32 KiB blocks (all fit in one here)."""
    data = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
    for record in records:
        data += struct.pack("<IHB", zlib.crc32(record, zlib.crc32(b"\x01")), len(record), 1) + record
    return data


def history(step_field: int | None, **items) -> bytes:
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    record = pb.Record()
    for key, value in items.items():
        item = record.history.item.add()
        item.key = key
        item.value_json = json.dumps(value)
    if step_field is not None:
        record.history.step.num = step_field
    return record.SerializeToString()


def test_step_rules_step_item_then_step_field_then_one_past_the_previous(tmp_path):
    file = tmp_path / "run-x.wandb"
    file.write_bytes(frame([history(None, loss=1.0, _step=5),   # the _step item, as wandb's UI shows
                            history(9, loss=2.0),               # no _step item: the record's step field
                            history(None, loss=3.0),            # neither: one past the previous record
                            history(None, loss=4.0),
                            history(20, loss=5.0, _step=20)]))
    result = wandb_local.read(str(file))
    assert result.problems == []
    assert result.series["loss"].steps.tolist() == [5, 9, 10, 11, 20]


def test_a_step_item_past_int64_is_no_step_as_a_nan_one_is_never_the_whole_run_lost(tmp_path):
    """Was an OverflowError (the steps' int64 array) that lost the run as a reader bug."""
    file = tmp_path / "run-x.wandb"
    file.write_bytes(frame([history(None, loss=1.0, _step=5),
                            history(9, loss=2.0, _step=10 ** 20),  # the record's step field instead
                            history(None, loss=3.0, _step=-1e300),  # one past the previous record
                            history(None, loss=4.0, _step=12)]))
    result = wandb_local.read(str(file))
    assert result.problems == []
    assert result.series["loss"].steps.tolist() == [5, 9, 10, 12]


def test_nested_key_items_are_joined_with_a_slash_and_nan_inf_kept(tmp_path):
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    record = pb.Record()
    for nested, value in ((["train", "loss"], "NaN"), (["lr"], "Infinity"), (["_step"], "7"), (["text"], '"hi"')):
        item = record.history.item.add()
        item.nested_key.extend(nested)
        item.value_json = value
    file = tmp_path / "run-y.wandb"
    file.write_bytes(frame([record.SerializeToString()]))
    series = wandb_local.read(str(file)).series
    assert sorted(series) == ["lr", "train/loss"]
    assert math.isnan(series["train/loss"].values[0]) and series["lr"].values[0] == math.inf
    assert series["lr"].steps.tolist() == [7]


def test_a_whole_record_that_is_no_protobuf_is_skipped_with_a_problem(tmp_path):
    file = tmp_path / "run-w.wandb"
    garbage = b"\x12\xff\xff\xff"  # field 2 (history) claiming far more bytes than the record holds
    file.write_bytes(frame([history(None, loss=1.0), garbage, history(None, loss=2.0)]))
    result = wandb_local.read(str(file))
    assert result.series["loss"].values.tolist() == [1.0, 2.0]
    [problem] = result.problems
    start = 7 + 7 + len(history(None, loss=1.0))
    assert problem.where == f"offset {start}" and "not a W&B record" in problem.message


def test_not_a_wandb_file_is_a_problem(tmp_path):
    file = tmp_path / "run-z.wandb"
    file.write_bytes(b"hello")
    assert wandb_local.claim(file) is None
    assert "no ':W&B' header" in wandb_local.read(str(file)).problems[0].message


# The real runs, from the SOURCES.tsv notes: {run name: ({key: points}, last step, truncated)}
REAL_RUNS = {
    "0Chris5R__StanfordCS336-Own-Transformer": {"Transformer-LR-Sweep/tv0vb44e": (
        {"train/loss": 250, "lr": 250, "grad_norm": 250, "weight_norm": 250, "val/loss": 10, "val/perplexity": 10},
        2490, False)},
    "ARM-software__keyword-transformer": {"kwt-improvements/First try": (
        {"Training/loss": 861, "Training/accuracy": 861, "Training/step": 861, "Validation/accuracy": 862,
         "Validation/step": 862}, 861, True)},
    "A-Ijishakin__beta-tcvae": {"HSpace-SAEs/vae_training_run (ufljc7ut)": ({"train_elbo": 510}, 509, True),
                                "HSpace-SAEs/vae_training_run (n748obmj)": ({"train_elbo": 871}, 870, True)},
}


@pytest.mark.parametrize("repo", sorted(REAL_RUNS))
def test_real_wandb_runs_every_run_and_point(repo):
    folder = REAL_WANDB / repo / "wandb"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    specs = find_runs([str(folder)])
    assert sorted(spec.name for spec in specs) == sorted(REAL_RUNS[repo])
    for spec in specs:
        counts, last_step, truncated = REAL_RUNS[repo][spec.name]
        run = read_run(spec)
        assert {key: len(series) for key, series in run.series.items()} == counts
        assert max(int(series.steps[-1]) for series in run.series.values()) == last_step
        summary = json.loads((Path(spec.where).parent / "files" / "wandb-summary.json").read_text())
        if truncated:  # a killed run: its last record stops after its header, its summary is ahead
            [problem] = run.problems
            size = Path(spec.where).stat().st_size
            assert problem.where == f"offset {size - 7}" and "truncated record" in problem.message
            assert summary["_step"] > last_step
        else:  # a finished run: its summary holds each key's last value
            assert run.problems == []
            for key, series in run.series.items():
                assert series.values[-1] == summary[key]
        for series in run.series.values():
            assert (np.diff(series.steps) > 0).all()


def test_real_wandb_points_equal_wandbs_own_protobuf_parse():
    """Each whole record parsed by wandb's own classes gives the items lrdiag's wire decoder gave."""
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    files = sorted(REAL_WANDB.glob("*/wandb/*/*.wandb"))
    if not files:
        pytest.skip(f"{REAL_WANDB} is absent")
    for file in files:
        expected: dict[str, list[float]] = {}
        for body, _ in wandb_local.records(file.read_bytes(), file, []):
            record = pb.Record.FromString(body)
            if record.WhichOneof("record_type") != "history":
                continue
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                value = json.loads(item.value_json)
                if not key.startswith("_") and isinstance(value, (int, float)):
                    expected.setdefault(key, []).append(float(value))
        got = wandb_local.read(str(file)).series
        assert {key: series.values.tolist() for key, series in got.items()} == expected


def test_real_custom_step_keys_and_trainer_step_are_no_metric_roles():
    folder = REAL_WANDB / "ARM-software__keyword-transformer" / "wandb"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    run = read_run(find_runs([str(folder)])[0])
    assert run.series["Training/step"].role is None and run.series["Validation/step"].role is None
    assert run.primary("train_loss").tag == "Training/loss" and run.primary("val_acc").tag == "Validation/accuracy"


def test_runs_read_the_same_as_with_pandas_factorize(written, tmp_path, monkeypatch):
    """wandb_local.factorized numbers keys as `pandas.factorize` did (first appearance), which decides which
    series wins when a logged dict's `key/sub` meets a logged `key/sub`: every run read both ways is the same."""
    import pandas as pd

    factorized = wandb_local.factorized
    nested = tmp_path / "run-n.wandb"  # 'a/b' logged directly and inside a dict, in both orders
    nested.write_bytes(frame([history(None, **{"a/b": 1.0}), history(None, a={"b": 2.0}, c=3.0),
                              history(None, c={"d": 4.0}, **{"c/d": 5.0}), history(None, **{"": 6.0, "_x": 7.0})]))
    files = [written[1], nested, *sorted(REAL_WANDB.glob("*/wandb/*/*.wandb"))]
    plain = [wandb_local.read(str(file)) for file in files]
    monkeypatch.setattr(wandb_local, "factorized", lambda keys: pd.factorize(pd.Series(keys, dtype=object)))
    for file, first in zip(files, plain):
        second = wandb_local.read(str(file))
        assert first.problems == second.problems and first.notes == second.notes
        assert list(first.series) == list(second.series), file
        for key, series in first.series.items():
            for field in ("steps", "values", "wall_times"):
                mine, theirs = getattr(series, field), getattr(second.series[key], field)
                assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes(), (file, key, field)
    series = plain[1].series  # the key that appeared last wins a shared name, as before
    assert {key: values.values.tolist() for key, values in series.items()} == {"a/b": [2.0], "c": [3.0], "c/d": [5.0]}
    keys = ["b", "a", "b", "", "c", "a"]
    codes, names = factorized(keys)
    expected_codes, expected_names = pd.factorize(pd.Series(keys, dtype=object))
    assert codes.tolist() == expected_codes.tolist() and names == list(expected_names)
