"""Read 1,000,000 points from an MLflow SQLite store, an MLflow file store and a W&B run with lrdiag,
and with the packages' own readers; print ratios.

    python benchmarks/bench_stores.py [--steps 200000] [--keys 5] [--dir /tmp/lrdiag-bench-stores] [--lrdiag-only]

The stores are written once by the real packages (MlflowClient.log_batch, wandb.log in offline
mode) and reused. MLflow's own reader is `MlflowClient.get_metric_history`, key by key, as
MLflow's UI and users fetch curves; wandb ships no Python reader for its `.wandb` files any more
(wandb-core reads them in Go), so its stand-in is wandb's own protobuf class parsing each record
that lrdiag's framing found (`Record.FromString`, then the items' JSON): the cost of decoding with
the package's classes. Target (issue 12): >= 10x faster than get_metric_history on SQLite.
lrdiag's reads in this process share its imports (pandas, protobuf: whichever store came first paid for
them), so each is also run in a fresh process, its CPU seconds imports included. --lrdiag-only skips the
packages' readers (minutes each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
KEYS = ["train/loss", "val/loss", "lr", "grad_norm", "train/acc", "val/acc", "epoch", "tokens"]


def write_mlflow(uri: str, steps: int, keys: list[str]) -> str:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("bench"), run_name="bench").info.run_id
    batch = 1000 // len(keys)  # log_batch takes at most 1000 metrics
    for start in range(0, steps, batch):
        client.log_batch(run, metrics=[Metric(key, 1.0 / (step + 1) + index, 1_700_000_000_000 + step, step)
                                       for step in range(start, min(start + batch, steps))
                                       for index, key in enumerate(keys)])
    client.set_terminated(run)
    return run


def write_wandb(folder: Path, steps: int, keys: list[str]) -> Path:
    os.environ.update(WANDB_MODE="offline", WANDB_DIR=str(folder), WANDB_SILENT="true")
    import wandb

    run = wandb.init(project="bench", name="bench")
    for step in range(steps):
        wandb.log({key: 1.0 / (step + 1) + index for index, key in enumerate(keys)})
    run.finish()
    time.sleep(2)  # wandb-core finishes flushing after finish() returns
    return next(folder.glob("wandb/offline-run-*/run-*.wandb"))


def timed(label: str, function) -> tuple[float, int]:
    """Wall seconds (the ratio's unit) and points; CPU seconds beside them, which a busy machine disturbs less."""
    started, cpu = time.perf_counter(), time.process_time()
    points = function()
    elapsed = time.perf_counter() - started
    print(f"  {label:44} {elapsed:8.2f} s {time.process_time() - cpu:8.2f} s CPU {points:12,} points", flush=True)
    return elapsed, points


def lrdiag_points(argument: str) -> int:
    from lrdiag.ingest.discover import find_runs
    from lrdiag.ingest.runs import read_run

    return sum(len(series) for spec in find_runs([argument]) for series in read_run(spec).series.values())


def fresh_cpu(argument: str) -> None:
    """CPU seconds of lrdiag's read in a fresh process, imports included (which the timings in this process share)."""
    code = ("from lrdiag.ingest.discover import find_runs\nfrom lrdiag.ingest.runs import read_run\n"
            f"for spec in find_runs([{argument!r}]):\n    read_run(spec)\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(f"  {'lrdiag in a fresh process, imports included':44} {'':10} {seconds:8.2f} s CPU", flush=True)


def mlflow_points(uri: str, run: str, keys: list[str]) -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return sum(len(client.get_metric_history(run, key)) for key in keys)


def wandb_proto_points(file: Path) -> int:
    from wandb.proto.wandb_internal_pb2 import Record

    from lrdiag.ingest.wandb_local import records

    points = 0
    for body, _ in records(file.read_bytes(), file, []):
        record = Record.FromString(body)
        if record.HasField("history"):
            points += sum(1 for item in record.history.item
                          if not (item.key or item.nested_key[0]).startswith("_") and json.loads(item.value_json) is not None)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lrdiag-bench-stores"))
    parser.add_argument("--lrdiag-only", action="store_true",
                        help="time lrdiag alone (the packages' readers take minutes)")
    args = parser.parse_args()
    keys = KEYS[:args.keys]
    root = args.dir / f"{args.steps}x{args.keys}"
    database, mlruns, wandb_folder = root / "mlflow.db", root / "mlruns", root / "wandb_run"
    if not (root / "done.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        print(f"writing {args.steps * args.keys:,} points into each store under {root} ...", flush=True)
        started = time.perf_counter()
        runs = {"sqlite": write_mlflow(f"sqlite:///{database}", args.steps, keys),
                "files": write_mlflow(mlruns.as_uri(), args.steps, keys),
                "wandb": str(write_wandb(wandb_folder, args.steps, keys))}
        (root / "done.json").write_text(json.dumps(runs))
        print(f"  written in {time.perf_counter() - started:.0f} s")
    runs = json.loads((root / "done.json").read_text())
    ratios = {}
    for store, argument, uri in (("SQLite", str(database), f"sqlite:///{database}"),
                                 ("file store", str(mlruns), mlruns.as_uri())):
        print(f"MLflow {store}:")
        ours, _ = timed("lrdiag (find_runs + read_run)", lambda: lrdiag_points(argument))
        fresh_cpu(argument)
        if args.lrdiag_only:
            continue
        theirs, _ = timed("MlflowClient.get_metric_history, each key", lambda: mlflow_points(
            uri, runs["sqlite" if store == "SQLite" else "files"], keys))
        ratios[f"MLflow {store}"] = theirs / ours
    print("W&B offline run:")
    ours, _ = timed("lrdiag (find_runs + read_run)", lambda: lrdiag_points(runs["wandb"]))
    fresh_cpu(runs["wandb"])
    if not args.lrdiag_only:
        theirs, _ = timed("wandb Record.FromString + json, each record",
                          lambda: wandb_proto_points(Path(runs["wandb"])))
        ratios["W&B"] = theirs / ours
    print()
    for name, ratio in ratios.items():
        print(f"lrdiag vs the package's reader, {name:18} {ratio:6.1f}x faster"
              + (" (target >= 10x)" if name == "MLflow SQLite" else ""))


if __name__ == "__main__":
    main()
