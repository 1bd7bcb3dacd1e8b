"""A run's labels, placed at generation time from what was applied and where it shows in the log.

The run is read back (lrdiag's readers only: no detector runs here) and each label is checked
against the logged series, so that a mechanism that happened to leave no trace is not counted
as a pathology a detector should have found: such a run is excluded, with the reason, and the
benchmark reports how many. The checks are loose on purpose (a pathology must be plain to a
person reading the curve), and they only gate whether a label stands; they never place it except
where the scenario's onset is itself an observation (the best evaluation of an overfitting run,
the first NaN of an LR blow-up, where an explosion's climb starts).

A label: {category, role, metrics (logged tags), onset (logged x), end (logged x; null for a
one-step event), how ("applied" or "measured"), and numbers showing the effect}.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np


def read_back(run_dir: Path) -> dict:
    """{tag: (x, values)} of every scalar in the run's files, read with the formats' own tools
    (not lrdiag's readers: the labels must not depend on the code under test)."""
    import json

    import pandas as pd

    series: dict = {}
    for path in sorted(Path(run_dir).rglob("*")):
        if path.name.startswith("events.out.tfevents"):
            from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
            from tensorboard.util import tensor_util

            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    if value.HasField("simple_value"):
                        number = value.simple_value
                    elif value.metadata.plugin_data.plugin_name == "scalars":
                        number = float(tensor_util.make_ndarray(value.tensor))
                    else:
                        continue  # text (the Trainer's arguments), histograms
                    series.setdefault(value.tag, []).append((event.step, number))
        elif path.name == "trainer_state.json":
            for row in json.loads(path.read_text())["log_history"]:
                for key, number in row.items():
                    if key not in ("step", "epoch") and isinstance(number, (int, float)):
                        series.setdefault(key, []).append((row["step"], float(number)))
        elif path.suffix in (".csv", ".log"):
            # Empty cells are "not logged in this row" (Lightning); "nan" is a logged NaN (Keras).
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            x = "step" if "step" in table else "epoch"
            for column in table.columns.drop(["step", "epoch"], errors="ignore"):
                rows = table[table[column] != ""]
                series.setdefault(column, []).extend(zip(rows[x].astype(int), rows[column].astype(float)))
    return {tag: (np.array([p[0] for p in points], dtype=np.int64), np.array([p[1] for p in points], dtype=float))
            for tag, points in series.items()}


def x_of(step: int, mapping: dict) -> int:
    if mapping["unit"] == "epoch":
        return step // mapping["per_epoch"]
    return step + mapping.get("offset", 0)


class Excluded(Exception):
    """The mechanism left no plain trace in the log: the run is left out of the scoring."""


def _series(run, tags):
    for tag in tags:
        if tag in run and len(run[tag][0]):
            return run[tag]
    raise Excluded(f"none of {tags} was logged")


def _median(values):
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else math.nan


def make(plan, run_dir: Path, tags: dict, mapping: dict) -> list[dict]:
    """The labels of a written run (empty for a healthy one); raises Excluded."""
    run = read_back(run_dir)
    scenario = plan.scenario
    train_tags = tags["train_loss"]
    x, y = _series(run, train_tags)
    last = int(x[-1])
    if scenario.startswith("healthy"):
        _check_healthy(run, tags, x, y, last)
        if plan.schedule in ("cyclic", "sgdr"):  # a control must not show what osc_cyclic is labelled for
            swing, sure = _locked_swing(x, y, x_of(plan.sched_params["period"], mapping))
            if swing >= 1.3 and sure >= 3:
                raise Excluded(f"a control's loss swings x{swing:.2f} with its cyclic LR ({sure:.1f} standard errors)")
        return []
    events = sorted((int(k), v) for k, v in plan.events.items())

    def label(category, onset, end=last, role="train_loss", metrics=train_tags, how="applied", **numbers):
        return {"category": category, "role": role, "metrics": list(metrics), "onset": int(onset),
                "end": None if end is None else int(end), "how": how,
                **{k: round(float(v), 4) for k, v in numbers.items()}}

    with_val = train_tags + tags["val_loss"]  # the model's own trouble shows in the eval loss too
    if scenario in ("spike_batch", "spike_lr"):
        if not np.isfinite(y).all():
            raise Excluded("the spike's run went non-finite")
        _no_overfit(run, tags)
        labels = []
        span = max(3 * _spacing(x), 0.02 * last)
        for step, (kind, strength) in events:
            onset = x_of(step, mapping)
            before = y[(x < onset) & (x >= onset - 10 * _spacing(x))]
            after = y[(x >= onset) & (x <= onset + span)]
            later = y[(x > onset + 0.1 * last) & (x <= onset + 0.25 * last)]
            if before.size < 3 or after.size == 0:
                raise Excluded(f"too few logged points around step {step}")
            level, peak = float(np.median(before)), float(after.max())
            if peak < 2 * level:
                raise Excluded(f"the {kind} x{strength} at step {step} raised the loss only x{peak / level:.2f}")
            if later.size and np.median(later) > 1.5 * level:
                raise Excluded(f"the loss did not come back after the {kind} at step {step}")
            labels.append(label("spike", onset, None, metrics=with_val if kind == "lr" else train_tags,
                                peak_over_level=peak / level))
        return labels
    if scenario == "osc_momentum":
        keep = x >= 0.1 * last
        amplitude, lowest = _ringing(y[keep])
        if amplitude < 0.1 or lowest > -0.3:
            raise Excluded(f"no ringing (amplitude {amplitude:.2f}, autocorrelation {lowest:.2f})")
        return [label("oscillation", 0, amplitude=amplitude, autocorrelation=lowest)]
    if scenario == "osc_cyclic":
        if not np.isfinite(y).all():
            raise Excluded("the cyclic run went non-finite")
        period = plan.sched_params["period"]
        swing, sure = _locked_swing(x, y, x_of(period, mapping))
        if swing < 1.3 or sure < 3:
            raise Excluded(f"the loss swings only x{swing:.2f} with the LR cycle ({sure:.1f} standard errors)")
        onset = x_of(period // 2 if plan.schedule == "cyclic" else period, mapping)
        return [label("oscillation", onset, swing=swing, sureness=min(sure, 1e6), period=period)]
    if scenario.startswith("stall"):
        if scenario != "stall_blowup_mean":
            _no_overfit(run, tags)
        return _stall(plan, x, y, last, events, mapping, partial(label, metrics=with_val))
    if scenario.startswith("div"):
        vx, vy = _series(run, tags["val_loss"])
        best = int(np.nanargmin(vy))
        rise = float(vy[-1] / vy[best])
        train_at_best = _median(y[x <= max(vx[best], x[0])][-5:])
        train_end = _median(y[x >= 0.9 * last])
        if best == vy.size - 1 or rise < 1.1 or not train_end < train_at_best:
            raise Excluded(f"eval loss does not rise after its best (x{rise:.2f}, best at eval {best + 1}/{vy.size})")
        return [label("train_val_divergence", vx[best], role="val_loss", metrics=tags["val_loss"], how="measured",
                      rise=rise, evaluations=vy.size)]
    if scenario.startswith("nan"):
        # A NaN may show only in grad_norm or the eval loss: HF's logging_nan_inf_filter logs the
        # training loss of a NaN step as a finite mean.
        candidates = [(t, *_series(run, [t])) for t in train_tags + tags["grad_norm"] + tags["val_loss"] if t in run]
        firsts = [int(sx[~np.isfinite(sy)][0]) for _, sx, sy in candidates if (~np.isfinite(sy)).any()]
        if not firsts:
            raise Excluded("nothing non-finite was logged")
        metrics = [t for t, _, sy in candidates if (~np.isfinite(sy)).any()] + with_val
        if scenario == "nan_data" and events:
            return [label("nonfinite", x_of(events[0][0], mapping), metrics=dict.fromkeys(metrics))]
        return [label("nonfinite", min(firsts), metrics=dict.fromkeys(metrics), how="measured")]
    if scenario == "explode_clipped":
        if not np.isfinite(y).all():
            raise Excluded("the clipped run went non-finite")
        start, late = _median(y[x <= 0.1 * last]), _median(y[x >= 0.75 * last])
        if not late >= 3 * start:
            raise Excluded(f"the loss ends only x{late / start:.2f} its start")
        return [label("explosion", _rise_start(x, y, start), metrics=with_val, how="measured",
                      end_over_start=late / start)]
    raise ValueError(scenario)


def _check_healthy(run, tags, x, y, last):
    """A control must be healthy by its log: finite, its loss lower at the end than at the start,
    and its eval loss (3+ evaluations) not 10 % above its best at the end (a small training set
    can overfit even at an ordinary LR)."""
    if not np.isfinite(y).all():
        raise Excluded("a healthy run logged a non-finite loss")
    tenth = max(1, y.size // 10)
    if not _median(y[-tenth:]) < 0.9 * _median(y[:tenth]):
        raise Excluded("a healthy run's loss did not fall by 10 %")
    _no_overfit(run, tags)


def measured_acceptable(plan, run_dir: Path, tags: dict) -> list[str]:
    """Categories a pathological run shows besides its own, measured from its log by the measures
    that label those categories: its eval loss ends 10 % above its best (_no_overfit: a small
    training set can overfit whatever the pathology), its training loss ends 3 times above its
    start (explode_clipped's measure: a heavy ball whose ringing grows), or its finite training
    loss moved less than 10 % from its first 5 % to its last 10 % (stall_tiny_lr's measure: a run
    that learned nothing before its NaN). A finding of such a category is true, not a false alarm.
    Spike and stall runs that overfit are excluded instead (_no_overfit, in make); a healthy
    control stays strict: any warning on it is a false alarm."""
    if plan.scenario.startswith("healthy"):
        return []
    run, found = read_back(run_dir), []
    try:
        _no_overfit(run, tags)
    except Excluded:
        found.append("train_val_divergence")
    x, y = _series(run, tags["train_loss"])
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if _median(y[x >= 0.75 * x[-1]]) >= 3 * _median(y[x <= 0.1 * x[-1]]):
        found.append("explosion")
    bad = np.flatnonzero(~np.isfinite(y))
    x, y = (x[:bad[0]], y[:bad[0]]) if bad.size else (x, y)
    if x.size >= 10:
        first, final = _median(y[x <= x[0] + 0.05 * (x[-1] - x[0])]), _median(y[x >= x[0] + 0.9 * (x[-1] - x[0])])
        if abs(final - first) <= 0.1 * first:
            found.append("stall")
    return [category for category in found if category != plan.category]


def _no_overfit(run, tags):
    """The eval loss (3+ evaluations) ends within 10 % of its best: a small training set can
    overfit at an ordinary LR, and a run labelled with something else must not also diverge."""
    val = [run[t] for t in tags["val_loss"] if t in run and len(run[t][0]) >= 3]
    if val and val[0][1][-1] > 1.1 * np.nanmin(val[0][1]):
        raise Excluded(f"the eval loss ends x{val[0][1][-1] / np.nanmin(val[0][1]):.2f} above its best")


def _stall(plan, x, y, last, events, mapping, label):
    scenario = plan.scenario
    if not np.isfinite(y).all():
        raise Excluded("the stalled run went non-finite")
    first, final = _median(y[x <= 0.05 * last]), _median(y[x >= 0.9 * last])
    if scenario == "stall_tiny_lr":
        if abs(final - first) > 0.1 * first:
            raise Excluded(f"the loss moved from {first:.3g} to {final:.3g}")
        return [label("stall", 0, level=final)]
    if scenario == "stall_early_decay":
        at = x_of(plan.sched_params["at"], mapping)
        at_decay = _median(y[(x >= at) & (x <= at + 0.05 * last + _spacing(x))])
        if final < 0.9 * at_decay or final < 0.5 * first:
            raise Excluded(f"loss {first:.3g} -> {at_decay:.3g} at the decay -> {final:.3g}: not stalled far from its start")
        return [label("stall", at, level=final)]
    if scenario == "stall_dead_relu":
        trivial = math.log({"mlp": 5, "cnn": 4}[plan.family])
        late = y[x >= 0.5 * last]
        if abs(final - trivial) > 0.1 * trivial or np.ptp(late) > 0.1 * trivial:
            raise Excluded(f"the loss ends at {final:.3g}, not flat at ln C = {trivial:.3g}")
        return [label("stall", 0, level=final)]
    if scenario == "stall_unigram":
        mid = _median(y[(x >= 0.15 * last) & (x <= 0.25 * last)])
        if final < 0.95 * mid:
            raise Excluded(f"the loss still falls ({mid:.3g} -> {final:.3g})")
        return [label("stall", 0, level=final)]
    # stall_blowup_mean: a one-step LR jump kills the ReLUs; the net predicts the mean after it
    step = events[0][0]
    onset = x_of(step, mapping)
    before = _median(y[(x < onset) & (x >= onset - 0.1 * last)])
    peak = float(y[(x >= onset) & (x <= onset + 0.05 * last + _spacing(x))].max())
    late = y[x >= onset + 0.2 * (last - onset)]
    halves = np.array_split(late, 2)
    drift = abs(_median(halves[0]) - _median(halves[1]))
    if peak < 10 * before or drift > 0.1 * final or final < 2 * before:
        raise Excluded(f"loss {before:.3g} -> peak {peak:.3g} -> {final:.3g}: no blow-up then a flat line")
    return [label("spike", onset, None, peak_over_level=peak / before), label("stall", onset, level=final)]


def _spacing(x):
    return float(np.median(np.diff(x))) if x.size > 1 else 1.0


def _ringing(values):
    """(relative amplitude around a running median, lowest autocorrelation at lags 1..8)."""
    window = 12
    padded = np.pad(values, window, mode="edge")
    trend = np.array([np.median(padded[i:i + 2 * window + 1]) for i in range(values.size)])
    residual = values / trend - 1
    lags = [np.corrcoef(residual[:-lag], residual[lag:])[0, 1] for lag in range(1, 9)]
    return float(np.std(residual)), float(np.nanmin(lags))


def _locked_swing(x, y, period_x):
    """How much the loss swings in step with the LR's cycle, and how sure that is.

    The log loss after the first cycle, less a centred moving average one cycle wide (which takes
    out the run's progress and nothing periodic), is folded on the cycle's phase into up to 8
    bins; the swing is exp(highest bin median - lowest), and the sureness that range over its
    standard error (the residual's robust spread over sqrt(points in the emptiest bin)). Folding
    averages the noise away over cycles: max/min within each cycle (this label's first version)
    read the minibatch noise of a healthy run as a x1.3 swing in a third of the controls."""
    keep = (x >= period_x) & np.isfinite(y) & (y > 0)
    x, v = x[keep], np.log(y[keep])
    if x.size < 8:
        return 0.0, 0.0
    per = int(round(period_x / np.median(np.diff(x))))
    if per < 4:
        return 0.0, 0.0
    trend = np.convolve(np.pad(v, (per // 2, per - 1 - per // 2), mode="edge"), np.ones(per) / per, mode="valid")
    residual = v - trend
    bins = min(8, per)
    phase = ((x % period_x) / period_x * bins).astype(int)
    counts = np.bincount(phase, minlength=bins)
    if counts.min() == 0:
        return 0.0, 0.0
    profile = np.array([np.median(residual[phase == b]) for b in range(bins)])
    spread = 1.4826 * np.median(np.abs(residual - profile[phase]))
    span = float(profile.max() - profile.min())
    # A bin's median has a standard error of 1.25 spread / sqrt(points) (normal noise).
    return float(np.exp(span)), (span * np.sqrt(counts.min()) / (1.25 * spread) if spread > 0 else math.inf)


def _rise_start(x, y, start):
    """The first logged x from which a 5-point running median stays above twice the start level."""
    median = np.array([np.median(y[max(0, i - 4):i + 1]) for i in range(y.size)])
    high = median > 2 * start
    below = np.flatnonzero(~high)
    first = 0 if below.size == 0 else below[-1] + 1
    return int(x[min(first, x.size - 1)])
