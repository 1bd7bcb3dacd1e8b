"""The tidy representation of a run: one series per metric, plus what went wrong reading it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, order=True)
class Problem:
    """Something met while reading a log: the file, where in it, and what."""

    file: str
    where: str  # "offset 1234" or "line 56"; "" when it concerns the whole file
    message: str

    def to_dict(self) -> dict:
        return {"file": self.file, "where": self.where, "message": self.message}


@dataclass(slots=True)
class Series:
    """One metric of a run: steps (int64), values (float64), wall times (float64 or None).

    Slotted: a log of a million distinct keys makes a million series, and a slotted one costs half
    the memory and time of one with a __dict__."""

    tag: str
    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray | None = None
    role: str | None = None

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.wall_times is not None:
            self.wall_times = np.asarray(self.wall_times, dtype=np.float64)
        if self.steps.shape != self.values.shape:
            raise ValueError(f"series {self.tag!r}: {self.steps.size} steps but {self.values.size} values")

    @classmethod
    def of_arrays(cls, tag: str, steps: np.ndarray, values: np.ndarray) -> Series:
        """A series of arrays a reader built already as int64 steps and float64 values of equal
        length, taken as they are: no conversion and no check (0.2 us a series against 1 us for
        the checked constructor: a line of a million keys makes a million series)."""
        series = _new(cls)
        series.tag = tag
        series.steps = steps
        series.values = values
        series.wall_times = None
        series.role = None
        return series

    def __len__(self) -> int:
        return int(self.steps.size)

    def summary(self) -> dict:
        """The per-metric entry of the JSON output."""
        finite = np.isfinite(self.values)
        has_points = self.steps.size > 0
        return {
            "role": self.role,
            "points": int(self.steps.size),
            "first_step": int(self.steps[0]) if has_points else None,
            "last_step": int(self.steps[-1]) if has_points else None,
            "last": _json_float(self.values[-1]) if has_points else None,
            "min": _json_float(self.values[finite].min()) if finite.any() else None,
            "max": _json_float(self.values[finite].max()) if finite.any() else None,
            "nonfinite": int((~finite).sum()),
        }


@dataclass
class ReadResult:
    """What one reader got from one file."""

    source: str
    series: dict[str, Series] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    """A run: a folder of log files or one log file, read and tidied."""

    name: str
    source: str
    files: list[str]
    series: dict[str, Series] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def by_role(self, role: str) -> list[Series]:
        """All series with this role, the preferred one first (see roles.rank); among equals the
        longest (Hugging Face's one-point `train_loss` summary must not stand for `loss`), then by tag,
        so that the choice never depends on the order a reader met the tags in."""
        from lrdiag.series.roles import rank

        found = [s for s in self.series.values() if s.role == role]
        return sorted(found, key=lambda s: (rank(s.tag, role), -len(s), s.tag))

    def primary(self, role: str) -> Series | None:
        """The series that stands for this role. A component loss is paired with the same component
        of the other split: YOLO's `train/obj_loss` with `val/obj_loss`, never with `train/box_loss`."""
        from lrdiag.series.roles import component, rank

        found = self.by_role(role)
        partner_role = {"train_loss": "val_loss", "val_loss": "train_loss"}.get(role)
        if not found or partner_role is None or not self.by_role(partner_role):
            return found[0] if found else None
        tops = [s for s in found if rank(s.tag, role) == rank(found[0].tag, role)]
        partners = self.by_role(partner_role)
        partner_tops = [s for s in partners if rank(s.tag, partner_role) == rank(partners[0].tag, partner_role)]
        common = {component(s.tag) for s in tops} & {component(s.tag) for s in partner_tops}
        return next(s for s in tops if component(s.tag) == min(common)) if common else found[0]


_new = object.__new__


def _json_float(value: float) -> float | str:
    """JSON has no NaN or Inf: write them as strings so the output stays valid JSON."""
    value = float(value)
    if np.isfinite(value):
        return value
    return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
