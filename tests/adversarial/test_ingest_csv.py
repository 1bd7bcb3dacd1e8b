"""CSV damage stays on its line: stray quotes, duplicate columns, steps no int64 can hold."""

from __future__ import annotations

import warnings

import numpy as np

from lrdiag.ingest import csvlog

ROWS = 200_000


def rows(count: int, start: int = 0) -> list[str]:
    return [f"{step},{1 / (step + 1)!r},0.1" for step in range(start, start + count)]


def read(tmp_path, lines: list[str], name: str = "metrics.csv"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return csvlog.read(path)


def test_a_stray_quote_in_the_header_loses_no_row(tmp_path, bound):
    with bound(seconds=20, megabytes=200):
        result = read(tmp_path, ['step,"loss,lr'] + rows(ROWS))
    np.testing.assert_array_equal(result.series["loss"].steps, np.arange(ROWS))
    np.testing.assert_array_equal(result.series["lr"].values[:3], [0.1] * 3)
    [problem] = result.problems
    assert problem.where == "line 1" and problem.message.startswith("unbalanced quote in the header")
    assert "'step', 'loss', 'lr'" in problem.message


def test_a_stray_quote_in_a_row_loses_that_row_only_and_costs_no_slow_pass(tmp_path, bound):
    lines = ["step,loss,lr"] + rows(ROWS)
    lines[1000] = '999,0.5",0.1'  # line 1001: an odd number of quotes
    lines[2000] = '1999,"0,5",0.1'  # line 2001: balanced quotes, a cell holding the separator: 3 fields
    with bound(seconds=20, megabytes=200):
        result = read(tmp_path, lines)
    steps = result.series["loss"].steps
    np.testing.assert_array_equal(steps, np.delete(np.arange(ROWS), [999, 1999]))
    assert result.series["lr"].steps.size == ROWS - 1
    assert [(problem.where, problem.message) for problem in result.problems] == [
        ("line 1001", "expected 3 fields, unbalanced quotes or stray line break; line skipped"),
        ("line 2001", "value '0,5' of 'loss' is not a number; point skipped")]


def test_duplicate_columns_keep_the_first_and_name_the_duplicate(tmp_path):
    result = read(tmp_path, ["step,loss,lr,loss"] + [f"{step},{step},0.1,{-step}" for step in range(5)])
    assert sorted(result.series) == ["loss", "lr"]  # no made-up `loss.1`
    np.testing.assert_array_equal(result.series["loss"].values, np.arange(5))
    [problem] = result.problems
    assert problem.where == "line 1"
    assert problem.message == "column 'loss' appears 2 times in the header (columns 2, 4); the first is read, the others skipped"


def test_steps_no_int64_can_hold_are_problems_never_warnings_or_wrapped_values(tmp_path):
    lines = ["step,loss"] + [f"{step},{step}" for step in range(5)]
    lines[3] = "1e40,2.0"  # line 4
    lines[4] = "-9.3e18,3.0"  # line 5
    lines[5] = "4.5,4.0"  # line 6: not a whole number
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = read(tmp_path, lines)
    series = result.series["loss"]
    np.testing.assert_array_equal(series.steps, [0, 1, 4])
    np.testing.assert_array_equal(series.values, [0.0, 1.0, 4.0])
    assert [(problem.where, problem.message) for problem in result.problems] == [
        ("line 4", "'step' value 1e+40 is outside the range of a step (a 64-bit integer); point skipped"),
        ("line 5", "'step' value -9.3e+18 is outside the range of a step (a 64-bit integer); point skipped"),
        ("line 6", "'step' value 4.5 is not a whole number; read as step 4")]


def test_a_table_of_200000_columns_costs_seconds_not_minutes(tmp_path, bound):
    """A 9 MB CSV of 200,000 per-class columns and 3 rows took 110 s and 1.3 GB: pandas' frame of that many
    columns costs more than linearly, and each 2 MB chunk (a row each) cost every column its fixed work. Now a
    table of thousands of columns is parsed plainly, its chunks joined up to the rows pandas types at once."""
    width = 200_000
    rows = ["step," + ",".join(f"AP-class{index}" for index in range(width))]
    rows += [f"{step}," + ",".join(f"{index / 7:.4f}" for index in range(width)) for step in range(3)]
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(rows) + "\n")
    with bound(seconds=40, megabytes=600):
        result = csvlog.read(path)
    assert result.problems == [] and len(result.series) == width
    series = result.series["AP-class199999"]
    assert series.steps.tolist() == [0, 1, 2] and series.values.tolist() == [round(199_999 / 7, 4)] * 3
