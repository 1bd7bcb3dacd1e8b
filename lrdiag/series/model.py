"""The tidy representation of a run: one series per metric, plus what went wrong reading it."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

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
        """The per-metric entry of the JSON output (Run.summaries makes those of short series together)."""
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

    def summaries(self) -> dict[str, dict]:
        """Each series' summary (Series.summary), by tag. Those of series of up to FEW_POINTS points are made
        together, a few numpy calls for all (a line of a million keys makes a million one-point series, and
        numpy's calls on each cost 30 times their points); a longer or empty series is summed up alone."""
        sizes = [series.steps.size for series in self.series.values()]
        few = [series for series, size in zip(self.series.values(), sizes) if 0 < size <= FEW_POINTS]
        # a part at a time, made as they are needed: what making them takes besides what they keep stays small
        made = chain.from_iterable(_summaries(few[start:start + PART]) for start in range(0, len(few), PART))
        return {tag: next(made) if 0 < size <= FEW_POINTS else series.summary()
                for (tag, series), size in zip(self.series.items(), sizes)}

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
        partners = self.by_role(partner_role) if found and partner_role else []
        if not partners:
            return found[0] if found else None
        tops = [s for s in found if rank(s.tag, role) == rank(found[0].tag, role)]
        partner_tops = [s for s in partners if rank(s.tag, partner_role) == rank(partners[0].tag, partner_role)]
        common = {component(s.tag) for s in tops} & {component(s.tag) for s in partner_tops}
        return next(s for s in tops if component(s.tag) == min(common)) if common else found[0]


_new = object.__new__
# A series of more points is summed up alone: its numpy calls (~15 us) cost little beside its points' own work.
FEW_POINTS = 64
PART = 1 << 16  # series summed up together at a time: ~10 MB of work, whatever the run's size


def _summaries(few: list[Series]) -> list[dict]:
    """Series.summary of each of `few` (series of one point or more): their points laid end to end, reduced a
    series at a time."""
    if not few:
        return []
    steps = np.concatenate([series.steps for series in few])
    values = np.concatenate([series.values for series in few])
    ends = np.cumsum([series.steps.size for series in few])
    sizes = np.diff(ends, prepend=0)
    starts, lasts = ends - sizes, ends - 1
    finite = np.isfinite(values)
    nonfinite = np.add.reduceat(~finite, starts, dtype=np.int64)
    lows = np.minimum.reduceat(np.where(finite, values, np.inf), starts)
    highs = np.maximum.reduceat(np.where(finite, values, -np.inf), starts)
    mins, maxes, last_values = lows.tolist(), highs.tolist(), values[lasts].tolist()
    for index in np.flatnonzero(nonfinite == sizes).tolist():
        mins[index] = maxes[index] = None
    for index in np.flatnonzero(~finite[lasts]).tolist():
        last_values[index] = _json_float(last_values[index])
    # A one-point series' step is its first and last, its value its last, least and most: one Python number each
    # (a million one-point series: 80 MB less)
    out = [{"role": series.role, "points": size, "first_step": first, "last_step": first if size == 1 else last,
            "last": last_value, "min": last_value if size == 1 and not bad else low,
            "max": last_value if size == 1 and not bad else high, "nonfinite": bad}
           for series, size, first, last, last_value, low, high, bad in zip(
               few, sizes.tolist(), steps[starts].tolist(), steps[lasts].tolist(), last_values, mins, maxes,
               nonfinite.tolist())]
    for index in np.flatnonzero((lows == 0) | (highs == 0)).tolist():
        out[index] = few[index].summary()  # 0.0 and -0.0 are equal: the sign kept is the one of a series' own min
    return out


def _json_float(value: float) -> float | str:
    """JSON has no NaN or Inf: write them as strings so the output stays valid JSON."""
    value = float(value)
    if np.isfinite(value):
        return value
    return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
