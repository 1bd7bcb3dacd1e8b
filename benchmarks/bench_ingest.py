"""Read a 1,000,000-scalar TensorBoard event file with lrdiag, tbparse and EventAccumulator; print ratios.

    python benchmarks/bench_ingest.py [--steps 200000] [--tags 5] [--dir /tmp/lrdiag-bench] [--distinct-tags 2000000]

The file is written once by torch's SummaryWriter (the real writer) and reused. Each loader runs
in a fresh interpreter so that its peak memory (VmHWM) can be set against the interpreter's own
resident size after imports. --distinct-tags N adds a file of N scalars under N distinct tags
(one point each, written record by record here) read by lrdiag alone: the many-tags case
(target: 2M tags under 10 s). bench_data_server.py sets `lrdiag analyze` beside TensorBoard's
Rust data server. The children run without PYTHONDONTWRITEBYTECODE (as in bench_coldstart.py): users'
installs have .pyc files, so a module edited since its last compile is not compiled at every start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

LOADERS = {
    "lrdiag read": """
from lrdiag.ingest.tfevents import read_files
result = read_files([PATH])
points = sum(len(s) for s in result.series.values())
""",
    "lrdiag read --no-verify": """
from lrdiag.ingest.tfevents import read_files
result = read_files([PATH], verify=False)
points = sum(len(s) for s in result.series.values())
""",
    "tbparse": """
from tbparse import SummaryReader
points = len(SummaryReader(str(PATH), pivot=False).scalars)
""",
    "EventAccumulator": """
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(str(PATH), size_guidance={"scalars": 0})
acc.Reload()
points = sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])
""",
    "upb Event.FromString loop": """
from lrdiag.ingest.tfrecord import Buffer, frame
from tensorboard.compat.proto.event_pb2 import Event
raw = PATH.read_bytes()
records = frame(Buffer.from_bytes(raw), verify=False)
parse = Event.FromString
events = [parse(raw[s:s + n]) for s, n in zip(records.data_starts.tolist(), records.lengths.tolist())]
points = sum(1 for e in events if e.HasField("summary"))
""",
    "lrdiag analyze (end to end)": """
import subprocess, sys
out = subprocess.run([sys.executable, "-m", "lrdiag", "analyze", str(PATH.parent), "--format", "json"],
                     capture_output=True, text=True, check=True).stdout
import json
points = sum(m["points"] for r in json.loads(out)["runs"] for m in r["metrics"].values())
""",
}

RUNNER = """
import time, sys, resource
from pathlib import Path
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
PATH = Path(sys.argv[1])
import numpy, google.protobuf, tensorboard.compat.proto.event_pb2  # imports are not the loader's cost
base = rss("VmRSS")
def cpu():  # CPU seconds of this process and of the children it waited for: steadier than wall time on shared cores
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
start = cpu()
exec(sys.argv[2])
elapsed = cpu() - start
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(elapsed, max(rss("VmHWM"), children) - base, points)
"""


def write_events(path: Path, steps: int, tags: int) -> None:
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    path.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(path), max_queue=10_000, flush_secs=3600)
    rng = np.random.default_rng(0)
    values = (np.exp(-np.arange(steps) / (steps / 5))[:, None] + 0.05 * rng.standard_normal((steps, tags))).tolist()
    names = [f"train/metric_{t}" for t in range(tags - 1)] + ["lr"]
    for step, row in enumerate(values):
        for name, value in zip(names, row):
            writer.add_scalar(name, value, step)
    writer.close()


def write_distinct_tags(path: Path, count: int) -> None:
    """`count` simple_value events, each under its own tag, framed as TFRecords by hand (fast)."""
    import struct

    from lrdiag.ingest.tfrecord import masked_crc

    def varint(number: int) -> bytes:
        out = bytearray()
        while True:
            out.append((number & 0x7F) | (0x80 if number > 0x7F else 0))
            number >>= 7
            if not number:
                return bytes(out)

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for step in range(count):
            tag = f"layer{step}/grad_norm".encode()
            value = b"\x0a" + varint(len(tag)) + tag + b"\x15" + struct.pack("<f", step * 0.5)
            summary = b"\x0a" + varint(len(value)) + value
            event = (b"\x09" + struct.pack("<d", 1.0) + b"\x10" + varint(step) + b"\x2a" + varint(len(summary))
                     + summary)
            header = struct.pack("<Q", len(event))
            out.write(header + struct.pack("<I", masked_crc(header)) + event + struct.pack("<I", masked_crc(event)))


CHILD_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--tags", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lrdiag-bench"))
    parser.add_argument("--distinct-tags", type=int, default=0, help="also read a file of N scalars under N tags")
    args = parser.parse_args()
    if args.distinct_tags:
        many = args.dir / f"distinct_tags_{args.distinct_tags}" / "events.out.tfevents.1.many"
        if not many.exists():
            print(f"writing {args.distinct_tags:,} scalars under as many tags into {many} ...", flush=True)
            write_distinct_tags(many, args.distinct_tags)
        out = subprocess.run([sys.executable, "-c", RUNNER, str(many), LOADERS["lrdiag read"]], capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parents[1], check=True, env=CHILD_ENV)
        elapsed, peak, points = out.stdout.split()
        print(f"lrdiag read, {int(points):,} tags of one point ({many.stat().st_size / 1e6:.0f} MB): "
              f"{float(elapsed):.1f} s CPU, peak {float(peak):.0f} MB above the interpreter (target < 10 s)\n")
    run_dir = args.dir / f"events_{args.steps}x{args.tags}"
    files = list(run_dir.glob("*tfevents*"))
    if not files:
        print(f"writing {args.steps * args.tags:,} scalars with SummaryWriter into {run_dir} ...", flush=True)
        started = time.perf_counter()
        write_events(run_dir, args.steps, args.tags)
        files = list(run_dir.glob("*tfevents*"))
        print(f"  written in {time.perf_counter() - started:.1f} s")
    path = files[0]
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)\n")
    results = {}
    print(f"{'loader':30} {'CPU s':>8} {'peak MB':>8} {'points':>10}")
    for name, code in LOADERS.items():
        out = subprocess.run([sys.executable, "-c", RUNNER, str(path), code], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], env=CHILD_ENV)
        if out.returncode:
            print(f"{name:30} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        elapsed, peak, points = out.stdout.split()
        results[name] = (float(elapsed), float(peak), int(points))
        print(f"{name:30} {float(elapsed):8.2f} {float(peak):8.0f} {int(points):10,}")
    if "lrdiag read" in results and "tbparse" in results:
        read, tbparse = results["lrdiag read"][0], results["tbparse"][0]
        print(f"\nlrdiag read vs tbparse:           {tbparse / read:6.1f}x faster (target >= 30x)")
        print(f"lrdiag read vs EventAccumulator:  {results['EventAccumulator'][0] / read:6.1f}x faster")
        print(f"lrdiag read peak memory above the interpreter: {results['lrdiag read'][1]:.0f} MB (target <= 150 MB)")
        if "lrdiag analyze (end to end)" in results:
            print(f"lrdiag analyze end to end vs tbparse load: "
                  f"{tbparse / results['lrdiag analyze (end to end)'][0]:6.1f}x faster (target >= 10x)")
    print(json.dumps({k: {"seconds": v[0], "peak_mb": v[1], "points": v[2]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
