"""`lrdiag analyze` on a 1,000,000-scalar event file against TensorBoard's Rust data server and tbparse.

    python benchmarks/bench_data_server.py [--steps 200000] [--tags 5] [--dir /tmp/lrdiag-bench]

Each contender runs in a fresh process on the same file (written once by torch's SummaryWriter
through bench_ingest.write_events, and reused), and must hand over every point: the check is the
point count and the sum of every value, compared with an independent reading (EventAccumulator).

- lrdiag analyze: `python -m lrdiag analyze DIR --format json` (checksums verified, the rules run);
- lrdiag read: the reader alone in a fresh interpreter (`read_files`, imports included);
- Rust data server: `tensorboard_data_server` (shipped by the tensorboard package) with
  `--samples-per-plugin scalars=all` (by default it keeps 1,000 points a tag) and `--reload once`,
  timed from its start until every scalar has been read back over its gRPC API (ReadScalars);
  its CPU is the server's own (from /proc) plus this client's. Run once with its default (a record
  is checksummed only when it fails to parse) and once with `--checksum`, as lrdiag does;
- tbparse: `SummaryReader(DIR, pivot=False).scalars`.

CPU seconds (user + system) are the fair measure on a shared machine; wall seconds are printed too.
Each contender but tbparse runs --repeat times (default 3) and its median run is shown (CPU and wall
medians apart), after one unmeasured run of lrdiag that warms the disk cache and writes lrdiag's bytecode:
PYTHONDONTWRITEBYTECODE is unset for the children, as in bench_coldstart.py (users' installs have .pyc
files; without them every lrdiag module edited since its last compile is compiled at each start).
The server is skipped with a note where its binary or grpcio is absent.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import write_events  # noqa: E402 - the one writer of this benchmark's file

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CHILD_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}

# Each prints: points, sum of values (NaN-free input), peak resident MB of the process.
LRDIAG_READ = """
import glob, resource, sys
from pathlib import Path
from lrdiag.ingest.tfevents import read_files
result = read_files([Path(p) for p in glob.glob(sys.argv[1] + "/*tfevents*")])
print(sum(len(s) for s in result.series.values()), sum(float(s.values.sum()) for s in result.series.values()),
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
TBPARSE = """
import resource, sys
from tbparse import SummaryReader
scalars = SummaryReader(sys.argv[1], pivot=False).scalars
print(len(scalars), float(scalars["value"].sum()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
REFERENCE = """
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
events = [e for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
print(len(events), sum(e.value for e in events), 0)
"""


def timed(command: list[str]) -> tuple[float, float, str, str]:
    """(wall seconds, CPU seconds of the child, its stdout, its stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=CHILD_ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode not in (0, 1):  # analyze exits 1 on findings
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out.stdout, out.stderr


def python_snippet(code: str, run_dir: Path) -> dict:
    wall, cpu, out, _ = timed([sys.executable, "-c", code, str(run_dir)])
    points, total, peak = out.split()
    return {"wall": wall, "cpu": cpu, "points": int(points), "sum": float(total), "peak_mb": float(peak)}


ANALYZE = """
import atexit, resource, runpy, sys
atexit.register(lambda: print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr))
sys.argv = ["lrdiag", "analyze", sys.argv[1], "--format", "json"]
runpy.run_module("lrdiag", run_name="__main__", alter_sys=True)
"""


def lrdiag_analyze(run_dir: Path) -> dict:
    """analyze end to end (as `python -m lrdiag analyze DIR --format json`); the points come from its
    JSON (analyze prints no sum of values: the reader's row checks those)."""
    import json

    wall, cpu, out, err = timed([sys.executable, "-c", ANALYZE, str(run_dir)])
    points = sum(metric["points"] for run in json.loads(out)["runs"] for metric in run["metrics"].values())
    return {"wall": wall, "cpu": cpu, "points": points, "sum": math.nan, "peak_mb": float(err.split()[-1])}


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _process_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return math.nan


def rust_data_server(run_dir: Path, tags: int, last_step: int, checksum: bool) -> dict | str:
    """The Rust server's full load: started, loaded once, every scalar read over gRPC. A note when absent."""
    try:
        import grpc
        from tensorboard.data.proto import data_provider_pb2, data_provider_pb2_grpc
        from tensorboard_data_server import server_binary
    except ImportError as error:
        return f"skipped: {error} (pip install tensorboard grpcio)"
    binary = server_binary()
    if binary is None or not Path(binary).exists():
        return "skipped: tensorboard_data_server has no binary for this platform"
    client_start = time.process_time()
    with tempfile.TemporaryDirectory() as scratch:
        port_file = Path(scratch, "port")
        command = [binary, "--logdir", str(run_dir), "--port", "0", "--port-file", str(port_file),
                   "--reload", "once", "--samples-per-plugin", "scalars=all", "--die-after-stdin"]
        start = time.perf_counter()
        server = subprocess.Popen(command + (["--checksum"] if checksum else []), stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not port_file.exists() or not port_file.read_text().endswith("\n"):
                if server.poll() is not None:
                    return f"skipped: the server exited with status {server.returncode}"
                time.sleep(0.005)
            channel = grpc.insecure_channel(f"localhost:{port_file.read_text().strip()}",
                                            options=[("grpc.max_receive_message_length", -1)])
            stub = data_provider_pb2_grpc.TensorBoardDataProviderStub(channel)
            # Loading runs in the background: wait until every tag reaches its last step, then read.
            listing = data_provider_pb2.ListScalarsRequest(experiment_id="",
                                                           plugin_filter={"plugin_name": "scalars"})
            while True:
                runs = stub.ListScalars(listing).runs
                last_steps = [tag.metadata.max_step for run in runs for tag in run.tags]
                if len(last_steps) == tags and min(last_steps) >= last_step:
                    break
                time.sleep(0.005)
            request = data_provider_pb2.ReadScalarsRequest(
                experiment_id="", plugin_filter={"plugin_name": "scalars"}, downsample={"num_points": 10**9})
            data = [tag.data for run in stub.ReadScalars(request).runs for tag in run.tags]
            wall = time.perf_counter() - start
            server_cpu, peak = _process_cpu(server.pid), _process_peak_mb(server.pid)
            channel.close()
        finally:
            server.stdin.close()
            server.kill()
            server.wait()
    return {"wall": wall, "cpu": server_cpu + time.process_time() - client_start, "peak_mb": peak,
            "points": sum(len(one.value) for one in data), "sum": sum(math.fsum(one.value) for one in data)}


def median_run(run, times: int) -> dict | str:
    """The contender's figures over `times` runs: median CPU and median wall (each on its own), the rest
    from the last run; a skip note as it comes."""
    results = [run() for _ in range(max(times, 1))]
    if isinstance(results[-1], str):
        return results[-1]
    return {**results[-1], "cpu": statistics.median(r["cpu"] for r in results),
            "wall": statistics.median(r["wall"] for r in results),
            "peak_mb": statistics.median(r["peak_mb"] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--tags", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lrdiag-bench"))
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender but tbparse (median shown)")
    args = parser.parse_args()
    run_dir = args.dir / f"events_{args.steps}x{args.tags}"
    if not list(run_dir.glob("*tfevents*")):
        print(f"writing {args.steps * args.tags:,} scalars with SummaryWriter into {run_dir} ...", flush=True)
        write_events(run_dir, args.steps, args.tags)
    size = sum(path.stat().st_size for path in run_dir.glob("*tfevents*"))
    print(f"{run_dir}: {args.steps * args.tags:,} scalars, {size / 1e6:.1f} MB\n")
    reference = python_snippet(REFERENCE, run_dir)
    lrdiag_analyze(run_dir)  # unmeasured: disk cache and lrdiag's bytecode
    contenders = {
        "lrdiag analyze (end to end)": lambda: lrdiag_analyze(run_dir),
        "lrdiag read (fresh process)": lambda: python_snippet(LRDIAG_READ, run_dir),
        "Rust data server (default)": lambda: rust_data_server(run_dir, args.tags, args.steps - 1, checksum=False),
        "Rust data server --checksum": lambda: rust_data_server(run_dir, args.tags, args.steps - 1, checksum=True),
        "tbparse": lambda: python_snippet(TBPARSE, run_dir),
    }
    results = {}
    print(f"load average {' '.join(f'{load:.2f}' for load in os.getloadavg())} on {os.cpu_count()} cores; "
          f"median of {args.repeat} runs (tbparse: 1)\n")
    print(f"{'contender':32} {'CPU s':>7} {'wall s':>7} {'peak MB':>8} {'points':>10}  check")
    for name, run in contenders.items():
        result = median_run(run, 1 if name == "tbparse" else args.repeat)
        if isinstance(result, str):
            print(f"{name:32} {result}")
            continue
        same_sum = math.isnan(result["sum"]) or math.isclose(result["sum"], reference["sum"], rel_tol=1e-9)
        check = "ok" if result["points"] == reference["points"] and same_sum else "MISMATCH"
        results[name] = result
        print(f"{name:32} {result['cpu']:7.2f} {result['wall']:7.2f} {result['peak_mb']:8.0f} "
              f"{result['points']:10,}  {check}")
    analyze = results["lrdiag analyze (end to end)"]
    print(f"\nload average {' '.join(f'{load:.2f}' for load in os.getloadavg())} at the end\n")
    for anchor in ("Rust data server (default)", "Rust data server --checksum", "tbparse"):
        if anchor in results:
            target = "  (target >= 2x)" if anchor.startswith("Rust") else ""
            print(f"lrdiag analyze vs {anchor:28} CPU {results[anchor]['cpu'] / analyze['cpu']:5.1f}x  "
                  f"wall {results[anchor]['wall'] / analyze['wall']:5.1f}x faster{target}")


if __name__ == "__main__":
    main()
