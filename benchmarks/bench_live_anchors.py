"""Live stops side by side: lrdiag's training callback, Lightning's SpikeDetection and llm-foundry's
KillLossSpike on the same runs of the detection benchmark, replayed point by point.

    python benchmarks/bench_live_anchors.py [--split test|dev] [--runs DIR] [--json PATH]

"Live" here is a replay: each finished run of benchmarks/_detection_runs (gen_detection.py) is read once
with lrdiag's readers and its logged points are handed over in step order, as a training loop would hand
them to a callback. lrdiag's callback core (lrdiag.live.monitor.Monitor, what LrdiagCallback runs) gets
every metric logged at a step and checks at its defaults: every 100 steps (every epoch for runs logged
per epoch, as the Keras callback), at once on a NaN or infinite value, with the project's rules; it stops
at the first finding at or above `stop_on` (two rows: "error", its default, and "warning"). The anchors
(anchors.py, from their source, defaults untouched) get the training loss as logged, one value a batch;
they stop at their first alarm. Nothing is tuned here.

Scored on the split's runs (excluded runs left out, as bench_detection.py does):
- healthy runs (no label): a stop is a false stop;
- runs labelled spike, explosion or nonfinite: caught when the monitor stopped at or after the label's
  onset less the matching tolerance of detection/score.py; a stop before that is counted as early (a
  false stop too), no stop as missed. Until caught: training-loss points logged from the onset to the
  stop (0: at the first point logged at or after the onset), a comparable count whether a run logs per
  step or per epoch. A stop counts whatever made it (an anchor names no category).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from anchors import kill_loss_spike_at, lightning_spike_at  # noqa: E402
from detection.score import tolerance  # noqa: E402

DEFAULT_RUNS = Path(__file__).resolve().parent / "_detection_runs"
CATEGORIES = ("spike", "explosion", "nonfinite")
MONITORS = ("lrdiag (stop_on=error)", "lrdiag (stop_on=warning)", "Lightning SpikeDetection",
            "llm-foundry KillLossSpike")


def read(run_dir: Path) -> dict:
    """Every series of the run folder, as `lrdiag analyze` reads it (sub-runs merged, first name wins)."""
    from lrdiag.ingest.discover import find_runs
    from lrdiag.ingest.runs import read_run

    series = {}
    for spec in find_runs([str(run_dir)]):
        for tag, one in read_run(spec).series.items():
            series.setdefault(tag, one)
    return series


def lrdiag_stop(series: dict, stop_on: str, every: int) -> tuple[float | None, str | None]:
    """The step at which lrdiag's callback core stops the run, fed every metric step by step, and the rule
    of the finding it stopped on."""
    from lrdiag.live.monitor import Monitor

    monitor = Monitor("replay", stop_on=stop_on, every_n_steps=every)
    points = sorted((step, order, tag, value) for order, (tag, one) in enumerate(series.items())
                    for step, value in zip(one.steps.tolist(), one.values.tolist()))
    index = 0
    while index < len(points):
        step, logged = points[index][0], {}
        while index < len(points) and points[index][0] == step:
            logged[points[index][2]] = points[index][3]
            index += 1
        monitor.add(int(step), logged)
        if monitor.due(int(step)):
            monitor.check(int(step))
            if monitor.stop_finding is not None:
                return step, monitor.stop_finding.rule
    return None, None


def stops(record: dict, run_dir: Path) -> tuple[dict, dict, dict]:
    """Each monitor's stop step (or None), the run's training loss, and its metrics for the tolerance."""
    series = read(run_dir)
    train = next((series[tag] for tag in record["tags"]["train_loss"] if tag in series), None)
    if train is None:
        raise SystemExit(f"{run_dir}: none of the training-loss tags {record['tags']['train_loss']} was read")
    steps, values = train.steps, train.values
    every = 1 if record["x"]["unit"] == "epoch" else 100
    found = {MONITORS[0]: lrdiag_stop(series, "error", every), MONITORS[1]: lrdiag_stop(series, "warning", every)}
    for name, rule in ((MONITORS[2], lightning_spike_at), (MONITORS[3], kill_loss_spike_at)):
        at = rule(values)
        found[name] = (None, None) if at is None else (float(steps[at]), None)
    metrics = {tag: {"first_step": float(one.steps[0]), "last_step": float(one.steps[-1]), "points": len(one),
                     "role": one.role} for tag, one in series.items() if len(one)}
    return found, {"steps": steps, "values": values}, metrics


def outcome(record: dict, found: tuple, loss: dict, metrics: dict) -> dict:
    stop, rule = found
    if not record["labels"]:
        return {"kind": "healthy", "stopped": stop is not None, "step": stop, "rule": rule}
    label = next(label for label in record["labels"] if label["category"] == record["category"])
    onset = label["onset"] - tolerance(label, metrics)
    if stop is None:
        return {"kind": record["category"], "result": "missed"}
    if stop < onset:
        return {"kind": record["category"], "result": "early", "step": stop, "rule": rule}
    points = int(np.count_nonzero((loss["steps"] >= label["onset"]) & (loss["steps"] < stop)))
    return {"kind": record["category"], "result": "caught", "step": stop, "rule": rule,
            "steps_after_onset": stop - label["onset"], "points_after_onset": points}


def table(results: dict) -> dict:
    summary = {}
    for monitor in MONITORS:
        rows = [run[monitor] for run in results.values()]
        healthy = [row for row in rows if row["kind"] == "healthy"]
        entry = {"healthy": len(healthy), "false_stops": sum(row["stopped"] for row in healthy)}
        for category in CATEGORIES:
            sick = [row for row in rows if row["kind"] == category]
            caught = [row["points_after_onset"] for row in sick if row["result"] == "caught"]
            entry[category] = {"runs": len(sick), "caught": len(caught),
                               "early": sum(row["result"] == "early" for row in sick),
                               "median_points": statistics.median(caught) if caught else None}
        summary[monitor] = entry
    return summary


def markdown(summary: dict, split: str) -> str:
    lines = ["| monitor | false stops, healthy runs | " + " | ".join(
        f"{category}: caught (early) | median points to catch" for category in CATEGORIES) + " |",
        "|---|---|" + "---|---|" * len(CATEGORIES)]
    for monitor, entry in summary.items():
        share = 100 * entry["false_stops"] / entry["healthy"] if entry["healthy"] else 0.0
        cells = [f"{entry['false_stops']}/{entry['healthy']} ({share:.1f} %)"]
        for category in CATEGORIES:
            row = entry[category]
            median = "–" if row["median_points"] is None else f"{row['median_points']:g}"
            cells += [f"{row['caught']}/{row['runs']} ({row['early']})", median]
        lines.append(f"| {monitor} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n{split} split, replayed point by point."


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("test", "dev"), default="test")
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="the generator's --out folder")
    parser.add_argument("--json", type=Path, help="where to write the summary and each run's outcome")
    args = parser.parse_args(argv)
    manifest = args.runs / "manifest.json"
    if not manifest.exists():
        print(f"{manifest}: no manifest; generate the runs first: python benchmarks/gen_detection.py", file=sys.stderr)
        return 2
    records = [r for r in json.loads(manifest.read_text())["runs"].values()
               if r["split"] == args.split and not r["excluded"] and (not r["labels"] or r["category"] in CATEGORIES)]
    results = {}
    print(f"replaying {len(records)} {args.split} runs ...", file=sys.stderr)
    for record in records:
        found, loss, metrics = stops(record, args.runs / record["path"])
        results[record["run"]] = {monitor: outcome(record, stop, loss, metrics) for monitor, stop in found.items()}
    summary = table(results)
    print(markdown(summary, args.split))
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "summary": summary, "runs": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
