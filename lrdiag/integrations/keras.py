"""`LrdiagCallback` for Keras 3: judges the epoch logs (loss, val_loss, metrics, learning_rate) at the epoch
index, as Keras' CSVLogger and History record them; can stop training.

Keras' batch logs are running means over the epoch, not points of a curve, so the rules read the epoch
logs; a batch whose running loss turns NaN or inf is taken at once (as the epoch's point) and stops the
run within that batch, as `keras.callbacks.TerminateOnNaN` would, but with the finding to show for it.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras

from lrdiag.live.monitor import Monitor, describe

try:
    from keras.src.utils.io_utils import print_msg as _print  # Keras' own output (stdout, or absl logging)
except ImportError:  # pragma: no cover - a Keras without it
    _print = print


class LrdiagCallback(keras.callbacks.Callback):
    """Run lrdiag's rules on the epoch logs; stop training at a finding of `stop_on` severity.

    stop_on: "error", "warning" or None (report only). every_n_steps: how often the rules run, in epochs
    (a non-finite value makes them run at once). select / ignore: rule codes or names, as on the command
    line. findings_file: where the findings are written when training ends (None: not written; Keras
    has no log folder of its own)."""

    def __init__(self, stop_on: str | None = "error", every_n_steps: int = 1, select: list[str] | None = None,
                 ignore: list[str] | None = None, findings_file: str | Path | None = None) -> None:
        super().__init__()
        self.monitor = Monitor("keras", stop_on, every_n_steps, select, ignore)
        self.findings_file = findings_file
        self._epoch = 0
        self._taken: set[str] = set()  # tags of this epoch already taken from a non-finite batch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._taken = epoch, set()

    def on_train_batch_end(self, batch, logs=None):
        bad = {tag: value for tag, value in (logs or {}).items() if _nonfinite(value)}
        if bad:
            self._taken |= set(bad)
            self.monitor.add(self._epoch, bad)
            self._check(self._epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.monitor.add(epoch, {tag: value for tag, value in (logs or {}).items() if tag not in self._taken})
        if self.monitor.due(epoch):
            self._check(epoch)

    def on_train_end(self, logs=None):
        if self.monitor.points:
            self._check(self._epoch)
        if self.findings_file:
            _print(f"lrdiag: findings written to {self.monitor.write(Path(self.findings_file))}")

    def _check(self, epoch: int) -> None:
        for finding, status in self.monitor.check(epoch):
            _print(describe(finding, status))
        stop = self.monitor.stop_finding
        if stop is not None and not self.model.stop_training:
            _print(f"lrdiag: stopping training in epoch {epoch}: {stop.rule} {stop.name} is {stop.severity}")
            self.model.stop_training = True

    @property
    def findings(self):
        """The findings on everything logged so far (what `lrdiag analyze` gives on the same points)."""
        return self.monitor.latest


def _nonfinite(value) -> bool:
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
