"""Non-finite values: NaN or Inf in a loss; the first step is where the run broke.

Hugging Face's Trainer, by default (`logging_nan_inf_filter=True`), leaves a NaN or Inf step's
loss out of the logged mean: the loss is logged as the mean of the finite steps (0.0 when none
was) while `grad_norm`, logged beside it, is NaN. A training loss logged at a step where the
run's grad norm is non-finite is therefore read as non-finite here, and the evidence says what
was logged. The logged data itself is left as it is. Only a NaN grad norm counts: an Inf one is
what a mixed-precision loss scaler meets on an overflow it skips, with a real loss beside it.
"""

from __future__ import annotations

import numpy as np

from lrdiag.detect.base import Context, Hit, stand_ins
from lrdiag.series.model import Series


def detect(series: Series, ctx: Context) -> list[Hit]:
    bad = ~np.isfinite(series.values)
    filtered = stand_ins(series, ctx) & ~bad
    bad |= filtered
    if not bad.any():
        return []
    first = int(np.argmax(bad))
    kinds = sorted({"NaN" if np.isnan(v) else ("+Inf" if v > 0 else "-Inf") for v in series.values[bad][:1000]
                    if not np.isfinite(v)} | ({"NaN"} if filtered.any() else set()))
    finite_after = bool(np.isfinite(series.values[first:][~bad[first:]]).any())
    earlier = series.values[:first][~bad[:first]]
    evidence = {"step": int(series.steps[first]), "count": int(bad.sum()), "kinds": "/".join(kinds),
                "last_finite": float(earlier[np.isfinite(earlier)][-1]) if np.isfinite(earlier).any() else None,
                "finite_after": finite_after, "detail": ""}
    if filtered.any():
        at = int(np.argmax(filtered))
        grad = ctx.run.primary("grad_norm")
        grad_value = grad.values[grad.steps == series.steps[at]][0]
        evidence["logged_as"] = [{"step": int(s), "loss": float(v)} for s, v in
                                 zip(series.steps[filtered][:100], series.values[filtered][:100])]
        evidence["detail"] = (f"; at step {int(series.steps[at])} it was logged as {series.values[at]:.4g} while "
                              f"{grad.tag} was {grad_value} (Transformers' logging_nan_inf_filter logs a NaN "
                              f"step's loss as the mean of the finite ones)")
    return [Hit(int(series.steps[first]), int(series.steps[bad][-1]), evidence)]
