"""JSON lines of any shape parse at over a million keys a second, in memory bounded by the input; steps stay int64."""

from __future__ import annotations

import json
import warnings

import numpy as np

from lrdiag.ingest import jsonlog


def write(tmp_path, records: list[dict], name: str = "metrics.json"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_steps_no_int64_can_hold_are_problems_never_warnings_or_wrapped_values(tmp_path):
    records = [{"iteration": step, "total_loss": float(step)} for step in range(5)]
    records[2]["iteration"] = 1e40  # line 3
    records[3]["iteration"] = 3.25  # line 4
    state = {"global_step": 5, "log_history": [{"step": step, "loss": float(step)} for step in range(5)]}
    state["log_history"][1]["step"] = -1e30
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lines = jsonlog.read(write(tmp_path, records))
        trainer = jsonlog.read(write(tmp_path, [state], "trainer_state.json"))
    np.testing.assert_array_equal(lines.series["total_loss"].steps, [0, 1, 3, 4])
    assert [(problem.where, problem.message) for problem in lines.problems] == [
        ("line 3", "'iteration' value 1e+40 is outside the range of a step (a 64-bit integer); point skipped"),
        ("line 4", "'iteration' value 3.25 is not a whole number; read as step 3")]
    np.testing.assert_array_equal(trainer.series["loss"].steps, [0, 2, 3, 4])
    assert [(problem.where, problem.message) for problem in trainer.problems] == [
        ("log_history[1]", "'step' value -1e+30 is outside the range of a step (a 64-bit integer); point skipped")]


def test_one_line_with_100000_keys_costs_a_second_not_minutes(tmp_path, bound):
    """Was over 30 s (a pandas Series per key); now one table of points, split into series at the end."""
    records = [{"iteration": step, "total_loss": 1 / (step + 1), "lr": 0.01} for step in range(1000)]
    records.append({"iteration": 1000, **{f"AP-class{index}": index / 7 for index in range(100_000)}})
    path = write(tmp_path, records)
    with bound(seconds=15, megabytes=300):
        result = jsonlog.read(path)
    assert result.problems == []
    assert len(result.series) == 100_002
    np.testing.assert_array_equal(result.series["total_loss"].steps, np.arange(1000))
    for index in (0, 99_999):
        series = result.series[f"AP-class{index}"]
        assert series.steps.tolist() == [1000] and series.values.tolist() == [index / 7]


def test_lines_whose_keys_all_differ_or_vary_in_number_stay_fast_and_exact(tmp_path, bound):
    rng = np.random.default_rng(0)
    distinct = [{"iteration": line, **{f"line{line}/k{index}": index + 0.5 for index in range(100)}} for line in range(1000)]
    varied = [{"iteration": line, **{f"k{key}": float(line) for key in rng.choice(50, rng.integers(1, 30), replace=False)}}
              for line in range(20_000)]
    with bound(seconds=30, megabytes=300):
        first = jsonlog.read(write(tmp_path, distinct, "distinct.json"))
        second = jsonlog.read(write(tmp_path, varied, "varied.json"))
    assert first.problems == [] and second.problems == []
    assert len(first.series) == 100_000
    assert first.series["line999/k99"].steps.tolist() == [999] and first.series["line999/k99"].values.tolist() == [99.5]
    expected = {}
    for record in varied:
        for key in record:
            if key != "iteration":
                expected.setdefault(key, []).append(record["iteration"])
    assert sorted(second.series) == sorted(expected)
    for key, steps in expected.items():
        np.testing.assert_array_equal(second.series[key].steps, steps)
        np.testing.assert_array_equal(second.series[key].values, steps)


def test_integers_past_a_float_read_as_infinities_as_json_loads_floats_them_never_losing_the_file(tmp_path):
    """pandas' to_numeric raises on an int past a float's range: a big log holding one was lost whole
    ("lrdiag failed to read this file"). Such ints are +-inf, as float() of json.loads' int gives, in
    every path: lines read one by one, and records of very many keys read as one array."""
    records = [{"iteration": step, "total_loss": 0.5, "lr": 0.1} for step in range(60_000)]
    records[2]["total_loss"] = 10 ** 400  # line 3
    records[7]["total_loss"] = -10 ** 310  # line 8
    records.append({"iteration": 60_000, **{f"AP-class{index}": 1.5 for index in range(12_000)}, "AP-class5": 10 ** 400})
    records.append({"iteration": 60_001, **{f"AR-class{index}": 2 ** 53 + index for index in range(12_000)}})
    path = write(tmp_path, records)
    result, exact = jsonlog.read(path), jsonlog.read(path, exact=True)
    assert result.problems == [] and list(result.series) == list(exact.series)
    assert result.series["total_loss"].values[[2, 7]].tolist() == [np.inf, -np.inf]
    assert result.series["AP-class5"].values.tolist() == [np.inf]
    assert result.series["AR-class1"].values.tolist() == [float(2 ** 53 + 1)]  # rounded as float() rounds it
    for name, series in result.series.items():
        np.testing.assert_array_equal(series.steps, exact.series[name].steps)
        np.testing.assert_array_equal(series.values, exact.series[name].values)
