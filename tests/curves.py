"""Compact curves for rule cases, in the spirit of promtool's "2.0-0.01x100 9.0".

Space-separated tokens, each adding points: `2.5` one value; `2.5x40` forty times 2.5;
`2.0-0.01x100` a hundred values 2.0, 1.99, ... (or `+`); `2.0*0.98x100` a hundred values
falling geometrically; `nan`, `inf`. `noise` multiplies every finite point by exp(N(0, noise))
with a fixed seed, so a case is a realistic noisy curve and still reproducible.
"""

from __future__ import annotations

import re

import numpy as np

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"  # 2, 2.5, .5, 4.4e-05
_TOKEN = re.compile(rf"^(?P<start>[-+]?{_NUMBER}|nan|inf)(?:(?P<op>[-+*])(?P<delta>{_NUMBER}))?(?:x(?P<count>\d+))?$")


def curve(spec: str, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    points: list[np.ndarray] = []
    for token in spec.split():
        match = _TOKEN.match(token)
        if not match:
            raise ValueError(f"bad curve token {token!r} in {spec!r}")
        start = float(match["start"])
        count = int(match["count"] or 1)
        index = np.arange(count)
        delta = float(match["delta"] or 0)
        if match["op"] == "*":
            values = start * delta ** index
        else:
            values = start + (delta if match["op"] != "-" else -delta) * index
        points.append(values)
    values = np.concatenate(points)
    if noise:
        finite = np.isfinite(values)
        values[finite] *= np.exp(noise * np.random.default_rng(seed).standard_normal(int(finite.sum())))
    return values
