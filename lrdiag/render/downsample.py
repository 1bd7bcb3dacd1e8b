"""Fewer points for display that keep every spike: each bucket's lowest and highest point (and its first NaN)."""

from __future__ import annotations

import numpy as np


def minmax(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about `max_points` points: per bucket of consecutive points its min and max, in step order,
    the ends, the first non-finite point (a gap in the line stays a gap); flat stretches keep only their ends."""
    size = values.size
    if size > max_points:
        width = -(-size // max(max_points // 2, 1))  # points per bucket, rounded up
        buckets = -(-size // width)
        pad = buckets * width - size  # < width: every bucket keeps at least one real point
        finite = np.isfinite(values)
        grid_low = np.pad(np.where(finite, values, np.inf), (0, pad), constant_values=np.inf).reshape(buckets, width)
        grid_high = np.pad(np.where(finite, values, -np.inf), (0, pad), constant_values=-np.inf).reshape(buckets, width)
        bad = np.pad(~finite, (0, pad)).reshape(buckets, width)
        offsets = np.arange(buckets) * width
        picks = [np.array([0, size - 1]), offsets + grid_low.argmin(axis=1), offsets + grid_high.argmax(axis=1)]
        has_bad = bad.any(axis=1)
        picks.append((offsets + bad.argmax(axis=1))[has_bad])
        keep = np.unique(np.concatenate(picks))
        keep = keep[keep < size]
        steps, values = steps[keep], values[keep]
    if values.size > 2:
        # A point equal to both neighbours adds nothing to a line (constant LR, plateaus).
        same = np.r_[False, (values[1:-1] == values[:-2]) & (values[1:-1] == values[2:]), False]
        steps, values = steps[~same], values[~same]
    return steps, values
