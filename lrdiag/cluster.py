"""Runs analyzed as Ray tasks (`--executor ray`): on a cluster at an address, or on a Ray of this machine.

The driver sends the runs' specs out in chunks (a task per run would cost more than a small run's
analysis), each task reads and analyzes its runs where it runs and returns their entries, and the
driver alone gathers them and writes the output: nothing is written on a worker. So every path must
be the same on every node (shared storage mounted at the same place), and lrdiag installed there.
A run that fails becomes an error line as in the local pool; a chunk whose worker died is sent
again one run a task, so that only the run that kills its worker is lost.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import tempfile
from contextlib import contextmanager

from lrdiag.errors import LrdiagError
from lrdiag.pipeline import safely

CHUNKS_PER_CPU = 8  # enough chunks that the last ones do not leave CPUs idle for long
MAX_CHUNK = 256  # runs a task at most: its entries come back in one piece, and progress moves by chunks
CONNECT_TIMEOUT = 5.0  # seconds: Ray itself waits minutes on an address where nothing listens


@contextmanager
def connected(address: str | None, cpus: int | None = None, option: str = "--address"):
    """Ray, connected to the cluster at `address`, or to a Ray of this machine started here with `cpus`
    CPUs (None: all) and stopped afterwards; a Ray already running in this process is used as it is.
    `option` is the command-line option that gave the address, for the error message."""
    try:
        import ray
    except ImportError:
        raise LrdiagError("--executor ray needs Ray: pip install 'lrdiag[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address and address != "auto":
            _check_reachable(address, option)
        with _stderr_kept() as said:
            try:
                if address:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
                else:
                    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                             logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as error:
                where = f"{option} {address}: cannot connect to Ray" if address else "cannot start Ray here"
                hint = ("; the cluster wants a token: set RAY_AUTH_MODE=token, and give this machine the head's "
                        "~/.ray/auth_token (or RAY_AUTH_TOKEN)" if b"InvalidAuthToken" in said() else "")
                raise LrdiagError(f"{where}: {_first_line(error)}{hint}") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


@contextmanager
def _stderr_kept():
    """What is written on stderr (file descriptor 2) meanwhile, kept aside: Ray's core prints a line a second
    while it retries a connection, and notes on starting (token authentication is on) that would clutter a
    CI log. Yields a function that returns it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as kept:
        os.dup2(kept.fileno(), 2)
        try:
            yield lambda: (kept.seek(0), kept.read())[1]
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _check_reachable(address: str, option: str = "--address") -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise LrdiagError(f"{option} {address}: expected HOST:PORT (the head node's, e.g. 10.0.0.1:6379), "
                          "ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()  # [::1]:6379 too
    except OSError as error:
        raise LrdiagError(f"{option} {address}: cannot reach a Ray head there ({error.strerror or error}); "
                          "is `ray start --head` running on it, and the port open?") from None


def chunk_size(runs: int, cpus: int) -> int:
    return max(1, min(MAX_CHUNK, runs // (max(cpus, 1) * CHUNKS_PER_CPU)))


def as_completed(ray, work, specs: list, args: tuple):
    """(index, `work(spec, *args)` or an error line) for every spec, as the tasks end."""
    size = chunk_size(len(specs), int(ray.cluster_resources().get("CPU", 1)))
    shared = ray.put((os.getcwd(), args))  # sent to each node once, not with every chunk
    task = ray.remote(num_cpus=1, max_retries=1)(_analyze_chunk)
    pending = {task.remote(work, specs[start:start + size], shared): start for start in range(0, len(specs), size)}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.2)
        for ref in ready:
            start = pending.pop(ref)
            try:
                results = ray.get(ref)
            except ray.exceptions.RayError:  # its worker died (killed, out of memory, node lost)
                results = _one_by_one(ray, work, specs[start:start + size], shared)
            yield from enumerate(results, start)


def _analyze_chunk(work, specs: list, shared: tuple) -> list:
    cwd, args = shared
    try:  # a relative path means there what it means to the driver (where the cwd is on the shared storage)
        os.chdir(cwd)
    except OSError:  # not there: a relative path is then a file not found, an error line that names it
        pass
    return [safely(work, spec, *args) for spec in specs]


def _one_by_one(ray, work, specs: list, shared) -> list:
    task = ray.remote(num_cpus=1, max_retries=0)(_analyze_chunk)
    refs = [task.remote(work, [spec], shared) for spec in specs]
    results = []
    for spec, ref in zip(specs, refs):
        try:
            results.extend(ray.get(ref))
        except ray.exceptions.RayError as error:
            results.append(f"{spec.name}: the Ray task analyzing this run failed ({_reason(error)})")
    return results


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def _reason(error: BaseException) -> str:
    """A task's error in one line: its last (the exception raised on the worker), without Ray's colours."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
