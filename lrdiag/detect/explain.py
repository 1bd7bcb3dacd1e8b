"""Findings that a larger finding on the same metric already explains are dropped.

An oscillating loss peaks every period, an exploding one jumps before it blows up, and a loss
jumps just before it turns NaN: reporting each of those peaks as a spike buries the one finding
that says what happened. A spike is explained when it lies inside an oscillation or explosion
of the same metric, or in the last tenth of the steps before that metric's first NaN/Inf.
A loss locked to a cyclic LR (LRD107) explains more: the spikes at the LR's peaks, the stall
of a loss that every cycle sets back, and the plain oscillation (LRD102) it names the cause of,
when they overlap it on the same metric; and a spike of the run's other loss (an evaluation
made while the LR stood at a top) that lies where the LR was in the top half of its range, and a
divergence whose rise rests on one last evaluation made there. Any oscillation explains a stall of the same metric
that it covers half of or more: a loss swinging through a stretch is not stalled there; and a
non-finite finding explains a stall that lies mostly after its first NaN.
"The same metric" includes the run's other training-loss series: Lightning logs one loss per step
and per epoch (train_loss_step, train_loss_epoch), and the explosion found on the one explains the
epoch means that jump along with it.
"""

from __future__ import annotations

_EXPLAINERS = {"oscillation", "explosion", "nonfinite"}
CYCLE_LOCKED = "loss.lr-cycle-locked"


def _same(big, small, train_losses: frozenset) -> bool:
    return big.metric == small.metric or (big.metric in train_losses and small.metric in train_losses)


def _explains(big, small, train_losses: frozenset = frozenset()) -> bool:
    if big.name == CYCLE_LOCKED and not _same(big, small, train_losses) and small.category in ("spike", "train_val_divergence"):
        if small.category == "spike":
            step = small.evidence.get("step", small.step_start)
        elif small.evidence.get("end_points") == 1:  # a rise that rests on the last evaluation alone
            step = small.evidence.get("last_step", small.step_end)
        else:
            return False
        return any(low <= step <= high for low, high in big.evidence.get("lr_tops", []))
    if not _same(big, small, train_losses) or big is small:
        return False
    if big.name == CYCLE_LOCKED:
        return (small.category in ("spike", "stall", "oscillation") and small.name != CYCLE_LOCKED
                and small.step_start <= big.step_end and big.step_start <= small.step_end)
    if big.category == "nonfinite" and small.category == "stall":
        # After its first NaN a loss is garbage (or logged as 0, as Transformers does): a
        # "plateau" that lies mostly after it is no stall.
        return small.step_end - big.step_start >= 0.5 * max(small.step_end - small.step_start, 1)
    if big.category == "oscillation" and small.category == "stall":
        # A loss swinging through most of a stretch is oscillating there, not stalled.
        overlap = min(big.step_end, small.step_end) - max(big.step_start, small.step_start)
        return overlap >= 0.5 * max(small.step_end - small.step_start, 1)
    if big.category not in _EXPLAINERS or small.category != "spike":
        return False
    step = small.evidence.get("step", small.step_start)
    if big.category == "nonfinite":
        first_bad = big.step_start
        return first_bad - 0.1 * max(first_bad, 1) <= step <= first_bad
    return big.step_start <= step <= big.step_end


def drop_explained(findings: list, train_losses=()) -> list:
    """`train_losses`: the tags of the run's training-loss series (one loss logged at two cadences)."""
    bigger = [f for f in findings if f.category in _EXPLAINERS]
    train_losses = frozenset(train_losses)
    return [f for f in findings if not any(_explains(big, f, train_losses) for big in bigger)]
