"""Precision and recall of lrdiag's rules side by side with the published rules (anchors.py).

    python benchmarks/bench_precision.py [--dir /tmp/lrdiag-bench-precision] [--runs 48]

Healthy corpus: `--runs` real tiny trainings (the models, data and training loop of
sample_logs/make_samples.py) that nothing was done to: six tasks (MLP on two moons, MLP on
gaussian blobs, MLP regression, LSTM on sine windows, small CNN on shape images, tiny
transformer LM) x optimizers at an ordinary LR (SGD, SGD momentum 0.9, Adam, AdamW) x batch
size (8: noisy, 64: smooth) x schedule (constant, warmup + cosine), logged every step or every
10 steps (TensorBoard) or once per epoch (Keras CSV epoch means). Written once, then cached.
Pathological corpus: the sample logs' manifest runs, each with the pathologies it was built to show.

A run counts as flagged by a rule when the rule reports its kind of problem on any of the run's
metrics (lrdiag: a warning or error of that category; an anchor: it fired on a series of the
kind it watches). Printed per category: healthy runs flagged, and pathological runs found.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "sample_logs")]

import anchors  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("moons", "blobs", "regression", "lstm", "cnn", "transformer")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
# An ordinary LR for each optimizer, per task (what a tutorial would use): none is a pathology.
LR = {"sgd": {"moons": 0.1, "blobs": 0.05, "regression": 0.05, "lstm": 0.3, "cnn": 0.05, "transformer": 0.3},
      "momentum": {"moons": 0.02, "blobs": 0.01, "regression": 0.01, "lstm": 0.03, "cnn": 0.01, "transformer": 0.03},
      "adam": {"moons": 1e-3, "blobs": 1e-3, "regression": 1e-3, "lstm": 3e-3, "cnn": 1e-3, "transformer": 3e-3},
      "adamw": {"moons": 1e-3, "blobs": 1e-3, "regression": 1e-3, "lstm": 3e-3, "cnn": 1e-3, "transformer": 3e-3}}


def _task(name: str, g, n: int):
    """(model, train, val, loss_fn, logs accuracy)."""
    import torch

    import make_samples as ms

    if name == "moons":
        return ms.mlp([2, 64, 64, 2]), ms.two_moons(n, 0.2, g), ms.two_moons(500, 0.2, g), ms.ce_loss, True
    if name == "blobs":
        x, y, centers = ms.blobs(n, 5, 10, 2.5, g)
        xv, yv, _ = ms.blobs(500, 5, 10, 2.5, g, centers=centers)
        return ms.mlp([10, 64, 5]), (x, y), (xv, yv), ms.ce_loss, True
    if name == "regression":
        x, y, teacher = ms.teacher_regression(n, 8, g)
        xv, yv, _ = ms.teacher_regression(500, 8, g, teacher=teacher)
        return ms.mlp([8, 64, 64, 1]), (x, y), (xv, yv), ms.mse_loss, False
    if name == "lstm":
        return ms.LSTMRegressor(32), ms.sine_windows(n, 20, g), ms.sine_windows(300, 20, g), ms.mse_loss, False
    if name == "cnn":
        return ms.SmallCNN(), ms.shape_images(n, g), ms.shape_images(300, g), ms.ce_loss, True
    chain = ms.markov_chain(12, g)
    train, val = ms.markov_tokens(n, 16, chain, g), ms.markov_tokens(200, 16, chain, g)
    return ms.TinyTransformerLM(12, 16), (train, torch.zeros(n)), (val, torch.zeros(200)), ms.lm_loss, False


def _train_healthy(index: int, folder: Path) -> None:
    import torch

    import make_samples as ms

    task, optimizer = TASKS[index % len(TASKS)], OPTIMIZERS[(index // len(TASKS)) % len(OPTIMIZERS)]
    batch = (8, 64)[(index // (len(TASKS) * len(OPTIMIZERS))) % 2]
    logging = ("every step", "every 10 steps", "per epoch")[index % 3]
    cosine = index % 2 == 1
    steps = 900 if task in ("moons", "blobs", "regression") else 600
    per_epoch = 30 if logging == "per epoch" else 100  # per-epoch logs get 20-30 epochs
    g = ms.seeded(1000 + index)
    model, train, val, loss_fn, has_acc = _task(task, g, per_epoch * batch)
    lr = LR[optimizer][task]
    opt = {"sgd": lambda: torch.optim.SGD(model.parameters(), lr),
           "momentum": lambda: torch.optim.SGD(model.parameters(), lr, momentum=0.9),
           "adam": lambda: torch.optim.Adam(model.parameters(), lr),
           "adamw": lambda: torch.optim.AdamW(model.parameters(), lr, weight_decay=0.01)}[optimizer]()
    sched = ms.warmup_cosine(opt, steps // 20, steps) if cosine else None
    h = ms.fit(model, opt, train, loss_fn, steps=steps, batch_size=batch, seed=index, sched=sched,
               clip=1.0 if task in ("lstm", "transformer") else None, val=val, eval_every=per_epoch)
    name = f"{index:02d}_{task}_{optimizer}_bs{batch}_{'cosine' if cosine else 'constant'}_{logging.replace(' ', '')}"
    run_dir = folder / name
    if logging == "per epoch":
        ms.write_keras_csv(str(run_dir), h, train_metrics=("acc",) if has_acc else ())
    else:
        tags = {"loss": "train/loss", "lr": "lr", "val_loss": "val/loss", **({"val_acc": "val/acc"} if has_acc else {})}
        ms.write_tensorboard(str(run_dir), h, tags, every=1 if logging == "every step" else 10)


def healthy_corpus(folder: Path, runs: int) -> list[Path]:
    import torch

    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for index in range(runs):
        if not list(folder.glob(f"{index:02d}_*")):
            _train_healthy(index, folder)
            print(f"  trained healthy run {index + 1}/{runs} ({time.perf_counter() - started:.0f} s)", flush=True)
    return sorted(p for p in folder.iterdir() if p.is_dir() and int(p.name.split("_")[0]) < runs)


def _run(folder: Path):
    from lrdiag.ingest.discover import RunSpec, reader_for
    from lrdiag.ingest.runs import read_run

    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and reader_for(p)]
    return read_run(RunSpec(folder.name, {path: "" for path in files}))


def _anchor_flags(run) -> dict[str, bool | None]:
    """Which anchors fire on the run (None: the run has nothing the anchor watches)."""
    from lrdiag.detect.base import clean

    def series(role):
        return [s for s in run.series.values() if s.role == role]

    train, val = series("train_loss"), series("val_loss")
    acc = series("val_acc") or series("train_acc")
    flags = {"spike": any(anchors.lightning_spike(s.values) for s in train) if train else None,
             "stall": any(anchors.loss_not_decreasing(*clean(s)) for s in train + val) if train + val else None,
             "train_val_divergence": anchors.overfit(*clean(train[0]), *clean(val[0])) if train and val else None,
             "oscillation": anchors.autotrainer_unstable(clean(acc[0])[1]) if acc else None}
    return flags


def _lrdiag_flags(run, engine) -> dict[str, bool]:
    findings = engine.run(run)
    return {category: any(f.category == category and f.severity in ("error", "warning") for f in findings)
            for category in ("spike", "stall", "train_val_divergence", "oscillation")}


ANCHOR_NAMES = {"spike": "Lightning SpikeDetection", "stall": "SageMaker LossNotDecreasing",
                "train_val_divergence": "SageMaker Overfit", "oscillation": "AUTOTRAINER unstable"}


def main() -> None:
    import json

    from lrdiag.detect.engine import Engine
    from lrdiag.detect.rulefile import builtin_rules_dir, load_rules

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lrdiag-bench-precision"))
    parser.add_argument("--runs", type=int, default=48)
    args = parser.parse_args()
    engine = Engine(load_rules([builtin_rules_dir()]))

    print(f"healthy corpus: {args.runs} real tiny trainings (cached in {args.dir}) ...", flush=True)
    healthy = [_run(p) for p in healthy_corpus(args.dir, args.runs)]
    manifest = json.loads((ROOT / "sample_logs" / "manifest.json").read_text())["runs"]
    healthy += [_run(ROOT / "sample_logs" / name) for name, entry in manifest.items() if entry["healthy"]]
    sick = {name: (_run(ROOT / "sample_logs" / name), {e["category"] for e in entry["expect"]})
            for name, entry in manifest.items() if not entry["healthy"]}

    rows, lrdiag_flagged = [], {}
    healthy_anchor = [_anchor_flags(run) for run in healthy]
    healthy_lrdiag = [_lrdiag_flags(run, engine) for run in healthy]
    sick_anchor = {name: _anchor_flags(run) for name, (run, _) in sick.items()}
    sick_lrdiag = {name: _lrdiag_flags(run, engine) for name, (run, _) in sick.items()}
    for category, anchor in ANCHOR_NAMES.items():
        applicable = [flags[category] for flags in healthy_anchor if flags[category] is not None]
        built = [name for name, (_, expected) in sick.items() if category in expected]
        watched = [name for name in built if sick_anchor[name][category] is not None]
        found_anchor = sum(bool(sick_anchor[name][category]) for name in watched)
        found_lrdiag = sum(sick_lrdiag[name][category] for name in built)
        lrdiag_flagged[category] = [run.name for run, flags in zip(healthy, healthy_lrdiag) if flags[category]]
        rows.append((category, anchor, f"{sum(applicable)}/{len(applicable)}",
                     f"{len(lrdiag_flagged[category])}/{len(healthy)}",
                     f"{found_anchor}/{len(watched)}", f"{found_lrdiag}/{len(built)}"))
    header = ("category", "anchor", "healthy flagged: anchor", "lrdiag", "built-in pathology found: anchor", "lrdiag")
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    for category, names in lrdiag_flagged.items():
        if names:
            print(f"lrdiag {category} on healthy runs: {', '.join(names)}")
    print(f"\nhealthy runs: {len(healthy)} ({args.runs} trained here + the sample logs' healthy ones); "
          f"pathological: {len(sick)} sample-log runs. 'n/m' = runs flagged / runs the rule applies to"
          " (AUTOTRAINER watches accuracy: runs that log none are left out of its count).")


if __name__ == "__main__":
    main()
