"""End-to-end `lrdiag analyze` on a generated folder of 1,000 runs of ~20,000 points per metric.

    python benchmarks/bench_detect.py [--runs 1000] [--points 20000] [--dir /tmp/lrdiag-bench-detect]

Ten distinct runs (train loss, val loss, LR; some healthy, some with spikes, oscillation, a
stall or overfitting) are written once with torch's SummaryWriter, then copied into the
run folders (not hard-linked: lrdiag reads each real file once, by device and inode, so links
would make 1,000 folders 10 runs). The whole analysis (discovery, reading, every rule) is timed, once at half the
points too, to show that the cost is linear in points. Target: under 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _curves(points: int, kind: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.arange(points)
    train = 0.1 + 2.2 * np.exp(-t / (points / 6)) * np.exp(0.15 * rng.standard_normal(points))
    val = 0.15 + 2.2 * np.exp(-t / (points / 6)) * np.exp(0.02 * rng.standard_normal(points))
    lr = np.minimum(1.0, t / (points / 20)) * 0.5 * (1 + np.cos(np.pi * t / points)) * 1e-3
    if kind == 1:  # spikes
        train[rng.integers(points // 10, points, 3)] *= 12
    elif kind == 2:  # oscillation
        train *= np.exp(0.4 * np.cos(2 * np.pi * t / 40))
    elif kind == 3:  # overfitting
        val += np.clip(t - points // 2, 0, None) / points
    elif kind == 4:  # stall after the LR collapsed
        lr[points // 5:] = 1e-8
        train[points // 5:] = train[points // 5 - 1]
    return {"train/loss": train, "val/loss": val, "lr": lr}


def _write_base(base: Path, points: int) -> list[Path]:
    from torch.utils.tensorboard import SummaryWriter

    runs = []
    for index in range(10):
        folder = base / f"base_{index}"
        if not list(folder.glob("*tfevents*")):
            writer = SummaryWriter(str(folder), max_queue=100_000, flush_secs=3600)
            curves = _curves(points, index % 5, np.random.default_rng(index))
            for step in range(points):
                for tag, values in curves.items():
                    writer.add_scalar(tag, float(values[step]), step)
            writer.close()
        runs.append(next(folder.glob("*tfevents*")))
    return runs


def _tree(root: Path, base_files: list[Path], runs: int) -> Path:
    tree = root / f"copies_{runs}"
    if not tree.exists():
        for index in range(runs):
            folder = tree / f"run_{index:04d}"
            folder.mkdir(parents=True)
            source = base_files[index % len(base_files)]
            shutil.copyfile(source, folder / source.name)
    return tree


def _analyze(tree: Path) -> tuple[float, float, int, int]:
    """Wall seconds, CPU seconds (the analysis and its workers: on a busy machine the wall time
    says more about the neighbours than about lrdiag, the CPU time does not), points, findings."""
    children = os.times()
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lrdiag", "analyze", str(tree), "--format", "json", "--exit-zero"],
                         capture_output=True, text=True, check=True).stdout
    elapsed = time.perf_counter() - started
    after = os.times()
    cpu = (after.children_user - children.children_user) + (after.children_system - children.children_system)
    import json

    doc = json.loads(out)
    points = sum(m["points"] for run in doc["runs"] for m in run["metrics"].values())
    findings = sum(len(run["findings"]) for run in doc["runs"])
    if len(doc["runs"]) != sum(1 for _ in tree.iterdir()):
        raise SystemExit(f"lrdiag read {len(doc['runs'])} runs of the {sum(1 for _ in tree.iterdir())} in {tree}")
    return elapsed, cpu, points, findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lrdiag-bench-detect"))
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; writing base runs (cached) ...", flush=True)
    results = []
    for points in (args.points // 2, args.points):
        base = _write_base(args.dir / f"base_{points}", points)
        tree = _tree(args.dir / f"p{points}", base, args.runs)
        elapsed, cpu, total, findings = _analyze(tree)
        results.append((points, elapsed, total))
        print(f"{args.runs} runs x {points:,} points/metric: {elapsed:6.1f} s, {total / elapsed / 1e6:.2f} M points/s, "
              f"{findings} findings; {cpu:.1f} CPU s ({cpu / os.cpu_count():.1f} s of wall on {os.cpu_count()} idle cores)")
    (half, t_half, _), (full, t_full, _) = results
    print(f"\nend to end: {t_full:.1f} s for {args.runs} runs x {full:,} points (target < 30 s); "
          f"doubling the points multiplied the time by {t_full / t_half:.2f} (linear: 2.0)")
    # time = fixed + slope * points: the two sizes give both terms.
    slope = (t_full - t_half) / (full - half)
    fixed = t_half - slope * half
    print(f"cost model: {fixed:.1f} s fixed (start-up, discovery, per-run overhead) + {slope * 1e3:.2f} s per "
          f"1,000 points per metric: {t_full - fixed:.1f} s of the {t_full:.1f} s grow linearly with the points")


if __name__ == "__main__":
    main()
