"""Check that every sample log really shows what manifest.json says it shows.

Reads each run's files back with plain readers of its own (not lrdiag, not the generator),
then, for every expectation, measures what it claims (a spike far above its neighbours,
a swing that keeps coming back, a flat stretch, a val loss that rises after its best step,
the first non-finite value, a loss many times its start) and, for healthy runs, that the loss
falls, is finite and has no outlier beyond its normal noise. Prints one line per check and
exits 1 if any fails.

    python sample_logs/check_samples.py [--dir sample_logs] [--plot DIR]

--plot draws every run's metrics (needs matplotlib, which the generator does not).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import statistics
import sys


# ---- readers: metric -> (xs, ys) ------------------------------------------------------------


def _add(out, k, x, v):
    xs, ys = out.setdefault(k, ([], []))
    xs.append(x)
    ys.append(v)


def read_tensorboard(folder):
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.util import tensor_util

    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for raw in RawEventFileLoader(path).Load():
            ev = Event.FromString(raw)
            for v in ev.summary.value:
                value = v.simple_value if v.HasField("simple_value") else float(tensor_util.make_ndarray(v.tensor))
                _add(out, v.tag, ev.step, value)
    return out


def read_csv(path, x_col):
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k not in ("epoch", "step") and v != "":
                    _add(out, k, int(row[x_col]), float(v))
    return out


def read_trainer_state(path):
    out = {}
    with open(path) as f:
        state = json.load(f)
    for row in state["log_history"]:
        if "train_runtime" in row:
            continue
        for k, v in row.items():
            if k not in ("epoch", "step"):
                _add(out, k, row["step"], float(v))
    return out


def read_detectron2(path):
    out = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            for k, v in row.items():
                if k != "iteration":
                    _add(out, k, row["iteration"], float(v))
    return out


def read_run(base, run):
    fmt, files = run["format"], [os.path.join(base, f) for f in run["files"]]
    if fmt == "tensorboard":
        return read_tensorboard(os.path.dirname(files[0]))
    if fmt == "lightning_csv":
        return read_csv(files[0], "step")
    if fmt == "keras_csv":
        return read_csv(files[0], "epoch")
    if fmt == "trainer_state":
        return read_trainer_state(files[0])
    if fmt == "detectron2":
        return read_detectron2(files[0])
    raise ValueError(fmt)


# ---- measures -------------------------------------------------------------------------------


def med(v):
    v = [y for y in v if math.isfinite(y)]
    return statistics.median(v) if v else float("nan")


def smooth(ys, w):
    return [med(ys[max(0, i - w // 2):i + w // 2 + 1]) for i in range(len(ys))]


def check_spike(xs, ys, e):
    """The point at step (within tolerance) against the points just before it: far above their
    median and above all of them."""
    tol = e.get("tolerance", 0)
    idx = [i for i, x in enumerate(xs) if abs(x - e["step"]) <= tol]
    i = max(idx, key=lambda j: ys[j])
    before = ys[max(0, i - 5):i]
    base = med(before[-5:])
    after = med(ys[i + 15:i + 35]) if i + 15 < len(ys) else float("nan")
    ratio = ys[i] / base
    ok = ratio >= 2.5 and ys[i] >= 1.5 * max(before[-5:]) and xs[i] == e["step"]
    return ok, (f"x={xs[i]} value {ys[i]:.3g} = {ratio:.1f}x the median of the 5 points before, "
                f"{ys[i] / max(before[-5:]):.1f}x their max; 15-35 points later {after / base:.2f}x")


def check_oscillation(xs, ys, e):
    sel = [(x, y) for x, y in zip(xs, ys) if e["step_start"] <= x <= e["step_end"]]
    sx, sy = zip(*sel)
    dx = (sx[-1] - sx[0]) / max(1, len(sx) - 1)
    per = max(4, int(round(e["period"] / dx)))
    sm = smooth(list(sy), max(1, per // 8))
    ratios = []
    for a in range(0, len(sm) - per + 1, per):
        win = sm[a:a + per]
        ratios.append(max(win) / min(win))
    centre = med(sm)
    crossings = sum((a - centre) * (b - centre) < 0 for a, b in zip(sm, sm[1:]))
    cycles = len(sm) / per
    ok = med(ratios) >= 2 and min(ratios) >= 1.5 and crossings >= 1.5 * cycles
    return ok, (f"{cycles:.1f} periods: max/min of the smoothed loss per period median {med(ratios):.1f} "
                f"(min {min(ratios):.1f}); {crossings} crossings of its median")


def check_stall(xs, ys, e):
    sel = [y for x, y in zip(xs, ys) if x >= e["step_start"]]
    n = max(2, len(sel) // 10)
    first, last = med(sel[:n]), med(sel[-n:])
    start = med(ys[:max(2, len(ys) // 20)])
    ok = last > 0.9 * first
    msg = f"from x={e['step_start']}: first 10% median {first:.4g}, last 10% median {last:.4g} ({last / first:.2f}x); run start {start:.4g}"
    if "level" in e:
        ok = ok and abs(last - e["level"]) < 0.1 * e["level"]
        msg += f"; level {e['level']}"
    return ok, msg


def check_divergence(xs, ys, e, data):
    i = ys.index(min(ys))
    tx, ty = data[e["train_metric"]]
    t_best = med([y for x, y in zip(tx, ty) if abs(x - xs[i]) <= max(1, (tx[-1] - tx[0]) / 50)])
    t_end = med(ty[-max(2, len(ty) // 20):])
    v_end = med(ys[-max(2, len(ys) // 20):])
    ok = xs[i] == e["best_step"] and v_end > 1.2 * ys[i] and t_end < 0.8 * t_best and xs[i] < xs[-1] - (xs[-1] - xs[0]) / 4
    return ok, (f"val min {ys[i]:.3g} at x={xs[i]}, val at end {v_end:.3g} ({v_end / ys[i]:.2f}x); "
                f"train {t_best:.3g} -> {t_end:.3g}")


def check_nonfinite(xs, ys, e):
    first = next((x for x, y in zip(xs, ys) if not math.isfinite(y)), None)
    return first == e["step"], f"first non-finite at x={first}, last finite before it {max((y for x, y in zip(xs, ys) if first is not None and x < first and math.isfinite(y)), default=float('nan')):.3g}"


def check_explosion(xs, ys, e):
    tol = e.get("tolerance", 0)
    at = med([y for x, y in zip(xs, ys) if abs(x - e["step_start"]) <= tol])
    after = [y if math.isfinite(y) else math.inf for x, y in zip(xs, ys) if x >= e["step_start"]]
    peak = max(after)  # inf once it overflowed
    init = med(ys[:3]) if len(ys) >= 20 else ys[0]
    ok = peak >= 5 * init and peak >= 5 * at
    return ok, f"start {init:.3g}, near step_start {at:.3g}, max after {peak:.3g} ({peak / init:.3g}x the start)"


def check_healthy(data, run):
    """The first loss-like train metric: finite, falls, no outlier beyond its normal noise."""
    res = []
    for name, (xs, ys) in data.items():
        low = name.lower()
        if not ("loss" in low) or "epoch" in low and len(data) > 2 and any("step" in k for k in data):
            continue
        finite = all(math.isfinite(y) for y in ys)
        n = max(2, len(ys) // 10)
        first, last = med(ys[:n]), med(ys[-n:])
        worst, at = 0.0, None
        for i in range(10, len(ys)):
            prev = ys[max(0, i - 30):i]
            base = med(prev)
            spread = med([abs(y - base) for y in prev]) or 1e-12
            score = (ys[i] - base) / spread
            if score > worst:
                worst, at = score, xs[i]
        is_val = "val" in low or "eval" in low
        rises = (last > 1.15 * min(smooth(ys, 3))) if is_val else False
        # falls (val from its first evaluation, which may come late), and no jump far beyond its noise
        ok = finite and last < (0.9 if is_val else 0.8) * first and not rises and worst < 60
        res.append((ok, name, f"{first:.3g} -> {last:.3g} ({last / first:.2f}x); largest jump {worst:.0f} MADs over "
                              f"the previous 30 points at x={at}" + ("; val rises at the end" if rises else "")))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--plot", help="write a PNG per run into this folder (needs matplotlib)")
    args = ap.parse_args(argv)
    with open(os.path.join(args.dir, "manifest.json")) as f:
        manifest = json.load(f)
    failed = 0
    for key, run in manifest["runs"].items():
        data = read_run(args.dir, run)
        print(f"== {key} ({run['logging']}): {', '.join(f'{k}[{len(v[0])}]' for k, v in data.items())}")
        checks = []
        if run["healthy"]:
            checks += check_healthy(data, run)
        for e in run["expect"]:
            xs, ys = data[e["metric"]]
            fn = {"spike": check_spike, "oscillation": check_oscillation, "stall": check_stall,
                  "nonfinite": check_nonfinite, "explosion": check_explosion}.get(e["category"])
            ok, msg = fn(xs, ys, e) if fn else check_divergence(xs, ys, e, data)
            checks.append((ok, f"{e['category']} {e['metric']}", msg))
        for ok, what, msg in checks:
            failed += not ok
            print(f"  {'ok  ' if ok else 'FAIL'} {what}: {msg}")
        if args.plot:
            plot(args.plot, key, data, run)
    print(f"{failed} check(s) failed")
    return 1 if failed else 0


def plot(folder, key, data, run):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    names = [k for k in data if not k.endswith(("time", "eta_seconds", "_per_second"))]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.2 * len(names)), sharex=True, squeeze=False)
    for ax, k in zip(axes[:, 0], names):
        xs, ys = data[k]
        ax.plot(xs, [y if math.isfinite(y) else float("nan") for y in ys], ".-", ms=2, lw=0.7)
        bad = [x for x, y in zip(xs, ys) if not math.isfinite(y)]
        if bad:
            ax.axvline(bad[0], color="r", ls=":")
        if all(y > 0 for y in ys if math.isfinite(y)):
            ax.set_yscale("log")
        ax.set_ylabel(k, fontsize=7)
        for e in run["expect"]:
            if e["metric"] == k:
                for f in ("step", "best_step", "step_start", "step_end"):
                    if f in e:
                        ax.axvline(e[f], color="orange", lw=0.8)
    axes[0, 0].set_title(f"{key}: {run['notes'][:110]}", fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, key.replace("/", "__") + ".png"), dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
