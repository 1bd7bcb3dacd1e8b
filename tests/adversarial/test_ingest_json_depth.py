"""JSON nested thousands of levels deep, next to good runs: the scan goes on, the good lines stay, the deep one is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lrdiag.ingest.discover import find_runs
from lrdiag.ingest.runs import read_run

DEPTH = 100_000


def deep(depth: int = DEPTH) -> str:
    return "[" * depth + "]" * depth


def detectron2_lines(iterations: range) -> list[str]:
    return [json.dumps({"iteration": iteration, "total_loss": 1 / (iteration + 1), "lr": 0.01}) for iteration in iterations]


def test_deeply_nested_json_files_and_lines_are_problems_and_every_good_line_is_kept(tmp_path, bound):
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "metrics.json").write_text("\n".join(detectron2_lines(range(50))) + "\n")
    (tmp_path / "deep_document").mkdir()
    (tmp_path / "deep_document" / "history.json").write_text('{"loss": [1.0, 0.5, ' + deep() + "]}")
    (tmp_path / "deep_document" / "metrics.json").write_text("{" * DEPTH + "}" * DEPTH)  # sniffed: not a log
    (tmp_path / "small").mkdir()  # small enough to be sniffed whole: discovery parses it
    (tmp_path / "small" / "scalars.json").write_text(
        "\n".join(['{"step": ' + deep(5000) + "}"] + detectron2_lines(range(3))) + "\n")
    (tmp_path / "deep_line").mkdir()
    lines = detectron2_lines(range(20))
    lines[10] = lines[10][:-1] + ', "nested": ' + deep() + "}"  # line 11: a deep value in a good record
    lines.insert(15, deep())  # line 16: a deep line of its own
    (tmp_path / "deep_line" / "metrics.json").write_text("\n".join(lines) + "\n")
    (tmp_path / "deep_entry").mkdir()
    entries = [json.dumps({"step": step, "loss": 1 / step}) for step in range(1, 21)]
    entries[4] = json.dumps({"step": 5, "loss": 0.2})[:-1] + ', "total_flos": ' + deep() + "}"  # line 7
    (tmp_path / "deep_entry" / "trainer_state.json").write_text(
        '{\n"global_step": 20,\n"log_history": [\n' + ",\n".join(entries) + "\n]\n}\n")
    with bound(seconds=30, megabytes=200):
        runs = {spec.name: read_run(spec) for spec in find_runs([str(tmp_path)])}
    assert runs["good"].problems == []
    np.testing.assert_array_equal(runs["good"].series["total_loss"].steps, np.arange(50))

    keras = runs["deep_document"]
    assert not keras.series
    [problem] = keras.problems
    assert Path(problem.file).name == "history.json" and problem.where == "line 1"
    assert "nested too deeply" in problem.message

    small = runs["small"]
    assert [problem.where for problem in small.problems] == ["line 1"]
    np.testing.assert_array_equal(small.series["total_loss"].steps, np.arange(3))

    mixed = runs["deep_line"]
    where = {problem.where: problem.message for problem in mixed.problems}
    assert set(where) == {"line 11", "line 16"}
    assert "nested too deeply" in where["line 11"] and "nested too deeply" in where["line 16"]
    # every good line stays, the deep records included nothing
    np.testing.assert_array_equal(mixed.series["total_loss"].steps, [i for i in range(20) if i != 10])

    state = runs["deep_entry"]
    [problem] = state.problems
    assert problem.where == "line 8" and "nested too deeply" in problem.message and "entry skipped" in problem.message
    np.testing.assert_array_equal(state.series["loss"].steps, [step for step in range(1, 21) if step != 5])


def test_a_deep_value_within_the_parsers_reach_is_text_not_a_crash(tmp_path):
    """Nested 500 deep parses; printing it would recurse: it is kept as a marker, never a metric."""
    lines = detectron2_lines(range(5))
    lines[2] = lines[2][:-1] + ', "total_loss_extra": ' + deep(500) + "}"
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(lines) + "\n")
    [spec] = find_runs([str(path)])
    run = read_run(spec)
    assert run.problems == []
    assert "total_loss_extra" not in run.series
    np.testing.assert_array_equal(run.series["total_loss"].steps, np.arange(5))
