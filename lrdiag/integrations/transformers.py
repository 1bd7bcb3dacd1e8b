"""`LrdiagCallback` for the Hugging Face Trainer: judges each `on_log` (loss, grad_norm, learning_rate, eval
metrics) at the trainer's global step; can stop training.

With the Trainer's default `logging_nan_inf_filter=True` a NaN step's loss is logged as the mean of the finite
ones (or 0.0), while `grad_norm` is logged as it is: the non-finite rule (LRD105) reads `grad_norm` too, so
the run is still stopped at that logging step.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback
from transformers.utils import logging

from lrdiag.live.monitor import Monitor, describe

log = logging.get_logger("transformers.lrdiag")  # shown at the Trainer's own verbosity (warnings by default)
FINDINGS_FILE = "lrdiag_findings.json"


class LrdiagCallback(TrainerCallback):
    """Run lrdiag's rules on what the Trainer logs; stop training at a finding of `stop_on` severity.

    stop_on: "error", "warning" or None (report only). every_n_steps: how often the rules run (a
    non-finite value makes them run at once). select / ignore: rule codes or names, as on the command line.
    findings_file: written into `args.output_dir` when training ends (None: not written)."""

    def __init__(self, stop_on: str | None = "error", every_n_steps: int = 100, select: list[str] | None = None,
                 ignore: list[str] | None = None, findings_file: str | None = FINDINGS_FILE) -> None:
        self.monitor = Monitor("transformers", stop_on, every_n_steps, select, ignore)
        self.findings_file = findings_file

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "train_runtime" in logs:  # the closing summary: its train_loss is a mean, not a point
            return control
        self.monitor.add(state.global_step, logs)
        if self.monitor.due(state.global_step):
            self._check(state.global_step, control)
        return control

    def _check(self, step: int, control) -> None:
        for finding, status in self.monitor.check(step):
            log.warning(describe(finding, status))
        stop = self.monitor.stop_finding
        if stop is not None and not control.should_training_stop:
            log.warning(f"lrdiag: stopping training at step {step}: {stop.rule} {stop.name} is {stop.severity}")
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor.points:
            self._check(state.global_step, control)
        if self.findings_file and state.is_world_process_zero:
            path = self.monitor.write(Path(args.output_dir) / self.findings_file)
            log.info(f"lrdiag: findings written to {path}")
        return control

    @property
    def findings(self):
        """The findings on everything logged so far (what `lrdiag analyze` gives on the same points)."""
        return self.monitor.latest
