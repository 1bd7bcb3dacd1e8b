"""`lrdiag analyze` on 10,000 small generated runs: the local process pool against Ray on this machine.

    python benchmarks/bench_analyze_ray.py [--runs 10000] [--points 300] [--dir benchmarks/_ray_runs]

Each run is one CSV (step, train_loss, val_loss every 10th step, lr) of a few hundred points written
with numpy: a fifth healthy, the others with spikes, oscillation, overfitting, a stall, a NaN. Each
command runs in a fresh process, side by side: the local pool (--jobs = cores), Ray started by lrdiag
(its start counted), and a Ray head already running (`ray start --head`, joined with --address; the
steady state of a cluster). CPU is that of every process below the benchmark meanwhile: the command,
the processes it started (Ray's: the benchmark is their subreaper, so none leaves its tree), and a
running head's processes and workers.
The JSON of each must equal the local pool's, byte for byte. Run it from a copy of the tree that does
not change meanwhile (`git archive HEAD | tar -x -C /tmp/snap`, then `PYTHONPATH=/tmp/snap python
/tmp/snap/benchmarks/bench_analyze_ray.py --dir benchmarks/_ray_runs`): each command imports lrdiag
afresh, Ray's workers too.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SAMPLE = 0.1  # seconds between looks at the processes' CPU
KINDS = ("healthy", "spikes", "oscillation", "overfitting", "stall", "nan")


def _curves(points: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    steps = np.arange(points)
    train = 0.1 + 2.2 * np.exp(-steps / (points / 6)) * np.exp(0.1 * rng.standard_normal(points))
    val = 0.15 + 2.2 * np.exp(-steps / (points / 6)) * np.exp(0.02 * rng.standard_normal(points))
    lr = np.minimum(1.0, steps / (points / 20)) * 0.5 * (1 + np.cos(np.pi * steps / points)) * 1e-3
    if kind == "spikes":
        train[rng.integers(points // 10, points, 2)] *= 12
    elif kind == "oscillation":
        train *= np.exp(0.4 * np.cos(2 * np.pi * steps / 40))
    elif kind == "overfitting":
        val += np.clip(steps - points // 2, 0, None) / points
    elif kind == "stall":
        lr[points // 5:] = 1e-8
        train[points // 5:] = train[points // 5 - 1]
    elif kind == "nan":
        train[rng.integers(points // 2, points):] = np.nan
    val[steps % 10 != 9] = np.nan  # evaluated every 10th step: an empty cell elsewhere
    return np.c_[steps, train, val, lr]


def write_runs(folder: Path, runs: int, points: int) -> None:
    stamp = folder / f".made-{runs}x{points}"
    if stamp.exists():
        return
    rng = np.random.default_rng(0)
    began = time.perf_counter()
    for index in range(runs):
        run = folder / f"run{index:05d}"
        run.mkdir(parents=True, exist_ok=True)
        table = _curves(points, KINDS[index % len(KINDS)], rng)
        lines = "\n".join(",".join("" if np.isnan(cell) else f"{cell:.6g}" for cell in row) for row in table)
        (run / "metrics.csv").write_text("step,train_loss,val_loss,lr\n" + lines + "\n")
    stamp.touch()
    print(f"wrote {runs:,} runs x {points} points under {folder} in {time.perf_counter() - began:.1f} s")


def _be_subreaper() -> None:
    """Orphaned descendants (Ray's workers, once their raylet is gone) come back to this process, so that
    they stay in its tree, are counted, and are waited for."""
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _processes() -> dict[int, tuple[int, float]]:
    """{pid: (parent, its own CPU seconds so far)} of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields[0] is stat's 3rd field (the state): utime and stime are its 14th and 15th
            found[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return found


def _descendants(root: int | None = None) -> dict[int, float]:
    """{pid: its own CPU seconds so far} of every process below `root` (default: this one)."""
    root = root or os.getpid()
    processes = _processes()
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, (parent, _) in processes.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return {pid: processes[pid][1] for pid in tree - {root}}


def _stopping(head: int | None) -> set[int]:
    """The processes below this one still there, save a running head and its own."""
    return _descendants().keys() - (_descendants(head).keys() | {head} if head else set())


def measure(label: str, command: list[str], head: int | None = None) -> dict:
    """Wall time and CPU of `command` and of every process below this one meanwhile (a running head's too),
    each process's own CPU looked at every SAMPLE s until it ends: rusage would miss the Ray processes that
    nobody waits for, and count twice those that are. The last SAMPLE s of each process is not seen."""
    at_start = _descendants()
    latest = dict(at_start)
    began = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True)
        while process.poll() is None:
            latest.update(_descendants())
            time.sleep(SAMPLE)
        wall = time.perf_counter() - began
        stderr = process.stderr.read()
        out.seek(0)
        stdout = out.read()
    deadline = time.monotonic() + 60
    while (left := _stopping(head)) and time.monotonic() < deadline:  # Ray's processes, as they stop
        latest.update(_descendants())
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(SAMPLE)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    if process.returncode not in (0, 1):
        sys.exit(f"{label}: exit {process.returncode}: {stderr[-2000:]}")
    cpu = sum(seconds - at_start.get(pid, 0.0) for pid, seconds in latest.items())
    return {"label": label, "wall": wall, "cpu": cpu, "json": stdout}


def start_head(cpus: int) -> tuple[subprocess.Popen, str]:
    """`ray start --head --block` in the foreground, so that it is stopped by its own pid (`ray stop`
    would stop every Ray of this machine's user)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
                             "--include-dashboard=false", "--node-ip-address=127.0.0.1",
                             f"--temp-dir={tempfile.gettempdir()}/ray"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(2)  # the GCS listens before the raylet has registered
            return head, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.5)
    head.kill()
    sys.exit("ray start --head did not listen within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=HERE / "_ray_runs")
    args = parser.parse_args()
    write_runs(args.dir, args.runs, args.points)
    _be_subreaper()
    cpus = os.cpu_count() or 1
    analyze = [sys.executable, "-m", "lrdiag", "analyze", "--format", "json", str(args.dir)]
    results = [measure(f"local pool, --jobs {cpus}", [*analyze, "--jobs", str(cpus)]),
               measure("ray, started by lrdiag", [*analyze, "--executor", "ray"])]
    # Ray's token authentication, as on a cluster: the head and the driver both need it on, and the token
    # (~/.ray/auth_token, made by the Ray started above).
    os.environ["RAY_AUTH_MODE"] = "token"
    head, address = start_head(cpus)
    try:
        results.append(measure("ray, head already running", [*analyze, "--executor", "ray", "--address", address],
                               head=head.pid))
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    local = results[0]
    print(f"\n{args.runs:,} runs x {args.points} points, {cpus} cores "
          f"({len(local['json']) / 1e6:.1f} MB of JSON)")
    print(f"{'':28} {'wall s':>8} {'CPU s':>8} {'runs/s':>8} {'wall/local':>11} {'same JSON':>10}")
    for result in results:
        print(f"{result['label']:28} {result['wall']:8.1f} {result['cpu']:8.1f} {args.runs / result['wall']:8.0f} "
              f"{result['wall'] / local['wall']:11.2f} {'yes' if result['json'] == local['json'] else 'NO':>10}")
    for result in results[1:]:
        if result["json"] != local["json"]:
            ours, theirs = json.loads(local["json"]), json.loads(result["json"])
            differ = next((a["run"] for a, b in zip(ours["runs"], theirs["runs"]) if a != b), "the errors")
            print(f"{result['label']}: the JSON differs from the local pool's, first at {differ}")
    print(f"(CPU: every process below this one meanwhile, sampled every {SAMPLE} s: the command, the processes it "
          "started, Ray's included, and a running head's processes and workers)")


if __name__ == "__main__":
    main()
