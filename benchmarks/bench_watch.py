"""What following live runs costs: `lrdiag watch`'s look per run, the delay from a point written to its
finding printed, and a training callback's cost per step.

    python benchmarks/bench_watch.py [--runs 100] [--points 2000] [--dir /tmp/lrdiag-bench-watch]

Runs are CSV logs written here (step, loss, lr), the loss a noisy decay. A look at runs that did not
change costs a `stat` per file; a look at runs that grew re-reads their whole records and re-runs the rules
on their whole series (docs/watch.md says why), so its cost grows with the points a run holds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _row(step: int) -> str:
    return f"{step},{2 * 0.999 ** step + 0.01 * ((step * 7919) % 13) / 13},0.01\n"


def looks(root: Path, runs: int, points: int) -> None:
    from lrdiag.config import project_setup
    from lrdiag.live.watcher import Watcher

    shutil.rmtree(root, ignore_errors=True)
    for run in range(runs):
        folder = root / f"run{run:04d}"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text("step,loss,lr\n" + "".join(_row(s) for s in range(points)))
    _, engine, roles = project_setup(None)
    watcher = Watcher([str(root)], engine, roles)
    began = time.perf_counter()
    watcher.poll()
    print(f"first look, {runs} runs of {points} points: {(time.perf_counter() - began) / runs * 1e3:.2f} ms a run")
    began = time.perf_counter()
    watcher.poll()
    print(f"look, nothing new:                  {(time.perf_counter() - began) / runs * 1e3:.2f} ms a run")
    for run in range(runs):
        with open(root / f"run{run:04d}" / "metrics.csv", "a") as log:
            log.write("".join(_row(s) for s in range(points, points + 10)))
    began = time.perf_counter()
    watcher.poll()
    print(f"look, each run 10 points longer:    {(time.perf_counter() - began) / runs * 1e3:.2f} ms a run")


def latency(root: Path, interval: float) -> None:
    live = root / "live"
    shutil.rmtree(live, ignore_errors=True)
    live.mkdir(parents=True)
    log = open(live / "metrics.csv", "w")
    log.write("step,loss,lr\n" + "".join(_row(s) for s in range(300)))
    log.flush()
    watch = subprocess.Popen([sys.executable, "-m", "lrdiag", "watch", str(live), "--interval", str(interval),
                              "--format", "json", "--exit-on-finding"], stdout=subprocess.PIPE, text=True)
    time.sleep(3)  # started, and the first look done
    for step in range(300, 320):
        log.write(_row(step))
        log.flush()
        time.sleep(0.05)
    log.write("320,nan,0.01\n")
    log.flush()
    written = time.time()
    line = watch.stdout.readline()
    delay = time.time() - written
    watch.wait(timeout=30)
    print(f"a NaN written -> its finding printed: {delay:.2f} s at --interval {interval} "
          f"({json.loads(line)['finding']['rule']})")


def callback_cost(steps: int) -> None:
    from lrdiag.live.monitor import Monitor

    for every in (100, 500):
        monitor = Monitor(every_n_steps=every)
        began = time.perf_counter()
        for step in range(steps):
            monitor.add(step, {"loss": 2 * 0.999 ** step + 0.01 * ((step * 7919) % 13) / 13, "lr": 0.01,
                               "grad_norm": 1.0})
            if monitor.due(step):
                monitor.check(step)
        print(f"callback, 3 metrics logged every step for {steps} steps, rules every {every}: "
              f"{(time.perf_counter() - began) / steps * 1e6:.0f} us a step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lrdiag-bench-watch"))
    args = parser.parse_args()
    looks(args.dir / "runs", args.runs, args.points)
    latency(args.dir, args.interval)
    callback_cost(5000)


if __name__ == "__main__":
    main()
