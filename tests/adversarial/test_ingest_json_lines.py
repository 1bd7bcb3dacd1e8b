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
