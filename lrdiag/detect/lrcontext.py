"""What the learning rate did around a finding: the evidence the recommender builds on.

The shape of the whole schedule (constant, warmup, no warmup, decay) and the LR's phase at
the finding's step (warming up, at its peak, decaying, decayed to almost nothing).
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import clean
from lrdiag.series.model import Series

_FLAT = 0.01  # an LR within 1 % of its peak is "at the peak"; a schedule within 1 % is constant
_DECAYED = 0.01  # below 1 % of the peak, an LR no longer moves the weights much


def schedule(lr: Series) -> dict | None:
    steps, values = clean(lr)
    if values.size == 0:
        return None
    peak = int(np.argmax(values))
    peak_value = float(values[peak])
    constant = bool(values.min() >= (1 - _FLAT) * peak_value)
    warmup = bool(values[0] < 0.5 * peak_value and peak > 0)
    decayed = np.flatnonzero((np.arange(values.size) > peak) & (values <= _DECAYED * peak_value))
    return {"steps": steps, "values": values, "peak": peak_value, "peak_step": int(steps[peak]),
            "constant": constant, "warmup": warmup, "warmup_steps": int(steps[peak] - steps[0]) if warmup else 0,
            "decayed_step": int(steps[decayed[0]]) if decayed.size else None}


def describe(lr: Series, step_start: int, step_end: int) -> dict:
    """The LR evidence attached to a finding spanning [step_start, step_end]."""
    shape = schedule(lr)
    if shape is None:
        return {}
    steps, values = shape["steps"], shape["values"]
    at = max(int(np.searchsorted(steps, step_start, side="right")) - 1, 0)
    lr_at = float(values[at])
    if shape["constant"]:
        phase = "constant"
    elif step_start < shape["peak_step"]:
        phase = "warming up"
    elif lr_at >= (1 - _FLAT) * shape["peak"]:
        phase = "at its peak"
    elif lr_at <= _DECAYED * shape["peak"]:
        phase = "decayed to almost nothing"
    else:
        phase = "decaying"
    kind = "constant" if shape["constant"] else ("warmup then " if shape["warmup"] else "no warmup, ") + "decay"
    span = max(int(steps[-1] - steps[0]), 1)
    return {"lr_at_step": lr_at, "lr_peak": shape["peak"], "lr_peak_step": shape["peak_step"],
            "lr_ratio_to_peak": lr_at / shape["peak"] if shape["peak"] else None, "lr_phase": phase,
            "lr_schedule": kind, "lr_warmup_steps": shape["warmup_steps"],
            "lr_decayed_step": shape["decayed_step"],
            "lr_decayed_early": bool(shape["decayed_step"] is not None
                                     and shape["decayed_step"] - steps[0] < 0.5 * span),
            "lr_series": lr.tag}
