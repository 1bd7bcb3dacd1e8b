"""`LrdiagCallback` for PyTorch Lightning: judges what the trainer logs, at the step it logs it; can stop the run.

The callback adds a logger of its own beside the trainer's, so it sees exactly the values and steps the
log files get (train loss, learning rate from `LearningRateMonitor`, validation metrics). A trainer built
with `logger=False` logs nothing, so there is nothing to judge: the callback says so once.
"""

from __future__ import annotations

import logging
from pathlib import Path

try:
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import Logger
except ImportError:  # the `lightning` package ships the same API under lightning.pytorch
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import Logger

from lrdiag.live.monitor import Monitor, describe

log = logging.getLogger(pl.__name__ + ".callbacks.lrdiag")  # shown by Lightning's own log handler
FINDINGS_FILE = "lrdiag_findings.json"


class _Feed(Logger):
    """A logger that hands every logged point to the callback."""

    def __init__(self, callback: "LrdiagCallback") -> None:
        super().__init__()
        self.callback = callback

    @property
    def name(self) -> str:
        return "lrdiag"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.callback._logged({tag: value for tag, value in metrics.items() if tag != "epoch"}, step)


class LrdiagCallback(pl.Callback):
    """Run lrdiag's rules on the metrics the trainer logs; stop training at a finding of `stop_on` severity.

    stop_on: "error", "warning" or None (report only). every_n_steps: how often the rules run (a
    non-finite value makes them run at once). select / ignore: rule codes or names, as on the command line.
    findings_file: where the findings are written at the end, relative to the trainer's log_dir (None: not written)."""

    def __init__(self, stop_on: str | None = "error", every_n_steps: int = 100, select: list[str] | None = None,
                 ignore: list[str] | None = None, findings_file: str | None = FINDINGS_FILE) -> None:
        self.monitor = Monitor("lightning", stop_on, every_n_steps, select, ignore)
        self.findings_file = findings_file
        self._trainer = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or any(isinstance(logger, _Feed) for logger in trainer.loggers):
            return
        self._trainer = trainer
        if not trainer.loggers:
            log.warning("lrdiag: the trainer has no logger (logger=False), so nothing is logged for lrdiag to judge")
            return
        trainer.loggers = [*trainer.loggers, _Feed(self)]

    def _logged(self, metrics: dict, step: int | None) -> None:
        trainer = self._trainer
        if trainer is None or trainer.sanity_checking:
            return
        step = trainer.global_step if step is None else step
        self.monitor.add(step, metrics)
        if self.monitor.due(step):
            self._check(step)

    def _check(self, step: int) -> None:
        for finding, status in self.monitor.check(step):
            log.warning(describe(finding, status))
        if self.monitor.stop_finding is not None and not self._trainer.should_stop:
            log.warning(f"lrdiag: stopping training at step {step}: {self.monitor.stop_finding.rule} "
                        f"{self.monitor.stop_finding.name} is {self.monitor.stop_finding.severity}")
            self._trainer.should_stop = True

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.monitor.points:
            self._check(trainer.global_step)
        if self.findings_file and trainer.is_global_zero:
            folder = Path(trainer.log_dir or trainer.default_root_dir)
            log.info(f"lrdiag: findings written to {self.monitor.write(folder / self.findings_file)}")

    @property
    def findings(self):
        """The findings on everything logged so far (what `lrdiag analyze` gives on the same points)."""
        return self.monitor.latest
