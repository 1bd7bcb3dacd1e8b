"""Hostile files in a log folder: FIFOs, devices and sockets named like logs, symlinks that branch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from lrdiag.ingest.discover import find_runs
from lrdiag.ingest.runs import read_run

GOOD_CSV = "step,loss\n" + "".join(f"{step},{1 / (step + 1)}\n" for step in range(100))


def read_all(paths: list[Path]) -> dict:
    return {spec.name: read_run(spec) for spec in find_runs([str(path) for path in paths])}


def test_fifos_devices_and_sockets_named_like_logs_are_skipped_with_a_problem_and_never_block(tmp_path, bound):
    good = tmp_path / "good"
    good.mkdir()
    (good / "metrics.csv").write_text(GOOD_CSV)
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / "progress.csv").write_text(GOOD_CSV)
    fifos = ["metrics.csv", "events.out.tfevents.1.host", "log.json", "scalars.jsonl"]
    for name in fifos:
        os.mkfifo(hostile / name)  # nobody writes: a blocking open would wait forever
    (hostile / "results.csv").symlink_to("/dev/zero")  # a blocking read() would never end
    (hostile / "events.out.tfevents.2.host").symlink_to("/dev/null")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(hostile / "history.json"))
    try:
        with bound(seconds=20, megabytes=64):
            runs = read_all([tmp_path])
            fifo_run = read_all([hostile / "metrics.csv"])  # a FIFO given by name
    finally:
        server.close()
    np.testing.assert_array_equal(runs["good"].series["loss"].steps, np.arange(100))
    np.testing.assert_array_equal(runs["hostile"].series["loss"].steps, np.arange(100))  # progress.csv kept
    messages = {Path(problem.file).name: problem.message for problem in runs["hostile"].problems}
    for name in fifos:
        assert "a FIFO (named pipe), not a regular file; skipped" in messages[name]
    assert "a character device, not a regular file" in messages["results.csv"]
    assert "a character device, not a regular file" in messages["events.out.tfevents.2.host"]
    assert "a socket, not a regular file" in messages["history.json"]
    [fifo_problem] = fifo_run[str(hostile / "metrics.csv")].problems
    assert "a FIFO (named pipe)" in fifo_problem.message


def test_each_real_file_is_read_once_whatever_the_symlinks(tmp_path, bound):
    """Two links to the next level at every level: 2^20 paths reach the one log at the bottom."""
    depth = 20
    levels = [tmp_path / f"level{index}" for index in range(depth + 1)]
    for level in levels:
        level.mkdir()
    (levels[-1] / "metrics.csv").write_text(GOOD_CSV)
    for level, below in zip(levels, levels[1:]):
        (level / "left").symlink_to(below, target_is_directory=True)
        (level / "right").symlink_to(below, target_is_directory=True)
        (level / "up").symlink_to(levels[0], target_is_directory=True)  # and a cycle at every level
    (levels[0] / "same_file.csv").symlink_to(levels[-1] / "metrics.csv")
    os.link(levels[-1] / "metrics.csv", levels[0] / "hard_link.csv")
    with bound(seconds=20, megabytes=64):
        specs = find_runs([str(levels[0])])
        runs = [read_run(spec) for spec in specs]
    [spec] = specs
    assert len(spec.files) == 1  # the file reached through links, hard links and 2^20 paths, once
    [run] = runs
    assert run.problems == []
    np.testing.assert_array_equal(run.series["loss"].steps, np.arange(100))


def test_a_symlinked_run_folder_is_still_followed_and_named_by_its_link(tmp_path):
    elsewhere = tmp_path / "kept" / "elsewhere"
    elsewhere.mkdir(parents=True)
    (elsewhere / "metrics.csv").write_text(GOOD_CSV)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "linked").symlink_to(elsewhere, target_is_directory=True)
    (runs / "linked_twice").symlink_to(elsewhere, target_is_directory=True)
    assert [spec.name for spec in find_runs([str(runs)])] == ["linked"]
