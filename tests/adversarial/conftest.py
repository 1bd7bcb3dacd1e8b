"""Bounds for the adversarial suite: each hostile input must be handled within a time and a memory budget.

`bounded(seconds, megabytes)` is a context manager: a SIGALRM interrupts the work when it runs
past 4x the time budget (so that a hang fails the test instead of stalling CI; a blocking open()
is interrupted too), then the wall time and tracemalloc's peak (Python and numpy allocations) are
checked against the budgets. Time budgets are generous: CI runs on a loaded 2-core machine.
"""

from __future__ import annotations

import contextlib
import signal
import time
import tracemalloc
from dataclasses import dataclass

import pytest


@dataclass
class Measured:
    seconds: float = 0.0
    peak_bytes: int = 0


class Hung(Exception):
    """Raised by the alarm when the work under test runs far past its time budget."""


@contextlib.contextmanager
def bounded(seconds: float, megabytes: float, trace_memory: bool = True):
    measured = Measured()

    def alarm(signum, frame):
        raise Hung(f"still running after {4 * seconds:.0f} s: hung")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 4 * seconds)
    started_tracing = trace_memory and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak() if tracemalloc.is_tracing() else None
    begin = time.perf_counter()
    try:
        yield measured
    finally:
        measured.seconds = time.perf_counter() - begin
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if tracemalloc.is_tracing():
            measured.peak_bytes = tracemalloc.get_traced_memory()[1]
        if started_tracing:
            tracemalloc.stop()
    assert measured.seconds < seconds, f"took {measured.seconds:.1f} s, budget {seconds} s"
    assert measured.peak_bytes < megabytes * 2**20, (
        f"peak {measured.peak_bytes / 2**20:.1f} MiB, budget {megabytes} MiB")


@pytest.fixture
def bound():
    return bounded
