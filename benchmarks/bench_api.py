"""`lrdiag.read` in process against the anchors notebooks use today; print times, peak memory and ratios.

    python benchmarks/bench_api.py [--steps 200000] [--tags 5] [--runs 1000] [--rows 100] [--repeat 3]

1. A 1,000,000-scalar TensorBoard event file (200k steps x 5 tags, written by torch's SummaryWriter: the
   file of bench_ingest.py, reused) into a DataFrame: `lrdiag.read(folder)` against tbparse's
   `SummaryReader(folder).scalars` (target: >= 10x faster, lower peak memory).
2. A folder of 1,000 small CSV runs (`metrics.csv`: step, train_loss, val_loss, lr) into one table:
   `lrdiag.read(folder)` against `pandas.read_csv` in a loop plus `concat` (a wide table, no discovery,
   no roles), and the same plus `melt` into lrdiag's long form.

Each loader runs in a fresh interpreter whose imports (pandas, numpy, the protobufs, lrdiag, tbparse) are
done before the clock starts, so that its peak resident memory (VmHWM) can be set against the
interpreter's own size after imports. A loader's time is the median of --repeat runs, its peak the
largest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import write_events  # noqa: E402 - the same SummaryWriter file as bench_ingest.py

EVENT_LOADERS = {
    "lrdiag.read": "table = lrdiag.read(PATH)",
    "lrdiag.read(verify=False)": "table = lrdiag.read(PATH, verify=False)",
    "tbparse SummaryReader.scalars": "table = SummaryReader(str(PATH)).scalars",
}
CSV_LOADERS = {
    "lrdiag.read (a process per core)": "table = lrdiag.read(PATH)",
    "lrdiag.read(jobs=1)": "table = lrdiag.read(PATH, jobs=1)",
    "pandas read_csv loop + concat": """
files = sorted(PATH.glob("*/metrics.csv"))
table = pd.concat([pd.read_csv(f).assign(run=f.parent.name) for f in files], ignore_index=True)
""",
    "pandas loop + concat + melt (long)": """
files = sorted(PATH.glob("*/metrics.csv"))
wide = pd.concat([pd.read_csv(f).assign(run=f.parent.name) for f in files], ignore_index=True)
table = wide.melt(id_vars=["run", "step"], var_name="metric").astype({"run": "category", "metric": "category"})
""",
}

RUNNER = """
import sys, time, warnings
from pathlib import Path
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
PATH = Path(sys.argv[1])
import numpy as np, pandas as pd, google.protobuf, tensorboard.compat.proto.event_pb2
import lrdiag, lrdiag.api, lrdiag.pipeline, lrdiag.ingest.runs
from tbparse import SummaryReader
warnings.simplefilter("ignore")  # tbparse's pandas deprecation warnings are not the loader's cost
base = rss("VmRSS")
start = time.perf_counter()
exec(sys.argv[2])
elapsed = time.perf_counter() - start
cells = table["value"].notna().sum() if "value" in table else table.drop(columns=["run", "step"]).notna().sum().sum()
print(elapsed, rss("VmHWM") - base, len(table), int(cells))
"""


def write_csv_runs(folder: Path, runs: int, rows: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    steps = np.arange(rows) * 10
    for index in range(runs):
        run = folder / f"run_{index:04d}"
        run.mkdir(parents=True, exist_ok=True)
        loss = 2 * np.exp(-steps / (rows * 3)) + 0.3 + 0.02 * rng.standard_normal(rows)
        val = loss + 0.1 + 0.02 * rng.standard_normal(rows)
        np.savetxt(run / "metrics.csv", np.column_stack([steps, loss, val, np.full(rows, 1e-3)]), delimiter=",",
                   header="step,train_loss,val_loss,lr", comments="", fmt=["%d", "%.6g", "%.6g", "%.6g"])


def measure(loaders: dict[str, str], path: Path, repeat: int) -> dict[str, dict]:
    results = {}
    print(f"{'loader':36} {'time s':>8} {'peak MB':>8} {'rows':>10} {'values':>10}")
    for name, code in loaders.items():
        runs = []
        for _ in range(repeat):
            out = subprocess.run([sys.executable, "-c", RUNNER, str(path), code], capture_output=True, text=True,
                                 cwd=Path(__file__).resolve().parents[1])
            if out.returncode:
                print(f"{name:36} failed: {out.stderr.strip().splitlines()[-1]}")
                break
            elapsed, peak, rows, values = out.stdout.split()
            runs.append((float(elapsed), float(peak), int(rows), int(values)))
        if len(runs) == repeat:
            results[name] = {"seconds": statistics.median(r[0] for r in runs), "peak_mb": max(r[1] for r in runs),
                             "rows": runs[0][2], "values": runs[0][3], "all_seconds": [r[0] for r in runs]}
            one = results[name]
            print(f"{name:36} {one['seconds']:8.2f} {one['peak_mb']:8.0f} {one['rows']:10,} {one['values']:10,}")
    return results


def ratio(results: dict, ours: str, anchor: str, label: str) -> None:
    if ours in results and anchor in results:
        faster = results[anchor]["seconds"] / results[ours]["seconds"]
        memory = results[anchor]["peak_mb"] / max(results[ours]["peak_mb"], 1e-9)
        print(f"{label}: {faster:5.1f}x faster, {memory:5.1f}x less peak memory "
              f"({results[ours]['peak_mb']:.0f} MB vs {results[anchor]['peak_mb']:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--tags", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lrdiag-bench"))
    args = parser.parse_args()

    event_dir = args.dir / f"events_{args.steps}x{args.tags}"
    if not list(event_dir.glob("*tfevents*")):
        print(f"writing {args.steps * args.tags:,} scalars with SummaryWriter into {event_dir} ...", flush=True)
        started = time.perf_counter()
        write_events(event_dir, args.steps, args.tags)
        print(f"  written in {time.perf_counter() - started:.1f} s")
    [event_file] = event_dir.glob("*tfevents*")
    print(f"\n1. {event_file} ({event_file.stat().st_size / 1e6:.1f} MB), median of {args.repeat}\n")
    events = measure(EVENT_LOADERS, event_dir, args.repeat)

    csv_dir = args.dir / f"csv_{args.runs}x{args.rows}"
    if len(list(csv_dir.glob("*/metrics.csv"))) != args.runs:
        write_csv_runs(csv_dir, args.runs, args.rows)
    print(f"\n2. {csv_dir}: {args.runs:,} runs x {args.rows} rows x 3 metrics, median of {args.repeat}\n")
    csvs = measure(CSV_LOADERS, csv_dir, args.repeat)

    print()
    ratio(events, "lrdiag.read", "tbparse SummaryReader.scalars", "lrdiag.read vs tbparse (target >= 10x)      ")
    ratio(events, "lrdiag.read(verify=False)", "tbparse SummaryReader.scalars", "lrdiag.read(verify=False) vs tbparse        ")
    # One process each: the pool's workers are not in the parent's peak memory.
    ratio(csvs, "lrdiag.read(jobs=1)", "pandas read_csv loop + concat", "lrdiag.read(jobs=1) vs pandas loop + concat ")
    ratio(csvs, "lrdiag.read(jobs=1)", "pandas loop + concat + melt (long)",
          "lrdiag.read(jobs=1) vs loop + concat + melt  ")
    print(json.dumps({"events": events, "csv": csvs}))


if __name__ == "__main__":
    main()
