"""Cold start: the CPU seconds (user + sys) of `lrdiag --version` and of `lrdiag analyze` on one small run of
each format, each in a fresh process, side by side with bare Python, the imports they could pay for, and
`tensorboard --version`.

    python benchmarks/bench_coldstart.py [--repeat 7]

Each command runs once to warm the disk cache and write bytecode (PYTHONDONTWRITEBYTECODE is unset for the
children: an installed lrdiag has its .pyc files, a run from source without them compiles every module at
each start), then --repeat times; the median is shown with the fastest, the target (issue 13: --version
<= 0.10 s, analyze of a small run <= 0.30 s) and the heavy libraries the command imported (from one run under
`python -X importtime`). tests/test_coldstart.py guards the imports; the seconds are measured only here.
MLflow and W&B runs come from ../shared/real_logs when it is there. Two generated Lightning logs either side
of csvlog.PLAIN_BYTES show what the plain CSV parser costs at its largest and what pandas costs just above it.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_logs"
HEAVY = ("numpy", "pandas", "pyarrow", "scipy", "google.protobuf", "tensorboard", "torch", "ray", "matplotlib")
PYTHON = [sys.executable]
LRDIAG = [sys.executable, "-m", "lrdiag"]
SMALL_RUNS = {  # format: a small sample run (what a CI gate or an editor integration reads)
    "TensorBoard event file": "example_spiky",
    "Lightning metrics.csv": "lightning_csv/mlp_adam_overfit",
    "Keras CSVLogger": "keras_csv/mlp_adam_overfit",
    "HF trainer_state.json": "trainer_state/transformer_adamw_linear",
    "detectron2 metrics.json": "detectron2/detector_lr_spikes",
}

REAL = ROOT.parent / "shared" / "real_logs"
REAL_RUNS = {  # small runs of the trackers' stores, from the real logs when they are here (rows skipped otherwise)
    "MLflow file-store run": ("mlflow/BozzoloLu__GAN/mlruns/1/07cd61a82ecc46bb9b61d1142c15ea42", 0.30),
    "MLflow SQLite, 8 runs": ("mlflow/KhuzaimahAziz__thesis_seismology/mlruns.db", None),
    "W&B run": ("wandb/A-Ijishakin__beta-tcvae/wandb/run-20240515_162319-ufljc7ut", 0.30),
}


def lightning_csv(folder: Path, megabytes: float) -> Path:
    """A Lightning metrics.csv of about this size (sparse rows: a train loss every step, the LR every 10th,
    validation every 50th), in its own run folder: the plain CSV parser's (csvlog.PLAIN_BYTES) cost at its size."""
    rng = np.random.default_rng(0)
    rows = ["epoch,step,train_loss,val_loss,val_acc,lr-Adam"]
    size = len(rows[0]) + 1
    while size < megabytes * (1 << 20):
        step = len(rows) - 1
        loss = 2.0 / (1 + step / 500) * (1 + 0.1 * rng.standard_normal())
        validation = f"{loss * 1.1!r},{1 - loss / 3!r}" if step % 50 == 49 else ","
        rows.append(f"{step // 200},{step},{loss!r},{validation},{'0.001' if step % 10 == 0 else ''}")
        size += len(rows[-1]) + 1
    run = folder / f"lightning_{megabytes}MB"
    run.mkdir()
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    return run


def cpu_seconds(command: list[str], env: dict) -> float:
    """User + sys CPU seconds of the command, run to its end in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def heavy_imports(command: list[str], env: dict) -> str:
    if command[0] != sys.executable:
        return ""
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    found = [name for name in HEAVY if any(m == name or m.startswith(name + ".") for m in modules)]
    return ", ".join(found) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs of each command (the median is shown)")
    args = parser.parse_args()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    folder = Path(tempfile.mkdtemp(prefix="lrdiag-coldstart-"))
    rows = [
        ("python -c pass", [*PYTHON, "-c", "pass"], None),
        ("python -c 'import click'", [*PYTHON, "-c", "import click"], None),
        ("python -c 'import numpy'", [*PYTHON, "-c", "import numpy"], None),
        ("python -c 'import pandas'", [*PYTHON, "-c", "import pandas"], None),
        ("lrdiag --version", [*LRDIAG, "--version"], 0.10),
        *((f"lrdiag analyze: {kind}", [*LRDIAG, "analyze", f"sample_logs/{run}"], 0.30)
          for kind, run in SMALL_RUNS.items()),
        *((f"lrdiag analyze: {kind}", [*LRDIAG, "analyze", str(REAL / run)], target)
          for kind, (run, target) in REAL_RUNS.items() if (REAL / run).exists()),
        # either side of csvlog.PLAIN_BYTES (1 MiB): the plain parser's largest file, and pandas' smallest
        *((f"lrdiag analyze: metrics.csv of {size} MB", [*LRDIAG, "analyze", str(lightning_csv(folder, size))], None)
          for size in (0.95, 1.05)),
    ]
    tensorboard = shutil.which("tensorboard", path=str(Path(sys.executable).parent)) or shutil.which("tensorboard")
    if tensorboard:
        rows.append(("tensorboard --version", [tensorboard, "--version"], None))
    print(f"CPU seconds (user + sys) in a fresh process, median of {args.repeat} (fastest), after one warm-up run")
    print(f"{'command':<44} {'median':>7} {'fastest':>8} {'target':>7}  {'':<4} heavy imports")
    for label, command, target in rows:
        cpu_seconds(command, env)
        times = [cpu_seconds(command, env) for _ in range(args.repeat)]
        median = statistics.median(times)
        verdict = "" if target is None else ("ok" if median <= target else "OVER")
        print(f"{label:<44} {median:7.3f} {min(times):8.3f} {'' if target is None else f'{target:.2f}':>7}  "
              f"{verdict:<4} {heavy_imports(command, env)}", flush=True)
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
