"""Replay 8 candidates x 3 seeds of the example trainer side by side, against one replay alone.

    python benchmarks/bench_replay.py                      # 8 x 3, 300 steps, --device auto
    python benchmarks/bench_replay.py --small              # the CPU version: 4 x 2, 100 steps
    python benchmarks/bench_replay.py --executor ray       # the same replays as Ray tasks
    python benchmarks/bench_replay.py --json out.json      # the figures as JSON too

The candidates are lrdiag's own for sample_logs/example_spiky plus warmup-cosine schedules of
other warmup lengths, to make eight. "One replay alone" is one candidate, one seed, through the
same executor (its process start, its setup, its CUDA context), so that the ratio shows what
running side by side costs. Target on one H200-class GPU: all 24 within 3x one, the whole
benchmark within 5 minutes. Scoring the replays with the rules is not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "sample_logs" / "example_spiky"
TRAINER = "lrdiag.examples.spiky_mlp:trainer"


def candidates(count: int) -> list:
    from lrdiag.ingest.discover import find_runs
    from lrdiag.ingest.runs import read_run
    from lrdiag.recommend.candidates import Candidate, propose
    from lrdiag.recommend.command import make_engine

    run = read_run(find_runs([str(EXAMPLE)])[0])
    made = propose(run, make_engine().run(run), curves=False)
    warmup = next(c for c in made if c.name == "warmup-cosine")
    for length in (30, 45, 60, 75, 90, 105, 120):
        if len(made) >= count:
            break
        code = warmup.code.replace(f"total_iters={warmup.params['warmup_steps']}", f"total_iters={length}")
        code = code.replace(f"T_max={warmup.params['T_max']}", f"T_max={300 - length}")
        code = code.replace(f"milestones=[{warmup.params['warmup_steps']}]", f"milestones=[{length}]")
        made.append(Candidate(f"warmup{length}-cosine", "", {}, code, warmup.addresses))
    return run, made[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the CPU version: 4 candidates x 2 seeds, 100 steps")
    parser.add_argument("--candidates", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--executor", default="local", choices=("local", "ray"))
    parser.add_argument("--jobs", type=int, default=None, help="replays at once (default: one per core)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    arguments = parser.parse_args()
    count = arguments.candidates or (4 if arguments.small else 8)
    seeds = arguments.seeds or (2 if arguments.small else 3)
    steps = arguments.steps or (100 if arguments.small else 300)

    began = time.perf_counter()
    if arguments.executor == "ray":
        import ray

        ray.init(include_dashboard=False, log_to_driver=False)  # one cluster for both timings
    try:
        figures = measure(arguments, count, seeds, steps, began)
    finally:
        if arguments.executor == "ray":
            ray.shutdown()
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2))
    if figures["failed"] or figures["one_replay_status"] != "ok":
        sys.exit(1)


def measure(arguments, count: int, seeds: int, steps: int, began: float) -> dict:
    from lrdiag.recommend import executors, harness
    from lrdiag.recommend.candidates import horizon_of
    from lrdiag.recommend.command import make_engine
    from lrdiag.recommend.replay import Job

    run, chosen = candidates(count)
    horizon = horizon_of(run)
    devices = harness.resolve_device(arguments.device)
    with tempfile.TemporaryDirectory(prefix="lrdiag-bench-replay-") as scratch:
        # One replay alone first; it also starts the fork server, so neither timing pays for that.
        lr_steps, lr_values = run.primary("lr").steps.tolist(), run.primary("lr").values.tolist()
        alone_job = Job(chosen[0].name, chosen[0].code, 0, steps, TRAINER, devices[0], f"{scratch}/alone",
                        first_step=horizon.first, control_lr=(lr_steps, lr_values), eval_every=max(1, steps // 12))
        executors.run_jobs([alone_job], arguments.executor, 1, 600)  # warm-up: fork server, Ray workers
        start = time.perf_counter()
        [alone] = executors.run_jobs([alone_job], arguments.executor, 1, 600)
        one = time.perf_counter() - start
        plan = harness.Plan(TRAINER, steps=steps, seeds=seeds, device=arguments.device, executor=arguments.executor,
                            out=f"{scratch}/all", jobs=arguments.jobs, timeout=600)
        summary = harness.replay(run, horizon, chosen, make_engine(), plan)
    replays = (count + 1) * seeds  # the control is replayed too
    figures = {"device": summary["device"], "executor": arguments.executor, "concurrency": summary["concurrency"],
               "candidates": count, "seeds": seeds, "steps": steps, "replays": replays,
               "one_replay_seconds": one, "one_replay_status": alone["status"],
               "all_replays_seconds": summary["wall_seconds"], "ratio": summary["wall_seconds"] / one,
               "replay_seconds_median": summary["replay_seconds_median"], "gpu": summary["gpu"],
               "confirmed": [c.name for c in chosen if c.confirmed],
               "failed": [c.name for c in chosen if c.replay["status"] == "failed"],
               "benchmark_seconds": time.perf_counter() - began}
    print(f"device {figures['device']}, executor {arguments.executor}, {figures['concurrency'] or 'cluster'} at a time")
    print(f"one replay alone ({steps} steps):            {one:7.2f} s")
    print(f"all {replays} replays ({count} candidates + control) x {seeds} seeds: "
          f"{summary['wall_seconds']:7.2f} s  = {figures['ratio']:.2f}x one"
          + ("  (target <= 3x on a GPU)" if summary["device"].startswith("cuda") else ""))
    if summary["gpu"]:
        gpu = summary["gpu"]
        memory = f", memory up to {gpu['memory_max_mib']:.0f} MiB" if gpu["memory_max_mib"] is not None else ""
        print(f"GPU utilisation while replaying: mean {gpu['utilization_mean_pct']:.0f} %, max "
              f"{gpu['utilization_max_pct']:.0f} %{memory}")
    print(f"confirmed: {', '.join(figures['confirmed']) or 'none'}; failed: {', '.join(figures['failed']) or 'none'}")
    print(f"whole benchmark: {figures['benchmark_seconds']:.1f} s")
    return figures


if __name__ == "__main__":
    main()
