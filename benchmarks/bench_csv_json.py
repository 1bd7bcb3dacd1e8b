"""The CSV and JSON readers on generated logs, each beside a plain parse of the same file; rows/s and peak memory.

    python benchmarks/bench_csv_json.py [--dir /tmp/lrdiag-bench/text] [--big] [--only metrics.json ...] [--repeat N]

Every reading runs in a fresh interpreter (imports done first, not counted): CPU seconds (user +
system, the fair measure on a shared machine) and the growth of its peak resident size (VmHWM,
reset after the imports) as a multiple of the file's size. The anchors parse the same bytes
with no checks at all: `pandas.read_csv` for CSV, `json.loads` per line for JSON lines,
`json.load` for trainer_state.json. Targets (issues 10 and 13): CSV >= 3M rows/s, JSON lines
>= 1M rows/s, JSON keys >= 1M/s whatever the shape, peak <= 2x the file.

--big adds a 10M-row CSV (~340 MB) and a ~1 GB trainer_state.json (minutes to write; kept).
Inputs are written once under --dir (outside the repository) and reused.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

MEASURE = """
import json, pathlib, sys, time
import numpy, pandas
from lrdiag.ingest import csvlog, jsonlog
def vm(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))
path = pathlib.Path(sys.argv[2])
open("/proc/self/clear_refs", "w").write("5")
before = vm("VmRSS:")
start = time.process_time()
exec(sys.argv[1])
seconds = time.process_time() - start
print(seconds, vm("VmHWM:") - before, count)
"""
READERS = {
    "lrdiag csv": "result = csvlog.read(path); assert not result.problems; count = len(result.series)",
    "lrdiag json": "result = jsonlog.read(path); assert not result.problems; count = len(result.series)",
    "pandas.read_csv": "count = len(pandas.read_csv(path).columns)",
    "json.loads per line": "count = len({key for line in open(path, 'rb') for key in json.loads(line)})",
    "json.load": "count = len(json.load(open(path, 'rb'))['log_history'])",
    # The least any reader of lrdiag's output can cost: orjson's parse of each line, then what
    # `ReadResult.series` is, a Series a key (its own values array, one shared steps array) in a dict
    # by name; no check, no step, no bookkeeping. Where every key is new, these objects are most of a read.
    "orjson, Series a key": "import gc, itertools, orjson\n"
                            "gc.disable()  # a million new objects: as lrdiag's readers, no collection meanwhile\n"
                            "from lrdiag.series.model import Series\n"
                            "names, values = [], []\n"
                            "for line in path.read_bytes().splitlines():\n"
                            "    record = orjson.loads(line); names.extend(record); values.extend(record.values())\n"
                            "rows = numpy.array(values, dtype=float).reshape(-1, 1)\n"
                            "steps = itertools.repeat(numpy.zeros(1, numpy.int64))\n"
                            "count = len(dict(zip(names, map(Series.of_arrays, names, steps, rows))))",
}


def write_lightning_csv(path: pathlib.Path, rows: int) -> None:
    """Sparse Lightning CSVLogger rows: a train loss every row, the LR every 50th, a val loss every 1000th."""
    import pandas as pd

    for first in range(0, rows, 1_000_000):  # a million rows at a time: the writer's memory stays small
        steps = np.arange(first, min(first + 1_000_000, rows))
        pd.DataFrame({
            "epoch": steps // 1000,
            "step": steps,
            "train_loss_step": np.exp(-steps / rows) + np.random.default_rng(first).random(steps.size) * 0.1,
            "lr-AdamW": np.where(steps % 50 == 0, 1e-3, np.nan),
            "val_loss": np.where(steps % 1000 == 999, 0.5, np.nan),
        }).to_csv(path, index=False, mode="a" if first else "w", header=not first)


def write_wide_csv(path: pathlib.Path, columns: int) -> None:
    """A step column and `columns` per-class metrics, 3 rows: each row about a chunk long."""
    with path.open("w") as out:
        out.write("step," + ",".join(f"AP-class{index}" for index in range(columns)) + "\n")
        for step in range(3):
            out.write(f"{step}," + ",".join(f"{index / 7:.4f}" for index in range(columns)) + "\n")


def write_detectron2_json(path: pathlib.Path, rows: int) -> None:
    """detectron2 metrics.json lines (sorted keys, full float precision), an evaluation line every 5000."""
    rng = np.random.default_rng(0)
    loss = rng.random((rows, 3))
    with path.open("w") as out:
        for iteration in range(rows):
            box, cls, total = loss[iteration].tolist()
            out.write(f'{{"data_time": 0.0042, "eta_seconds": {rows - iteration}.5, "iteration": {iteration}, '
                      f'"loss_box_reg": {box!r}, "loss_cls": {cls!r}, "lr": 0.02, "time": 0.31, "total_loss": {total!r}}}\n')
            if iteration % 5000 == 4999:
                out.write(f'{{"bbox/AP": 30.5, "bbox/AP50": 50.1, "bbox/AP75": 31.2, "bbox/APl": 40.0, '
                          f'"bbox/APm": 33.3, "bbox/APs": 12.1, "iteration": {iteration}}}\n')


def write_wide_json(path: pathlib.Path, keys: int) -> None:
    """1,000 short detectron2 lines, then one evaluation line with `keys` distinct per-class keys."""
    with path.open("w") as out:
        for step in range(1000):
            out.write(json.dumps({"iteration": step, "total_loss": 1 / (step + 1), "lr": 0.01}) + "\n")
        out.write(json.dumps({"iteration": 1000, **{f"AP-class{index}": index / 7 for index in range(keys)}}) + "\n")


def write_alternating_json(path: pathlib.Path, rows: int) -> None:
    """Training and validation lines in turn, each kind with its own keys (two layouts)."""
    rng = np.random.default_rng(0)
    with path.open("w") as out:
        for iteration, loss in enumerate(rng.random(rows).tolist()):
            out.write(json.dumps({"iteration": iteration, "val_loss": loss, "acc": 0.5, "mode": "val"} if iteration % 2
                                 else {"iteration": iteration, "loss": loss, "lr": 0.1}) + "\n")


def write_varied_json(path: pathlib.Path, rows: int) -> None:
    """Lines of 1 to 4 of 10 losses, in any order: a layout a line, which pandas' parser reads."""
    rng = np.random.default_rng(0)
    with path.open("w") as out:
        for iteration in range(rows):
            keys = rng.choice(10, rng.integers(1, 5), replace=False).tolist()
            losses = {f"loss_{key}": float(rng.random()) for key in keys}
            out.write(json.dumps({"iteration": iteration, **losses}) + "\n")


def write_distinct_json(path: pathlib.Path, rows: int) -> None:
    """A new key on every line: a series a line."""
    with path.open("w") as out:
        for iteration in range(rows):
            out.write(json.dumps({"iteration": iteration, f"metric_{iteration}": iteration / 2}) + "\n")


def write_trainer_state(path: pathlib.Path, entries: int) -> None:
    """An HF trainer_state.json (indent 2, sorted keys, an evaluation every 1000 steps), written entry by entry."""
    rng = np.random.default_rng(0)

    def history():
        for step in range(1, entries + 1):
            yield {"epoch": round(step / 1000, 4), "grad_norm": float(rng.random()),
                   "learning_rate": 5e-5 * (1 - step / entries), "loss": float(rng.random()), "step": step}
            if step % 1000 == 0:
                yield {"epoch": step / 1000, "eval_loss": float(rng.random()), "eval_runtime": 1.5, "step": step}
    with path.open("w") as out:
        out.write('{\n  "best_metric": null,\n  "epoch": %d.0,\n  "global_step": %d,\n  "log_history": [\n'
                  % (entries // 1000, entries))
        for index, entry in enumerate(history()):
            out.write((",\n" if index else "") + "    " + json.dumps(entry, indent=2).replace("\n", "\n    "))
        out.write('\n  ],\n  "max_steps": %d,\n  "trial_name": null\n}\n' % entries)


def measure(reader: str, path: pathlib.Path) -> tuple[float, float, int]:
    out = subprocess.run([sys.executable, "-c", MEASURE, READERS[reader], str(path)], capture_output=True,
                         text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    seconds, peak, count = out.stdout.split()
    return float(seconds), int(peak), int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=pathlib.Path, default=pathlib.Path("/tmp/lrdiag-bench/text"))
    parser.add_argument("--big", action="store_true", help="add a 10M-row CSV and a ~1 GB trainer_state.json")
    parser.add_argument("--only", nargs="+", metavar="FILE", help="only these cases (file names, e.g. wide.json)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="fresh processes a reading, alternating the two readers: the least CPU and the greatest "
                             "peak of N (the least CPU is the reading's own cost, what other work on a shared "
                             "machine adds to it left out), with the spread")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    # (file, writer, size argument, what a row is, rows, the lrdiag reader, the anchor[s])
    floor = ("json.loads per line", "orjson, Series a key")
    cases = [
        ("metrics.csv", write_lightning_csv, 1_000_000, "rows", 1_000_000, "lrdiag csv", "pandas.read_csv"),
        ("wide.csv", write_wide_csv, 50_000, "columns", 50_000, "lrdiag csv", "pandas.read_csv"),
        ("metrics.json", write_detectron2_json, 1_000_000, "lines", 1_000_200, "lrdiag json", "json.loads per line"),
        ("wide.json", write_wide_json, 100_000, "keys", 103_002, "lrdiag json", floor),
        ("wide_1M.json", write_wide_json, 1_000_000, "keys", 1_003_002, "lrdiag json", floor),
        ("alternating.json", write_alternating_json, 300_000, "lines", 300_000, "lrdiag json", "json.loads per line"),
        ("varied.json", write_varied_json, 200_000, "keys", 0, "lrdiag json", "json.loads per line"),
        ("distinct.json", write_distinct_json, 300_000, "keys", 600_000, "lrdiag json", floor),
        ("trainer_state.json", write_trainer_state, 400_000, "entries", 400_400, "lrdiag json", "json.load"),
    ]
    if args.big:
        cases += [("big.csv", write_lightning_csv, 10_000_000, "rows", 10_000_000, "lrdiag csv", "pandas.read_csv"),
                  ("big_trainer_state.json", write_trainer_state, 6_000_000, "entries", 6_006_000, "lrdiag json",
                   "json.load")]
    cases = [case for case in cases if not args.only or case[0] in args.only]
    print(f"{'file':24} {'MB':>6}  {'reader':21} {'CPU s':>6} {'per s':>11} {'peak MB':>8} {'x file':>6}")
    for name, write, size, unit, rows, ours, anchors in cases:
        anchors = (anchors,) if isinstance(anchors, str) else anchors
        path = args.dir / name
        if not path.exists():
            print(f"writing {path} ...", flush=True)
            write(path, size)
        megabytes = path.stat().st_size / 1e6
        if not rows:  # keys that vary from line to line: counted
            with path.open("rb") as lines:
                rows = sum(line.count(b'": ') for line in lines)
        runs = {ours: [], **{anchor: [] for anchor in anchors}}
        for _ in range(args.repeat):
            for reader in runs:
                runs[reader].append(measure(reader, path))
        timings = {}
        for reader, measured in runs.items():
            seconds, peak = min(run[0] for run in measured), max(run[1] for run in measured)
            timings[reader] = seconds
            spread = f"  (CPU {seconds:.2f}-{max(run[0] for run in measured):.2f} s)" if args.repeat > 1 else ""
            print(f"{name:24} {megabytes:6.0f}  {reader:21} {seconds:6.2f} {rows / seconds:>11,.0f} "
                  f"{peak / 1e6:8.0f} {peak / path.stat().st_size:6.2f}  {unit}{spread}")
        # the machine's speed varies: the ratio to the anchor, measured side by side, is what compares
        for anchor in anchors:
            label = "lrdiag / anchor" if len(anchors) == 1 else f"/ {anchor}"  # lrdiag / each anchor
            print(f"{name:24} {'':6}  {label:21} {timings[ours] / timings[anchor]:6.2f}")



if __name__ == "__main__":
    main()
