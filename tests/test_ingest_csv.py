"""The CSV reader: Lightning, Keras, ultralytics and generic CSV logs; damaged files become problems."""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrdiag.ingest import csvlog, textlog

REAL_LOGS = Path(__file__).parents[2] / "shared" / "real_logs"


def claims(path: Path) -> bool:
    return csvlog.claims(path, path.read_bytes()[:65536])


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def wheres(result) -> list[str]:
    return [problem.where for problem in result.problems]


# ---- real logs ---------------------------------------------------------------------------------

# file -> (source, {tag: points}); counts checked against the raw files with the csv module below.
REAL_CSV = {
    "keras_csv/Car-Prediction-CNN-Model/training.log":
        ("keras_csv", {"accuracy": 100, "loss": 100, "val_accuracy": 100, "val_loss": 100}),
    "keras_csv/Emotion-Detection-Resnet50/training.log":
        ("keras_csv", {"accuracy": 17, "loss": 17, "val_accuracy": 17, "val_loss": 17}),
    "keras_csv/Voice-Identification/speaker250_training.log":
        ("keras_csv", {"acc": 50, "loss": 50, "val_acc": 50, "val_loss": 50}),
    "lightning_csv/Gaussian-Mixture-Neural-Network__version_0/metrics.csv":
        ("lightning_csv", {"train_loss": 140, "val_acc": 700, "val_loss": 700}),
    "lightning_csv/Gaze_Detection_Correction__version_0/metrics.csv":
        ("lightning_csv", {"train_acc": 30, "train_loss_epoch": 30, "train_loss_step": 5286, "val_acc": 30, "val_loss": 30}),
    "lightning_csv/Simple-Pendulum-PINN__version_18/metrics.csv":
        ("lightning_csv", {"dynamics_loss_epoch": 1000, "dynamics_loss_step": 1260, "initial_omega_loss_epoch": 1000,
                           "initial_omega_loss_step": 1260, "initial_theta_loss_epoch": 1000,
                           "initial_theta_loss_step": 1260, "train_loss_epoch": 1000, "train_loss_step": 1260}),
    "lightning_csv/ml-aos__version_3/metrics.csv":
        ("lightning_csv", {"train_rmse": 604, "train_loss": 604, "val_rmse": 200, "val_loss": 200}),
    "lightning_csv/opal-v2__version_0/metrics.csv":
        ("lightning_csv", {"lr-Adam": 108, "train/nll_loss": 108, "val/rmse_loss": 8}),
    "ultralytics_csv/helmet-detection-yolov5__exp2/results.csv":
        ("yolo_csv", {tag: 150 for tag in (
            "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
            "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss", "val/cls_loss",
            "x/lr0", "x/lr1", "x/lr2")}),
}


def real(relative: str) -> Path:
    if not REAL_LOGS.is_dir():
        pytest.skip(f"{REAL_LOGS} is absent")
    return REAL_LOGS / relative


def test_every_real_csv_log_is_listed_here():
    if not REAL_LOGS.is_dir():
        pytest.skip(f"{REAL_LOGS} is absent")
    found = {str(path.relative_to(REAL_LOGS)) for path in REAL_LOGS.rglob("*") if path.suffix in (".csv", ".log")}
    assert found == set(REAL_CSV)


@pytest.mark.parametrize("relative", sorted(REAL_CSV))
def test_real_csv_log_is_claimed_and_read_without_problems(relative):
    path = real(relative)
    source, counts = REAL_CSV[relative]
    assert claims(path)
    result = csvlog.read(path)
    assert result.problems == []
    assert result.source == source
    assert {tag: len(series) for tag, series in result.series.items()} == counts
    for series in result.series.values():
        assert series.steps.dtype == np.int64 and series.values.dtype == np.float64
        assert series.role is None


@pytest.mark.parametrize("relative", sorted(REAL_CSV))
def test_real_csv_point_counts_match_the_filled_cells_of_the_raw_file(relative):
    path = real(relative)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, skipinitialspace=True))
    header = [name.strip() for name in rows[0]]
    filled = {name: sum(1 for row in rows[1:] if row[index].strip()) for index, name in enumerate(header)}
    result = csvlog.read(path)
    for tag, series in result.series.items():
        assert len(series) == filled[tag]


def test_lightning_sparse_rows_give_each_metric_only_its_filled_rows():
    result = csvlog.read(real("lightning_csv/Gaze_Detection_Correction__version_0/metrics.csv"))
    val_loss = result.series["val_loss"]
    # `0,1761,,,,0.8284090757369995,0.4859466254711151` is the first validation row
    assert val_loss.steps[0] == 1761 and val_loss.values[0] == 0.4859466254711151
    assert result.series["train_loss_step"].steps[:2].tolist() == [9, 19]
    assert "epoch" not in result.series and "step" not in result.series


def test_lightning_lr_monitor_rows_without_epoch_still_count():
    result = csvlog.read(real("lightning_csv/opal-v2__version_0/metrics.csv"))
    lr = result.series["lr-Adam"]
    assert lr.steps[0] == 49 and lr.values[0] == 0.00328141592920354  # `,0.00328141592920354,49,,`
    assert result.series["val/rmse_loss"].steps[-1] == 5431


def test_yolo_space_padded_headers_and_values_are_stripped():
    result = csvlog.read(real("ultralytics_csv/helmet-detection-yolov5__exp2/results.csv"))
    assert all(tag == tag.strip() for tag in result.series)
    map_5095 = result.series["metrics/mAP_0.5:0.95"]
    assert map_5095.steps.tolist() == list(range(150))
    assert map_5095.values[-1] == 0.49232
    assert result.series["x/lr0"].values[0] == 0.0937


def test_keras_old_metric_names_and_epoch_steps():
    result = csvlog.read(real("keras_csv/Voice-Identification/speaker250_training.log"))
    assert result.series["loss"].steps.tolist() == list(range(50))
    assert result.series["loss"].values[0] == 4.8825876811019846
    assert result.series["val_acc"].values[0] == 0.40838509316770188


# ---- generated logs: formats ------------------------------------------------------------------

def test_lightning_round_trip_keeps_nan_and_inf_cells_but_not_empty_ones(tmp_path):
    path = write(tmp_path, "metrics.csv", "epoch,lr-AdamW,lr-AdamW/pg1,step,train_loss,val_loss\n"
                                          ",0.001,0.002,0,,\n"
                                          "0,,,0,2.5,\n"
                                          "0,,,1,nan,\n"
                                          "0,,,2,inf,\n"
                                          "0,,,2,,1.5\n")
    result = csvlog.read(path)
    assert result.source == "lightning_csv" and result.problems == []
    loss = result.series["train_loss"]
    assert loss.steps.tolist() == [0, 1, 2]
    assert loss.values[0] == 2.5 and math.isnan(loss.values[1]) and loss.values[2] == math.inf
    assert result.series["lr-AdamW/pg1"].values.tolist() == [0.002]
    assert result.series["val_loss"].steps.tolist() == [2]
    assert set(result.series) == {"lr-AdamW", "lr-AdamW/pg1", "train_loss", "val_loss"}


def test_keras_csv_round_trip(tmp_path):
    path = write(tmp_path, "training.log", "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n"
                                           "0,0.5,0.001,1.2,0.4,1.3\n1,0.6,0.001,1.0,0.5,1.1\n")
    result = csvlog.read(path)
    assert result.source == "keras_csv"
    assert result.series["learning_rate"].values.tolist() == [0.001, 0.001]
    assert result.series["val_loss"].steps.tolist() == [0, 1]


def test_yolov8_results_csv_without_padding_is_yolo_and_drops_the_time_column(tmp_path):
    path = write(tmp_path, "results.csv", "epoch,time,train/box_loss,metrics/mAP50(B),lr/pg0\n1,30.5,1.2,0.1,0.01\n2,61.0,1.1,0.2,0.009\n")
    result = csvlog.read(path)
    assert result.source == "yolo_csv"
    assert set(result.series) == {"train/box_loss", "metrics/mAP50(B)", "lr/pg0"}


@pytest.mark.parametrize(("header", "step_column"), [
    ("epoch,global_step,loss", "global_step"),
    ("Epoch,Iteration,loss", "Iteration"),
    ("iter,epoch,loss", "iter"),
    ("epoch,step,global_step,loss", "step"),
])
def test_generic_csv_prefers_the_finest_step_column(tmp_path, header, step_column):
    names = header.split(",")
    rows = [dict(zip(names, values)) for values in (("1", "10", "100"), ("2", "20", "200"))]
    body = "\n".join(",".join(row[name] if name != "loss" else "0.5" for name in names) for row in rows)
    path = write(tmp_path, "log.csv", header + "\n" + body + "\n")
    result = csvlog.read(path)
    assert result.problems == []
    expected = [int(row[step_column]) for row in rows]
    assert result.series["loss"].steps.tolist() == expected
    assert set(result.series) == {"loss"}


def test_generic_csv_keeps_metrics_and_drops_bookkeeping_columns(tmp_path):
    path = write(tmp_path, "train_log.csv", "step,loss,grad_norm,time,data_time,train_runtime,train_samples_per_second,mAP\n"
                                            "1,0.5,2.0,0.3,0.01,5,100,0.1\n")
    assert set(csvlog.read(path).series) == {"loss", "grad_norm", "mAP"}


def test_history_csv_with_an_unnamed_index_column_uses_it_as_steps(tmp_path):
    path = write(tmp_path, "history.csv", ",loss,val_loss\n0,1.0,1.5\n1,0.8,1.2\n")
    assert claims(path)
    result = csvlog.read(path)
    assert result.source == "csv"
    assert result.series["val_loss"].steps.tolist() == [0, 1]
    assert set(result.series) == {"loss", "val_loss"}


def test_tab_separated_logs_are_read_like_csv(tmp_path):
    # A .tsv, and a tab-separated header in a .txt file: comma-free cells, a quoted one, a bad line.
    path = write(tmp_path, "train_log.tsv", 'step\tloss\tnote\n0\t1.0\t"a, b"\n1\t0.9\n2\t0.8\tc\n')
    assert claims(path)
    result = csvlog.read(path)
    assert result.series["loss"].steps.tolist() == [0, 2]
    assert wheres(result) == ["line 3"]
    other = csvlog.read(write(tmp_path, "progress.txt", "iteration\tloss\n10\t0.5\n20\t0.4\n"))
    assert other.series["loss"].steps.tolist() == [10, 20] and other.problems == []


def test_text_columns_are_not_metrics(tmp_path):
    path = write(tmp_path, "metrics.csv", "step,loss,phase\n1,0.5,warmup\n2,0.4,main\n")
    result = csvlog.read(path)
    assert set(result.series) == {"loss"} and result.problems == []


@pytest.mark.parametrize(("name", "content"), [
    ("train.csv", "id,text,label\n1,hello,0\n"),  # a dataset, not a log
    ("data.csv", ",a,b\n0,1,2\n"),  # index column, but not named like a log
    ("numbers.csv", "1,2,3\n4,5,6\n"),  # no header
    ("metrics.json", '{"step": 1, "loss": 0.5}\n'),
    ("events.out.tfevents.1.host", "step,loss\n1,0.5\n"),
    ("binary.csv", b"step,loss\x00\x01\n"),
    ("run.log", "2021-08-12 19:06:36,123 - mmdet - INFO - Environment info:\n"),
])
def test_files_that_are_not_csv_training_logs_are_not_claimed(tmp_path, name, content):
    assert not claims(write(tmp_path, name, content))


# ---- generated logs: damage -------------------------------------------------------------------

def test_a_row_with_too_many_fields_is_a_problem_and_the_rows_after_it_are_kept(tmp_path):
    path = write(tmp_path, "metrics.csv", "epoch,step,loss\n0,1,0.9\n0,2,0.8,7\n0,3,0.7\n0,4,0.6\n")
    result = csvlog.read(path)
    assert wheres(result) == ["line 3"]
    assert "expected 3 fields, found 4" in result.problems[0].message
    assert result.problems[0].file == str(path)
    assert result.series["loss"].steps.tolist() == [1, 3, 4]


def test_a_row_with_too_few_fields_is_a_problem_not_silently_padded(tmp_path):
    path = write(tmp_path, "metrics.csv", "epoch,step,loss,val_loss\n0,1,0.9,\n0,2\n0,3,0.7,0.5\n")
    result = csvlog.read(path)
    assert wheres(result) == ["line 3"]
    assert result.series["loss"].steps.tolist() == [1, 3]


def test_a_half_written_last_line_is_reported_and_the_rows_before_it_are_kept(tmp_path):
    path = write(tmp_path, "training.log", "epoch,loss,val_loss\n0,1.0,2.0\n1,0.9,1.9\n2,0.8")
    result = csvlog.read(path)
    assert wheres(result) == ["line 4"]
    assert "half-written last line" in result.problems[0].message
    assert result.series["val_loss"].values.tolist() == [2.0, 1.9]


def test_a_non_numeric_cell_is_a_problem_and_only_that_point_is_lost(tmp_path):
    path = write(tmp_path, "metrics.csv", "step,loss,lr\n1,0.9,0.1\n2,oops,0.1\n3,0.7,0.1\n")
    result = csvlog.read(path)
    assert wheres(result) == ["line 3"]
    assert "'oops'" in result.problems[0].message and "'loss'" in result.problems[0].message
    assert result.series["loss"].steps.tolist() == [1, 3]
    assert result.series["lr"].steps.tolist() == [1, 2, 3]


def test_a_row_without_a_step_is_a_problem(tmp_path):
    path = write(tmp_path, "metrics.csv", "step,loss\n1,0.9\n,0.8\nx,0.75\n3,0.7\n")
    result = csvlog.read(path)
    assert wheres(result) == ["line 3", "line 4"]
    assert result.series["loss"].steps.tolist() == [1, 3]


def test_blank_lines_and_crlf_line_ends_are_fine(tmp_path):
    path = write(tmp_path, "metrics.csv", "step,loss\r\n1,0.9\r\n\r\n2,0.8\r\n")
    result = csvlog.read(path)
    assert result.problems == []
    assert result.series["loss"].values.tolist() == [0.9, 0.8]


def test_undecodable_bytes_are_a_problem_and_the_other_rows_are_kept(tmp_path):
    path = write(tmp_path, "metrics.csv", b"step,loss\n1,0.9\n2,\xff\xfe\n3,0.7\n")
    result = csvlog.read(path)
    assert "line 3" in wheres(result)
    assert any("UTF-8" in problem.message for problem in result.problems)
    assert result.series["loss"].steps.tolist() == [1, 3]


def test_an_empty_file_is_a_problem(tmp_path):
    path = write(tmp_path, "metrics.csv", "")
    assert claims(path)  # so that the empty log is reported, not ignored
    assert not claims(write(tmp_path, "data.csv", ""))
    result = csvlog.read(path)
    assert result.series == {} and [problem.message for problem in result.problems] == ["empty file"]


def test_a_header_only_file_is_a_problem(tmp_path):
    path = write(tmp_path, "metrics.csv", "epoch,step,train_loss\n")
    assert claims(path)
    result = csvlog.read(path)
    assert result.series == {}
    assert len(result.problems) == 1 and "header" in result.problems[0].message


def test_an_unreadable_path_is_a_problem(tmp_path):
    folder = tmp_path / "metrics.csv"
    folder.mkdir()
    result = csvlog.read(folder)
    assert result.series == {} and "cannot read" in result.problems[0].message


def test_a_broken_file_lists_a_bounded_number_of_problems(tmp_path):
    rows = "".join(f"{step},{step},x\n" for step in range(1000))
    path = write(tmp_path, "metrics.csv", "step,loss,lr\n" + rows.replace(",x", ",0.5", 1) + "5000,0.1,0.1\n")
    result = csvlog.read(path)
    assert len(result.problems) <= textlog.MAX_PROBLEMS
    assert "more" in result.problems[-1].message
    assert len(result.series["loss"]) == 1001


HEADER = b"epoch,step,loss,val_loss\n"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.integers(len(HEADER), 400),
                                 st.binary(max_size=6) | st.sampled_from([b'"', b",", b"\n", b"\r", b"\xff", b"x"])),
                       max_size=6))
def test_damaged_csv_never_raises_and_each_damage_costs_at_most_one_row(tmp_path, damage):
    text = bytearray(HEADER + b"".join(b"0,%d,0.%d,\n" % (step, step + 1) for step in range(40)))
    for position, garbage in damage:
        text[position:position] = garbage
    path = write(tmp_path, "metrics.csv", bytes(text))
    result = csvlog.read(path)
    assert all(problem.file == str(path) for problem in result.problems)
    assert len(result.series.get("loss", [])) >= 40 - len(damage)


def damaged_big_csv() -> bytes:
    """~1 MB of a sparse log with damage spread over it: short and long lines, a cell that is not a
    number, a NaN, bytes that are not UTF-8, a CRLF line, a text column, and no newline at the end."""
    rows = [b"step,loss,lr,note"]
    for step in range(40_000):
        lr = b"0.001" if step % 50 == 0 else b""
        rows.append(b"%d,%r,%s,ok" % (step, 1 / (step + 1), lr))
    rows[5] = b"4,0.2"  # too few fields
    rows[12_000] += b",extra"
    rows[20_000] = b"19999,oops,,ok"
    rows[22_000] = b"21999,nan,,ok"
    rows[25_000] = b"24999,0.5,,\xff\xfe"
    rows[30_000] = b"29999,0.25,,ok\r"
    rows[39_000] = b"38999,0.125,0.1,ok,"
    return b"\n".join(rows)


@pytest.mark.parametrize("given_bytes", [False, True], ids=["from the file", "bytes in hand"])
def test_a_big_file_read_in_chunks_gives_the_series_and_problems_of_one_read(tmp_path, monkeypatch, given_bytes):
    """Files over textlog.CSV_CHUNK_BYTES are parsed a chunk of lines at a time (bounded memory); the
    result must be the one whole read's: every point, every problem at its own line."""
    data = damaged_big_csv()
    path = write(tmp_path, "metrics.csv", data)
    read = (lambda: csvlog.read(path, data)) if given_bytes else (lambda: csvlog.read(path))
    monkeypatch.setattr(textlog, "CSV_CHUNK_BYTES", 1 << 30)
    whole = read()
    monkeypatch.setattr(textlog, "CSV_CHUNK_BYTES", 1 << 16)
    assert len(data) > 10 * textlog.CSV_CHUNK_BYTES
    chunked = read()
    assert list(chunked.series) == list(whole.series) == ["loss", "lr"]
    for tag, series in whole.series.items():
        np.testing.assert_array_equal(chunked.series[tag].steps, series.steps)
        np.testing.assert_array_equal(chunked.series[tag].values, series.values)
    assert sorted(chunked.problems) == sorted(whole.problems)
    assert sorted(wheres(whole)) == sorted(["line 6", "line 12001", "line 20001", "line 25001", "line 39001"])
    loss = whole.series["loss"]
    assert loss.steps.size == 40_000 - 4 and math.isnan(loss.values[loss.steps == 21_999][0])


# ---- cells to numbers without pandas -------------------------------------------------------------

# Cells that pandas reads in its own way: its number grammar (no '1_000', '0x10' or Unicode digits, which
# float() takes), nan/inf words, nulls, booleans (1/0 to pandas), integers past int64/uint64 and past a float.
TRICKY_CELLS = ["1", "-0", "0", " 1", "1 ", "+1", "1.", ".5", "1e5", "1E-3", "1e", "e5", "1_000", "inf", "-Infinity",
                "iNf", "nan", "NaN", "-nan", " nan\xa0", "null", "None", "True", "false", "x", "", " ", "\t2", "١",
                "9223372036854775808", "18446744073709551616", "-9223372036854775809", "1" + "0" * 400, "1e400",
                "nan(1)", "0x10", "1.5\x0b", "1\x1c", " inf", "-inf ", "\tInfinity", "\r1"]
JSON_CELL = st.one_of(st.sampled_from(TRICKY_CELLS), st.text(max_size=5), st.none(), st.booleans(), st.integers(),
                      st.floats(), st.just([1]), st.just({"a": 1}))


def same_floats(left: np.ndarray, right: np.ndarray) -> bool:
    """Equal bit for bit, NaN's sign and payload aside (-0.0 is not 0.0)."""
    return (left.shape == right.shape and np.array_equal(np.isnan(left), np.isnan(right))
            and np.array_equal(left[~np.isnan(left)].view(np.int64), right[~np.isnan(right)].view(np.int64)))


@settings(max_examples=400, deadline=None)
@given(cells=st.lists(JSON_CELL, max_size=6), infer=st.booleans())
def test_cells_to_numbers_of_a_list_is_pandas_own_reading_of_the_cells(cells, infer):
    """What the JSON reader passes (a list of json.loads values, or a numpy array) reads as the same cells in a
    pandas Series (dtype inferred, as DataFrame.from_records does, or object) read by pandas."""
    pd = pytest.importorskip("pandas")
    series = pd.Series(cells, dtype=None if infer and cells else object)
    places = np.arange(len(cells)) + 2
    by_pandas, without = [], []
    expected = textlog.cells_to_numbers(series, places, "loss", Path("log.json"), by_pandas)
    got = textlog.cells_to_numbers(cells, places, "loss", Path("log.json"), without)
    assert without == by_pandas
    assert (got is None) == (expected is None)
    if got is not None:
        assert np.array_equal(got[0], expected[0]) and same_floats(got[1], expected[1])
    assert same_floats(textlog.to_floats(cells), textlog.to_floats(series))
    assert same_floats(textlog.to_floats(np.array(cells, dtype=object)), textlog.to_floats(series))


def test_cells_to_numbers_reads_words_nulls_and_text_without_pandas():
    problems = []
    present, values = textlog.cells_to_numbers(["1.5", None, "nan", "null", "x", 2, "-Inf", float("nan"), True],
                                               np.arange(9), "loss", Path("log.json"), problems, where="row {}")
    assert present.tolist() == [True, False, True, False, False, True, True, False, True]
    assert values[[0, 5, 6, 8]].tolist() == [1.5, 2.0, -math.inf, 1.0] and math.isnan(values[2])
    assert [(problem.where, problem.message) for problem in problems] == [
        ("row 4", "value 'x' of 'loss' is not a number; point skipped")]
    assert textlog.cells_to_numbers(["a", None, "b"], np.arange(3), "mode", Path("log.json"), []) is None
    assert textlog.cells_to_numbers(np.array([1, 2]), np.arange(2), "loss", Path("log.json"), [])[1].tolist() == [1, 2]


def test_an_integer_past_a_floats_range_is_infinite_not_a_crash(tmp_path):
    path = write(tmp_path, "metrics.csv", "step,loss\n0,1\n1,1" + "0" * 400 + "\n2,-1" + "0" * 400 + "\n")
    result = csvlog.read(path)
    assert result.series["loss"].values.tolist() == [1.0, math.inf, -math.inf] and not result.problems


# ---- the plain parser (small files, no pandas) reads what pandas reads ------------------------------------------

SAMPLES = Path(__file__).parents[1] / "sample_logs"


def read_both_ways(path: Path, monkeypatch, data: bytes | None = None) -> tuple:
    """(pandas' reading, the plain parser's reading, how often the plain one left a chunk to pandas)."""
    pytest.importorskip("pandas")
    declined = []
    plain_table = csvlog._plain_table

    def spied(*args):
        table = plain_table(*args)
        declined.extend([args] if table is None else [])
        return table
    monkeypatch.setattr(csvlog, "_plain_table", spied)
    monkeypatch.setattr(csvlog, "_plain_for", lambda size: False)
    monkeypatch.setattr(csvlog, "WIDE_COLUMNS", 1 << 62)
    by_pandas = csvlog.read(path, data)
    monkeypatch.setattr(csvlog, "_plain_for", lambda size: True)
    plain = csvlog.read(path, data)
    return by_pandas, plain, len(declined)


def assert_same_reading(by_pandas, plain) -> None:
    assert plain.source == by_pandas.source
    assert list(plain.series) == list(by_pandas.series)
    for tag, series in by_pandas.series.items():
        assert plain.series[tag].steps.dtype == series.steps.dtype
        assert np.array_equal(plain.series[tag].steps, series.steps)
        assert same_floats(plain.series[tag].values, series.values), tag
    assert plain.problems == by_pandas.problems


CSV_FILES = sorted(path for folder in (SAMPLES, REAL_LOGS) if folder.is_dir() for path in folder.rglob("*")
                   if path.is_file() and claims(path))


def test_the_samples_hold_csv_logs():
    assert len([path for path in CSV_FILES if SAMPLES in path.parents]) >= 5


@pytest.mark.parametrize("path", CSV_FILES, ids=lambda path: str(path.relative_to(path.parents[2])))
def test_every_sample_and_real_csv_reads_the_same_without_pandas(path, monkeypatch):
    by_pandas, plain, declined = read_both_ways(path, monkeypatch)
    assert declined == 0  # the plain parser read it itself
    assert by_pandas.series
    assert_same_reading(by_pandas, plain)


def test_small_csvs_are_read_without_pandas_until_its_import_would_have_paid(tmp_path):
    """A file under PLAIN_BYTES is parsed without pandas while the process has parsed under PLAIN_BUDGET that way;
    a bigger file, or any once the budget is spent, imports pandas."""
    code = ("import sys; from pathlib import Path; from lrdiag.ingest import csvlog\n"
            "for name in sys.argv[1:]:\n"
            "    result = csvlog.read(Path(name)); print(len(result.series['loss']), 'pandas' in sys.modules)")
    rows = "".join(f"{step},{1 / (step + 1)!r}\n" for step in range(100_000))
    small = write(tmp_path, "small.csv", "step,loss\n" + rows[:len(rows) // 3])
    big = write(tmp_path, "big.csv", "step,loss\n" + rows)
    assert big.stat().st_size > csvlog.PLAIN_BYTES > small.stat().st_size > csvlog.PLAIN_BUDGET / 5

    def imports_pandas(*paths: Path) -> list[bool]:
        import subprocess
        import sys
        done = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True,
                              check=True)
        return [line.split()[1] == "True" for line in done.stdout.splitlines()]
    assert imports_pandas(small, small, small, small) == [False, False, False, False]
    assert imports_pandas(small, small, small, small, small) == [False, False, False, False, True]
    assert imports_pandas(big, small) == [True, True]


@pytest.mark.filterwarnings("ignore:Columns .* have mixed types")
def test_rows_that_pandas_would_type_in_blocks_are_left_to_pandas(tmp_path, monkeypatch):
    """pandas types 65,536 rows of 10 columns at a time: booleans in one block and integers in the next stay
    True and 1 (numbers, to pandas), where the whole column would be text."""
    rows = "".join(f"{step},{'True' if step < 65_536 else 1}" + ",1" * 8 + "\n" for step in range(70_000))
    path = write(tmp_path, "metrics.csv", "step,flag," + ",".join(f"c{index}" for index in range(8)) + "\n" + rows)
    by_pandas, plain, declined = read_both_ways(path, monkeypatch)
    assert declined == 1 and by_pandas.series["flag"].values[[0, -1]].tolist() == [1.0, 1.0]
    assert_same_reading(by_pandas, plain)


@pytest.mark.parametrize("width", [20_000, 200_000])
def test_the_rows_pandas_types_at_once_are_counted_as_pandas_counts_them(width):
    """The plain parser takes a chunk only where pandas would type each column whole: as many rows as
    _pandas_block_rows says, and not one more, for pandas' text and integers of one column to stay apart."""
    pd = pytest.importorskip("pandas")
    rows = csvlog._pandas_block_rows(width)

    def typed_apart(count: int) -> bool:
        lines = [",".join(f"c{index}" for index in range(width))]
        lines += [",".join(["1"] * width)] * (count - 1) + ["x" + ",1" * (width - 1)]
        frame = pd.read_csv(io.BytesIO(("\n".join(lines) + "\n").encode()), engine="c", keep_default_na=False,
                            na_values=[""], skipinitialspace=True, usecols=[0])
        return not isinstance(frame.iloc[0, 0], str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not typed_apart(rows) and typed_apart(rows + 1)


@pytest.mark.filterwarnings("ignore:Columns .* have mixed types")
@pytest.mark.parametrize("extra", [0, 1])
def test_a_table_of_thousands_of_columns_is_read_plainly_as_pandas_reads_it(tmp_path, monkeypatch, extra):
    """A table of WIDE_COLUMNS or more is parsed without pandas whatever its size (pandas' frame of 200,000 columns
    took 110 s): cells of every kind read the same, up to the rows pandas types at once and one more (left to it)."""
    width = 3000
    kinds = ["0.5", "-0", "7", "True", "", "x", "1e5", " 2", "inf", "-1.25e-3"]
    rows = csvlog._pandas_block_rows(width) + extra
    lines = ["step," + ",".join(f"m{index}" for index in range(width - 1))]
    lines += [f"{step}," + ",".join(kinds[(index * 7 + step * (index % 3)) % len(kinds)] if index % 5 else str(step / 4)
                                    for index in range(width - 1)) for step in range(rows)]
    path = write(tmp_path, "metrics.csv", "\n".join(lines) + "\n")
    monkeypatch.setattr(textlog, "CSV_CHUNK_BYTES", 64 << 20)  # one chunk: all its rows typed together or not
    by_pandas, plain, declined = read_both_ways(path, monkeypatch)
    assert declined == extra and len(plain.series) > width / 5
    assert_same_reading(by_pandas, plain)


# Cells pandas reads in a way of its own (see TRICKY_CELLS), quoting, blanks, and what breaks a line.
ODD_CELL = st.one_of(st.sampled_from(TRICKY_CELLS + ['"1.5"', '" 2"', '""', '" "', '"a,b"', ' "x"', '"q""q"', 'a"b',
                                                  "\ufffd", "True", "TRUE", " true", "1\r", "-0", "00"]),
                     st.text(st.sampled_from('0123456789.-+eE, "xnaif\t'), max_size=6))
NUMBER_CELL = st.one_of(st.integers(-5, 10**6).map(str), st.floats(allow_nan=False).map(repr), st.just(""))
COLUMN_NAME = st.sampled_from(["loss", "val_loss", "lr", "acc", "", " loss", '"acc"', "time", "note", "step", "epoch",
                               "Step", "global_step"])


@st.composite
def csv_text(draw) -> tuple[list[str], list[list[str]]]:
    """A header (a step column, mostly) and rows of mostly numbers, some odd cells, some rows of the wrong width."""
    step = draw(st.sampled_from(["step", "epoch", "global_step", "", " step", '"step"', "iteration"]))
    header = [step] + draw(st.lists(COLUMN_NAME, min_size=1, max_size=4))
    odd = draw(st.sampled_from([0.0, 0.1, 0.5]))  # the share of odd cells
    cell = st.floats(0, 1).flatmap(lambda chance: ODD_CELL if chance < odd else NUMBER_CELL)
    widths = st.sampled_from([len(header)] * 8 + [1, len(header) - 1, len(header) + 1])
    rows = draw(st.lists(widths.flatmap(lambda width: st.lists(cell, min_size=width, max_size=width)), max_size=15))
    return header, rows


DAMAGE = st.lists(st.tuples(st.integers(0, 300), st.binary(max_size=4) | st.sampled_from(
    [b'"', b",", b"\n", b"\r", b"\xff", b"\0", b"\xef\xbb\xbf"])), max_size=3)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=csv_text(), sep=st.sampled_from([",", "\t"]), bom=st.booleans(), crlf=st.booleans(),
       newline_at_end=st.booleans(), damage=DAMAGE)
def test_generated_and_damaged_csvs_read_the_same_without_pandas(tmp_path_factory, table, sep, bom, crlf,
                                                                 newline_at_end, damage):
    header, rows = table
    lines = [sep.join(header)] + [sep.join(row) for row in rows]
    data = bytearray(("\r\n" if crlf else "\n").join(lines).encode() + (b"\n" if newline_at_end else b""))
    for position, garbage in damage:
        data[position:position] = garbage
    data = (b"\xef\xbb\xbf" if bom else b"") + bytes(data)
    path = write(tmp_path_factory.mktemp("csv"), "metrics.tsv" if sep == "\t" else "metrics.csv", data)
    with pytest.MonkeyPatch.context() as monkeypatch:
        by_pandas, plain, _ = read_both_ways(path, monkeypatch)
    assert_same_reading(by_pandas, plain)
