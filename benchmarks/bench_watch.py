"""What following live runs costs: `lrdiag watch` following 1,000 runs as they are written (its CPU share,
and how many intervals after a spike is written its finding is printed), a look per run, the delay from a
NaN written to its finding printed, and a training callback's cost per step.

    python benchmarks/bench_watch.py [--scale-runs 1000] [--rate 10] [--seconds 60] [--interval 2]
                                     [--runs 100] [--points 2000] [--dir /tmp/lrdiag-bench-watch]
    python benchmarks/bench_watch.py --agreement dev|test   # the screen against a judgement at every look

The scale run: a writer process appends `--rate` points a second to each of `--scale-runs` runs (a third
CSV logs, a third detectron2 JSON lines, a third TensorBoard event files; each starts with `--points`
points; the loss a decay with 3 % log-normal noise, an LR), and every few seconds writes a spike (8x the
loss, one point) into one run, noting when it flushed it. `lrdiag watch --format json` follows them; its CPU
time (user + system, from /proc) is read over `--seconds` once its first look is done, and each spike's
finding is matched to its write. A look at runs that did not change costs a `stat` per file; a run that
grew is screened point by point and judged by the rules when the screen fires or it grew by a quarter
(docs/watch.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

WRITER = """
import json, math, random, struct, sys, time
from pathlib import Path
from lrdiag.ingest.tfrecord import masked_crc
from tensorboard.compat.proto.event_pb2 import Event

root, runs, start = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])
rate, seconds, spike_every = float(sys.argv[3]), float(sys.argv[5]), float(sys.argv[6])
rng = random.Random(0)
def loss(step):
    return (2.0 * math.exp(-step / 3000) + 0.2) * math.exp(0.03 * rng.gauss(0, 1))
def record(data):
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))
def event(step, tag, value):
    e = Event(wall_time=time.time(), step=step)
    v = e.summary.value.add(); v.tag = tag; v.simple_value = value
    return record(e.SerializeToString())
def rows(kind, steps, scale=None):
    out = []
    for step in steps:
        value = loss(step) * (scale if scale else 1.0)
        if kind == 0: out.append(f"{step},{value},0.01\\n".encode())
        elif kind == 1: out.append(json.dumps({"iteration": step, "total_loss": value, "lr": 0.01}).encode() + b"\\n")
        else: out.append(event(step, "train/loss", value) + event(step, "train/lr", 0.01))
    return b"".join(out)
names = {0: "metrics.csv", 1: "metrics.json", 2: "events.out.tfevents.0.bench"}
handles = []
for run in range(runs):
    folder = root / f"run{run:04d}"; folder.mkdir(parents=True, exist_ok=True)
    kind = run % 3
    handle = open(folder / names[kind], "wb")
    version = record(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
    head = b"step,loss,lr\\n" if kind == 0 else (version if kind == 2 else b"")
    handle.write(head + rows(kind, range(start))); handle.flush()
    handles.append((handle, kind))
print("ready", flush=True)
sys.stdin.readline()  # go
began = time.time(); step = start; tick = 0.5; per_tick = max(1, round(rate * tick)); spikes = []
next_spike = began + spike_every
while time.time() - began < seconds:
    tick_began = time.time()
    spike_run = rng.randrange(runs) if tick_began >= next_spike else None
    for run, (handle, kind) in enumerate(handles):
        steps = range(step, step + per_tick)
        if run == spike_run:
            handle.write(rows(kind, steps[:-1]) + rows(kind, steps[-1:], scale=8.0)); handle.flush()
            spikes.append({"run": f"run{run:04d}", "step": steps[-1], "written": time.time()})
        else:
            handle.write(rows(kind, steps)); handle.flush()
    if spike_run is not None:
        next_spike += spike_every
    step += per_tick
    time.sleep(max(0.0, tick - (time.time() - tick_began)))
print(json.dumps({"spikes": spikes, "points_per_run": step}), flush=True)
"""


IMMEDIATE = ("spike", "nonfinite", "explosion")


def agreement(runs: Path, split: str, pieces: int) -> None:
    """The detection benchmark's runs written in `pieces` growing cuts, followed by watch's screened watcher
    and by one judging every run at every look: how many spikes, NaNs and explosions the second printed
    that the first had not printed by the same look, and how many judgements each made."""
    from lrdiag.config import project_setup
    from lrdiag.live.watcher import Watcher

    _, engine, roles = project_setup(None)
    records = [r for r in json.loads((runs / "manifest.json").read_text())["runs"].values() if r["split"] == split]
    late, found, judged = [], 0, {"screened": 0, "every look": 0}
    live = Path("/tmp/lrdiag-bench-watch/agreement")
    for record in records:
        source = runs / record["path"]
        files = {path: path.read_bytes() for path in sorted(source.rglob("*")) if path.is_file()}
        shutil.rmtree(live, ignore_errors=True)
        watchers = {"screened": Watcher([str(live)], engine, roles), "every look": Watcher([str(live)], engine, roles,
                                                                                            growth=0)}
        for name, watcher in watchers.items():
            watcher._detect = _counted(watcher._detect, judged, name)
        seen: set = set()
        for piece in range(1, pieces + 1):
            for path, data in files.items():
                target = live / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data[: len(data) * piece // pieces])
            for watcher in watchers.values():
                watcher.poll()
            mine = {name: state.findings.reported for name, state in watchers["screened"].runs.items()}
            for name, state in watchers["every look"].runs.items():
                for finding in state.findings.reported:
                    key = (name, finding.rule, finding.metric, finding.step_start)
                    if finding.category not in IMMEDIATE or key in seen:
                        continue
                    seen.add(key)
                    found += 1
                    if not any(f.rule == finding.rule and f.metric == finding.metric
                               and f.step_start <= finding.step_end and finding.step_start <= f.step_end
                               for f in mine.get(name, [])):
                        late.append((record["run"], *key[1:], piece))
    print(f"{len(records)} {split} runs in {pieces} growing cuts: of {found} spikes, NaNs and explosions printed by a "
          f"watcher judging every run at every look, {len(late)} came later from watch's screen; judgements "
          f"{judged['screened']} screened against {judged['every look']}")
    for run, rule, metric, step, piece in late:
        print(f"  late: {run} {rule} {metric} step {step} (cut {piece})")


def _counted(detect, counts: dict, name: str):
    def counted(state):
        counts[name] += 1
        return detect(state)
    return counted


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scale(root: Path, runs: int, rate: float, start: int, seconds: float, interval: float) -> None:
    """`lrdiag watch` on `runs` runs each appending `rate` points a second: its CPU share, and the spikes'
    delay from write to finding, in intervals."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(runs), str(rate), str(start),
                               str(seconds + 5), "4"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    watch = subprocess.Popen([sys.executable, "-m", "lrdiag", "watch", str(root), "--interval", str(interval),
                              "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    findings: list[tuple[float, dict]] = []
    threading.Thread(target=lambda: [findings.append((time.time(), json.loads(line))) for line in watch.stdout],
                     daemon=True).start()
    followed = 0
    for line in watch.stderr:  # the first look is done once every run is announced
        followed += "following run" in line
        if followed == runs:
            break
    first_look = time.monotonic() - started  # start-up, discovery and a judgement of every run
    threading.Thread(target=lambda: [None for _ in watch.stderr], daemon=True).start()
    time.sleep(interval * 3)  # the first judgements of every run are behind it
    writer.stdin.write("go\n")
    writer.stdin.flush()
    time.sleep(interval)
    cpu, began = _cpu_seconds(watch.pid), time.monotonic()
    time.sleep(seconds)
    share = (_cpu_seconds(watch.pid) - cpu) / (time.monotonic() - began)
    result = json.loads(writer.stdout.readline())
    time.sleep(3 * interval)
    watch.terminate()
    watch.wait(timeout=120)
    delays, missed = [], 0
    for spike in result["spikes"]:
        seen = [at for at, line in findings if line["run"] == spike["run"] and line["finding"]["rule"] == "LRD101"
                and line["finding"]["step_start"] <= spike["step"] <= line["finding"]["step_end"]]
        if seen:
            delays.append((min(seen) - spike["written"]) / interval)
        else:
            missed += 1
    others = sum(1 for _, line in findings if line["finding"]["rule"] != "LRD101" or not any(
        line["run"] == spike["run"] for spike in result["spikes"]))
    delays.sort()
    print(f"watch, {runs} runs ({runs // 3} CSV, {runs // 3} JSON lines, {runs - 2 * (runs // 3)} event files) from "
          f"{start} points, each appending {rate:g} points a second, --interval {interval:g}: "
          f"{100 * share:.0f} % of one core over {seconds:g} s (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores); its first look took {first_look:.1f} s")
    if delays:
        print(f"  {len(result['spikes'])} spikes written: {len(delays)} reported, after {delays[0]:.2f} to "
              f"{delays[-1]:.2f} intervals (median {delays[len(delays) // 2]:.2f}), {missed} not reported; "
              f"{others} other findings printed")


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
    import math
    import random

    from lrdiag.live.monitor import Monitor

    rng = random.Random(0)
    for every in (100, 500):
        monitor = Monitor(every_n_steps=every)
        checks, began = 0, time.perf_counter()
        for step in range(steps):  # the scale run's loss: a decay to a plateau, 3 % log-normal noise
            loss = (2.0 * math.exp(-step / 3000) + 0.2) * math.exp(0.03 * rng.gauss(0, 1))
            monitor.add(step, {"loss": loss, "lr": 0.01, "grad_norm": 1.0})
            if monitor.due(step):
                monitor.check(step)
                checks += 1
        print(f"callback, 3 metrics logged every step for {steps} steps, rules every {every} steps once the points "
              f"grew by a quarter: {(time.perf_counter() - began) / steps * 1e6:.0f} us a step ({checks} checks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale-runs", type=int, default=1000, help="0: skip the scale run")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--agreement", choices=("dev", "test"),
                        help="only replay that split of benchmarks/_detection_runs in growing cuts (see agreement())")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lrdiag-bench-watch"))
    args = parser.parse_args()
    if args.agreement:
        agreement(Path(__file__).resolve().parent / "_detection_runs", args.agreement, 30)
        return
    if args.scale_runs:
        scale(args.dir / "scale", args.scale_runs, args.rate, args.points, args.seconds, args.interval)
    if args.runs:
        looks(args.dir / "runs", args.runs, args.points)
    latency(args.dir, 0.5)
    callback_cost(5000)
    callback_cost(50000)


if __name__ == "__main__":
    main()
