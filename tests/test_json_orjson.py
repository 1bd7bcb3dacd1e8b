"""JSON lines parsed by orjson give what json.loads gives: NaN and Infinity kept, damage named, big integers alike."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lrdiag.ingest import jsonlog

VALUES = st.one_of(
    st.floats(),  # NaN, Infinity and -Infinity as Python's json writes them
    st.integers(-10 ** 30, 10 ** 30),
    st.integers(2 ** 63 - 3, 2 ** 64 + 3),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
LINES = st.dictionaries(st.text(max_size=6), VALUES, max_size=6).map(json.dumps)


def same_value(fast: object, exact: object) -> bool:
    """Equal, float bits too; an integer outside int64 and uint64 may come as the float it becomes."""
    if isinstance(exact, int) and not isinstance(exact, bool) and isinstance(fast, float):
        return not -2 ** 63 <= exact < 2 ** 64 and struct.pack("<d", fast) == struct.pack("<d", float(exact))
    if isinstance(exact, float):
        return isinstance(fast, float) and struct.pack("<d", fast) == struct.pack("<d", exact)
    if isinstance(exact, list):
        return isinstance(fast, list) and len(fast) == len(exact) and all(map(same_value, fast, exact))
    if isinstance(exact, dict):
        return isinstance(fast, dict) and list(fast) == list(exact) and all(map(same_value, fast.values(),
                                                                                  exact.values()))
    return type(fast) is type(exact) and fast == exact


@settings(max_examples=500, deadline=None)
@given(line=st.one_of(LINES, st.text(max_size=40)))
@example(line='{"loss": NaN, "lr": Infinity, "grad_norm": -Infinity}')
@example(line='{"loss": 1, "loss": 2}')
@example(line='{"step": 18446744073709551616, "x": -9223372036854775809}')
@example(line='{"loss": 1e400}')
@example(line='{"k": "\\ud800"}')
@example(line='\ufeff{"loss": 1}')
@example(line='[1, 2]')
def test_a_line_parses_as_json_loads_parses_it(line):
    data = line.encode("utf-8", "surrogatepass")
    try:
        exact = jsonlog._loads(data)
    except ValueError as error:
        try:
            jsonlog._record(data, fast=True)
        except ValueError as same:
            assert type(same) is type(error) and str(same) == str(error)  # json's own message names the fault
            return
        raise AssertionError(f"orjson read {line!r}, which json.loads refuses")
    assert same_value(jsonlog._record(data, fast=True), exact)


def test_nan_and_infinity_survive_and_a_damaged_line_is_named_with_every_good_line_kept(tmp_path):
    lines = [json.dumps({"iteration": step, "total_loss": value, "lr": 0.1})
             for step, value in enumerate([0.5, math.nan, math.inf, -math.inf, 0.25])]
    lines.insert(3, '{"iteration": 2.5, "total_loss": 0.3')  # line 4: cut short
    lines.append('{"iteration": 5, "total_loss": 0.125, "big": 123456789012345678901234567890}')
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(lines) + "\n")
    fast, exact = jsonlog.read(path), jsonlog.read(path, exact=True)
    assert [(problem.file, problem.where) for problem in fast.problems] == [(str(path), "line 4")]
    assert fast.problems == exact.problems
    loss = fast.series["total_loss"]
    assert loss.steps.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(loss.values, [0.5, np.nan, np.inf, -np.inf, 0.25, 0.125])
    assert fast.series["big"].values.tolist() == [1.2345678901234568e29]
    assert list(fast.series) == list(exact.series)
    for tag, series in fast.series.items():
        assert series.values.view(np.int64).tolist() == exact.series[tag].values.view(np.int64).tolist()
