"""A cheap look at each new point of a live run: does it call for the rules now, or can they wait?

`lrdiag watch` judges a run with the full rules engine (the same code as `lrdiag analyze`) only when this
screen fires on one of the run's new points, or when the run has grown by a fixed fraction since its last
judgement (watcher.py), and always before its findings are summed up. The screen keeps, per metric, the last
few finite values, the lowest one so far and the last step: O(1) work per point. It fires on a point when

- the value is NaN or infinite: the non-finite rule (LRD105) reports it at that point;
- its step is not after the metric's last one (a restart re-logging steps): the rules read a metric in
  step order, last logged value winning, so the order the screen saw is not the rules' order;
- the value stands at `min_ratio` times or more above the lowest of the `window` finite values before it
  (on values of any sign, `b + (min_ratio - 1) |b|` for the `b` in that range that gives the lowest bar). A
  spike (LRD101) must rise that far above the median of up to `window` points before it, and that median
  lies in their range: so every point the spike rule could call a spike fires, with the rule's own
  `window` and `min_ratio` (the smallest ratio and largest window of the spike rules in use). The spike
  rule also weighs the rise against the noise around the point, which points after it still change: a
  candidate fires again 1, 2, 4, 8, 16 and 32 points later, as those windows fill;
- the value, or the median of the last five, stands at `factor` times the metric's lowest value or more:
  an explosion (LRD106) crosses `factor` times its starting level (at least its lowest value) on a 5-point
  median for `min_points` points. It fires for the first 2 x `min_points` + 5 points of such a stretch.

Rules that judge a whole curve (a stall, a divergence, an oscillation, the LR rules, rules from --rules
folders) are not screened: they are judged when the run has grown by the schedule's fraction.
"""

from __future__ import annotations

import math
from collections import deque

_RECHECKS = (1, 2, 4, 8, 16, 32)  # points after a spike candidate at which it fires again


class Screen:
    """The screen of one run: `fires(key, step, value)` for each new point, in the order it was logged."""

    def __init__(self, window: int = 5, min_ratio: float = 1.5, factor: float = 5.0, min_points: int = 3) -> None:
        self.window = max(1, window)
        self.rise = min_ratio - 1.0
        self.factor = factor
        self.settle = 2 * min_points + 5
        self.tracks: dict = {}

    @classmethod
    def for_engine(cls, engine) -> "Screen":
        """Thresholds from the engine's spike and explosion rules (their configured parameters)."""
        params = {"spike": [], "explosion": []}
        for rule in engine.rules:
            if rule.detector in params:
                params[rule.detector].append(engine.params[rule.code])
        spike, explosion = params["spike"] or [{}], params["explosion"] or [{}]
        return cls(window=max(p.get("window", 5) for p in spike), min_ratio=min(p.get("min_ratio", 1.5) for p in spike),
                   factor=min(p.get("factor", 5.0) for p in explosion),
                   min_points=max(p.get("min_points", 3) for p in explosion))

    def fires(self, key, step: float | None, value: float) -> bool:
        track = self.tracks.get(key)
        if track is None:
            track = self.tracks[key] = _Track(self.window)
        fire = step is not None and track.step is not None and step <= track.step
        track.step = step if step is not None else track.step
        track.count += 1
        if track.candidates:
            ago = {track.count - index for index in track.candidates}
            fire |= not ago.isdisjoint(_RECHECKS)
            track.candidates = [index for index in track.candidates if track.count - index < _RECHECKS[-1]]
        if not math.isfinite(value):
            return True
        recent = track.recent
        if recent:
            low, high = min(recent), max(recent)
            bar = min(self._bar(low), self._bar(high), self._bar(min(max(0.0, low), high)))
            if value >= bar:
                track.candidates.append(track.count)
                fire = True
        lowest = track.lowest
        if lowest is not None and lowest > 0:
            last5 = sorted([*list(recent)[-4:], value])
            if max(value, last5[len(last5) // 2]) >= self.factor * lowest:
                track.climb += 1
                fire |= track.climb <= self.settle
            else:
                track.climb = 0
        recent.append(value)
        track.lowest = value if lowest is None else min(lowest, value)
        return fire

    def _bar(self, level: float) -> float:
        return level + self.rise * abs(level)


class _Track:
    __slots__ = ("recent", "lowest", "step", "count", "candidates", "climb")

    def __init__(self, window: int) -> None:
        self.recent: deque = deque(maxlen=max(window, 4))
        self.lowest: float | None = None
        self.step: float | None = None
        self.count = 0
        self.candidates: list[int] = []
        self.climb = 0
