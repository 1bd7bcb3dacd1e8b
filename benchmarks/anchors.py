"""The published rules people use today, replayed on logged series: the anchors lrdiag's rules
are compared with in bench_precision.py. Each follows its source or documentation, defaults
included; each returns whether it would have fired on the series.

- Lightning's SpikeDetection (lightning.fabric.utilities.spike, defaults window=10, warmup=1,
  rtol=2.0, atol=None, finite_only=True, mode="min"): a batch is a spike when its loss is not
  below the previous one and differs from the running mean of the last 10 accepted losses by at
  least rtol x that mean (so >= 3x the mean); NaN/Inf is a spike too. Training stops at the first.
- llm-foundry's KillLossSpike (llmfoundry/callbacks/kill_loss_spike_callback.py, mosaicml/llm-foundry
  at 03826b58; defaults window_size=100, outlier_multiplier=2, patience=4, loss_cap=10): once its window
  of the last 100 losses is full, a loss at or above 2x the window's mean is an outlier; more than
  `patience` outliers in a row (5) is a loss spike; else, from batch 2 x window_size on, half the window
  above loss_cap is a "high loss". Each loss joins the window, a NaN too: the mean is then NaN and no
  comparison with it holds again, so a NaN never stops it (as in its source). Training stops at either.
- SageMaker Debugger's LossNotDecreasing (defaults num_steps=10, diff_percent unset = "checks
  if the loss is decreasing"): every num_steps steps, the loss must be below the loss at the last
  checked step, at least num_steps behind.
- SageMaker Debugger's Overfit (defaults start_step=0, patience=1, ratio_threshold=0.1): fires
  when (validation loss - training loss) / training loss exceeds 0.1 at `patience` steps; the
  training loss at an evaluation is the mean of the training points since the previous one.
- AUTOTRAINER's unstable-training ("oscillating loss") test (Zhang et al., ICSE 2021, utils/
  monitor.py ol_judge, paper defaults zeta=0.03, eta=0.2, judged from 30 % of training on): pairs
  the i-th local maximum of the accuracy with its i-th local minimum; fires when at least eta x
  (points so far) pairs differ by zeta or more.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def lightning_spike(values: np.ndarray, window: int = 10, warmup: int = 1, rtol: float = 2.0) -> bool:
    return lightning_spike_at(values, window, warmup, rtol) is not None


def lightning_spike_at(values: np.ndarray, window: int = 10, warmup: int = 1, rtol: float = 2.0) -> int | None:
    """The index of the loss at which SpikeDetection stops training, or None."""
    accepted: deque = deque(maxlen=window)
    last = 0.0
    for index, loss in enumerate(np.asarray(values, dtype=float).tolist()):
        if index >= warmup:
            if not np.isfinite(loss):
                return index
            mean = sum(accepted) / len(accepted) if accepted else 0.0
            if loss - last > 0 and abs(loss - mean) >= abs(rtol * mean):
                return index
        if np.isfinite(loss):
            accepted.append(loss)
            last = loss
    return None


def kill_loss_spike_at(values: np.ndarray, window_size: int = 100, outlier_multiplier: float = 2.0,
                       patience: int = 4, loss_cap: float = 10.0) -> int | None:
    """The index of the loss (the batch) at which KillLossSpike (log_only=False) stops training, or None."""
    window: deque = deque(maxlen=window_size)
    outliers = 0
    for index, loss in enumerate(np.asarray(values, dtype=float).tolist()):
        if len(window) == window_size:
            mean = float(np.mean(window))
            outliers = outliers + 1 if loss >= mean * outlier_multiplier else 0
            if outliers > patience:
                return index
            if index >= 2 * window_size and sum(1 for value in window if value > loss_cap) >= window_size / 2:
                return index  # checked whenever no spike was declared, as its batch_end does
        window.append(loss)
    return None


def loss_not_decreasing(steps: np.ndarray, values: np.ndarray, num_steps: int = 10) -> bool:
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if values.size < 2:
        return False
    checked_step, checked_value = steps[0], values[0]
    for step, value in zip(steps[1:].tolist(), values[1:].tolist()):
        if step - checked_step >= num_steps:
            if value >= checked_value:
                return True
            checked_step, checked_value = step, value
    return False


def overfit(train_steps: np.ndarray, train: np.ndarray, val_steps: np.ndarray, val: np.ndarray,
            ratio_threshold: float = 0.1, patience: int = 1, start_step: int = 0) -> bool:
    exceeded = 0
    previous = -np.inf
    for step, value in zip(val_steps.tolist(), val.tolist()):
        window = train[(train_steps > previous) & (train_steps <= step) & np.isfinite(train)]
        previous = step
        if step < start_step or window.size == 0 or not np.isfinite(value):
            continue
        mean_train = float(window.mean())
        if mean_train != 0 and (value - mean_train) / mean_train > ratio_threshold:
            exceeded += 1
            if exceeded >= patience:
                return True
    return False


def autotrainer_unstable(acc: np.ndarray, zeta: float = 0.03, eta: float = 0.2, judgment_point: float = 0.3) -> bool:
    acc = acc[np.isfinite(acc)]
    n = acc.size
    if n < 3:
        return False
    inner = np.arange(1, n - 1)
    maxima = inner[(acc[1:-1] >= acc[:-2]) & (acc[1:-1] >= acc[2:])]
    minima = inner[(acc[1:-1] <= acc[:-2]) & (acc[1:-1] <= acc[2:])]
    pairs = min(maxima.size, minima.size)
    # At a check after k points, the extrema known are those at indices <= k - 2; the monitor
    # runs after every epoch from judgment_point of the run on.
    ready = np.maximum(maxima[:pairs], minima[:pairs]) + 2
    wide = acc[maxima[:pairs]] - acc[minima[:pairs]] >= zeta
    for k in range(max(3, int(np.ceil(judgment_point * n))), n + 1):
        if np.count_nonzero(wide & (ready <= k)) >= eta * k:
            return True
    return False
