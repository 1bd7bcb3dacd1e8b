"""A cheap look at each new point of a live run: does it call for the rules now, or can they wait?

`lrdiag watch` judges a run with the full rules engine (the same code as `lrdiag analyze`) only when this
screen fires on one of the run's new points, or when the run has grown by a fixed fraction since its last
judgement (watcher.py), and always before its findings are summed up. The screen keeps, per metric, its last
few values and steps between them and its lowest value: O(1) work a point. It fires on a point when

- the value is NaN or infinite (any metric): the non-finite rule (LRD105) reports it at that point;
- its step is before the metric's last one (a restart logging steps again): the rules read a metric in
  step order, the last logged value winning, which is no longer the order the screen saw;
- on a metric the spike rule (LRD101) reads (its roles: the losses), the value rises `min_ratio` times
  (on values of any sign: by `min_ratio - 1` times the level's size) above the lowest of the `window`
  finite values before it, and by half the rule's `z` times the metric's noise: the median distance of its
  last 64 points from their 5-point medians (on the log scale when positive), the rule's own measure. The
  rule asks a spike to rise that ratio above the median of up to `window` points before it (a median
  within their range), and `z` times a noise estimate never under 0.7 of that measure over 329 points
  around it: half of `z` leaves room for the 64 points to read up to 1.4 times the 329. The rule's bar
  rises with the run's deepest dips, on the log scale or on the cube root where the noise is gamma-like:
  the screen's stays at half of `z`, since a spike the rule finds on the cube root may stand under the
  dips of the log scale. The rule's noise around a point also depends on the points after it (its local
  window reaches 20 points ahead), so the 32 points after a candidate fire too; the same for the mean of
  the last three points (a burst, the rule's `_bursts`) `min_ratio` and half of `z` noise sigmas of a
  mean of three above the median of the `window` points before them;
- on a metric the explosion rule (LRD106) reads, the rule's centred 5-point median at the last three
  points (the series mirrored at its end, as the rule pads it; the value itself for a metric logged fewer
  than 2 x `min_points` times) stands at `factor` times the metric's lowest 5-point median (or first
  values) or more, and above its start: an explosion crosses
  `factor` times its starting level (never under its lowest) on a 5-point median for `min_points`
  points, or stays at `factor` times the lowest level it had reached, and above its start, for a quarter
  of the run. It fires for the first 2 x `min_points` + 5
  points of such a stretch, and for as many again once the stretch spans a quarter of the metric's points;
- a training loss is logged at a step where a grad norm was NaN: Transformers' stand-in for a NaN step's
  loss, which the non-finite rule reads as non-finite.

The screen is a Python loop over points, on purpose: a look brings a run 5 to 20 new points, fewer than it
takes for numpy's per-call cost to pay off, and the state kept per metric is a few numbers.

The thresholds are the rules' configured parameters (the most permissive of the rules using a detector).
Rules that judge a whole curve (a stall, a divergence, an oscillation, the LR rules, rules from --rules
folders) are not screened: they are judged when the run has grown by the schedule's fraction.
"""

from __future__ import annotations

import math
from collections import deque

from lrdiag.series.roles import infer_role

_RECHECK = 32  # points after a spike candidate that fire too: the rule's local noise reaches 20 points ahead
_NOISE_POINTS = 64  # points whose median distance from their 5-point median is the screen's noise
_MAD_TO_SIGMA = 1.4826


class Screen:
    """The screen of one run: `fires(key, tag, step, value)` for each new point, in the order it was logged
    (`key` keeps a metric's points together, `tag` is its name, whose role says which rules read it)."""

    def __init__(self, roles: dict[str, str] | None = None, spike_roles=("train_loss", "val_loss"),
                 explosion_roles=("train_loss", "val_loss"), window: int = 5, min_ratio: float = 1.5,
                 z: float = 10.0, factor: float = 5.0, min_points: int = 3) -> None:
        self.roles = roles or {}
        self.spike_roles, self.explosion_roles = set(spike_roles), set(explosion_roles)
        self.window = max(1, window)
        self.rise = min_ratio - 1.0
        self.log_rise = math.log(min_ratio) if min_ratio > 0 else -math.inf
        self.z = z
        self.factor = factor
        self.settle = 2 * min_points + 5
        self.few = 2 * min_points  # the rule reads a loss logged fewer times raw, without a rolling median
        self.tracks: dict = {}
        self.nan_grad_steps: set = set()  # steps at which a grad norm was NaN

    @classmethod
    def for_engine(cls, engine, roles: dict[str, str] | None = None) -> "Screen":
        """Thresholds and roles from the engine's spike and explosion rules (their configured parameters)."""
        params: dict[str, list] = {"spike": [], "explosion": []}
        read: dict[str, set] = {"spike": set(), "explosion": set()}
        for rule in engine.rules:
            if rule.detector in params:
                params[rule.detector].append(engine.params[rule.code])
                read[rule.detector] |= set(rule.roles)
        spike, explosion = params["spike"] or [{}], params["explosion"] or [{}]
        return cls(roles, read["spike"], read["explosion"], window=max(p.get("window", 5) for p in spike),
                   min_ratio=min(p.get("min_ratio", 1.5) for p in spike), z=min(p.get("z", 10.0) for p in spike),
                   factor=min(p.get("factor", 5.0) for p in explosion),
                   min_points=max(p.get("min_points", 3) for p in explosion))

    def fires(self, key, tag: str, step: float | None, value: float) -> bool:
        track = self.tracks.get(key)
        if track is None:
            role = self.roles.get(tag) or infer_role(tag)
            track = self.tracks[key] = _Track(self.window, role in self.spike_roles, role in self.explosion_roles)
            track.grad_norm, track.stands_in = role == "grad_norm", role == "train_loss"
        fire = step is not None and track.step is not None and step < track.step
        if step is not None:
            track.step = step
        if not math.isfinite(value):
            if track.grad_norm and math.isnan(value) and step is not None:
                self.nan_grad_steps.add(step)
            return True
        if track.stands_in and step in self.nan_grad_steps:
            return True  # Transformers' logged stand-in for a NaN step's loss: the non-finite rule reads it so
        if not (track.spike or track.explosion):
            return fire
        track.count += 1
        if track.candidates:
            track.candidates = [index for index in track.candidates if track.count - index <= _RECHECK]
            fire |= bool(track.candidates)
        if track.log and value <= 0:  # the rules read it on its own scale from now on: start over on it
            track.log, track.ys, track.noise = False, deque(track.recent, track.ys.maxlen), deque(maxlen=_NOISE_POINTS)
        y = math.log(value) if track.log else value
        ys = track.ys
        if len(ys) >= 4:  # the point two before this one now has its 5-point median
            track.noise.append(abs(ys[-2] - sorted((ys[-4], ys[-3], ys[-2], ys[-1], y))[2]))
            if track.count % 8 == 0 or not track.scale:
                track.scale = _noise(track.noise)
        if track.spike and ys and (self._rises(y, track) or self._burst(y, track)):
            track.candidates.append(track.count)
            fire = True
        last5 = sorted([*list(track.recent)[-4:], value])
        median5 = last5[len(last5) // 2]
        lowest = track.lowest
        if track.explosion and lowest is not None and lowest > 0:
            if len(last5) == 5 and track.count >= self.few:
                # The rule's centred 5-point median at the last three points (the series mirrored at its end):
                # a stretch above the bar that reaches the end holds for min_points when all three stand above.
                y5, y4, y3, y2, y1 = [*list(track.recent)[-4:], value]
                level = min(median5, sorted((y4, y3, y2, y1, y1))[2], sorted((y3, y2, y2, y1, y1))[2])
            else:  # a metric logged a few times is read raw
                level = value
            if level >= self.factor * lowest and level > track.start:
                track.climb += 1
                if track.held is None and track.climb >= track.count // 4:
                    track.held = track.count  # the climb now spans a quarter of the run
                fire |= track.climb <= self.settle or (track.held is not None and
                                                       track.count - track.held < self.settle)
            else:
                track.climb, track.held = 0, None
        if track.count <= 3:  # the rule's starting level is the median of the first three: at least their least
            track.start = value if track.count == 1 else min(track.start, value)
        track.recent.append(value)
        ys.append(y)
        # The rule's lowest level is its 5-point median's: at most any full 5-point median, or (at the mirrored
        # start) one of the first four values.
        if track.count <= 4 or len(last5) == 5:
            level = value if track.count <= 4 else median5
            track.lowest = level if lowest is None else min(lowest, level)
        return fire

    def _rises(self, y: float, track: "_Track") -> bool:
        before = list(track.ys)[-self.window:]
        if track.count > 4 * self.window:  # the rule's level: the median of the `window` points before
            low = high = sorted(before)[len(before) // 2]
        else:  # fewer points: the rule's level is the median of fewer, or the point before
            low, high = min(before), max(before)
        if track.log:
            if y - low < self.log_rise:
                return False
        elif y < min(self._bar(low), self._bar(high), self._bar(min(max(0.0, low), high))):
            return False
        if len(track.noise) < 8:
            return True  # too few points to know the noise
        return y - low >= 0.5 * self.z * track.scale

    def _burst(self, y: float, track: "_Track") -> bool:
        """Whether the last three points (this one the third) may be a burst the rule reports: their mean
        `min_ratio` above the median of the `window` points before them and half of `z` noise sigmas of a
        mean of three; the rule's bar is higher (all of `z`, the first point sudden, each point above the
        level, back down after), and its finding comes once the points after it are logged: the 32
        points after a candidate fire too."""
        if len(track.ys) < self.window + 2:
            return False
        ys = list(track.ys)
        before = sorted(ys[-self.window - 2:-2])
        level = before[len(before) // 2]
        mean = (ys[-2] + ys[-1] + y) / 3
        if mean < (level + self.log_rise if track.log else self._bar(level)):
            return False
        return len(track.noise) < 8 or mean - level >= 0.5 * self.z * track.scale / math.sqrt(3)

    def _bar(self, level: float) -> float:
        return level + self.rise * abs(level)


def _noise(distances) -> float:
    return _MAD_TO_SIGMA * max(sorted(distances)[len(distances) // 2], 1e-12)


class _Track:
    __slots__ = ("spike", "explosion", "grad_norm", "stands_in", "log", "recent", "ys", "noise", "scale",
                 "lowest", "start", "step", "count", "candidates", "climb", "held")

    def __init__(self, window: int, spike: bool, explosion: bool) -> None:
        self.spike, self.explosion = spike, explosion
        self.log = True  # on the log scale while every value is positive, as the spike rule reads a metric
        self.recent: deque = deque(maxlen=max(window + 2, 5))  # a burst: its 3 points and the `window` before them
        self.ys: deque = deque(maxlen=self.recent.maxlen)  # the same, on the rule's scale
        self.noise: deque = deque(maxlen=_NOISE_POINTS)
        self.scale = 0.0
        self.lowest: float | None = None
        self.start = math.inf
        self.step: float | None = None
        self.count = 0
        self.candidates: list[int] = []
        self.climb = 0
        self.held: int | None = None  # the point at which the current climb came to span a quarter of the run
        self.grad_norm = self.stands_in = False
