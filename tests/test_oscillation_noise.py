"""LRD102 on short logs (32 to 63 points: a per-epoch Keras CSV, a sparse per-step log): one window, the
whole log, with a bar that holds the chance that noise passes at 1e-3 for a background that is the median
of a dozen powers."""

from __future__ import annotations

import numpy as np
import pytest

from lrdiag.detect import oscillation
from lrdiag.detect.base import Context
from lrdiag.series.model import Run, Series
from lrdiag.series.roles import assign_roles


def _found(values: np.ndarray) -> list:
    series = {"loss": Series("loss", np.arange(values.size), values)}
    assign_roles(series)
    return oscillation.detect(series["loss"], Context.of(Run("case", "test", [], series)))


def test_the_short_bar_is_the_exact_chance_of_an_exponential_over_a_median_of_a_dozen():
    # One window of 32 points: 17 frequencies, a background of 11 (all but 0 and the peak's 5), its 6th smallest.
    needed = oscillation._short_needed(32, 4)
    rng = np.random.default_rng(0)
    background = np.sort(rng.exponential(size=(400_000, 11)), axis=1)[:, 5]
    chance = float(np.mean(rng.exponential(size=400_000) > needed * background))
    assert chance * 13 == pytest.approx(1e-3, rel=0.25)  # 13 frequencies a peak may take
    assert oscillation._short_needed(32, 4) > oscillation._short_needed(40, 4) > oscillation._short_needed(63, 4) > 16


def test_white_noise_in_short_logs_stays_quiet_and_a_swing_is_found():
    rng = np.random.default_rng(1)
    for size in (32, 40, 63):
        trend = np.exp(-0.05 * np.arange(size))
        loud = sum(bool(_found(trend * np.exp(0.3 * rng.standard_normal(size)))) for _ in range(200))
        assert loud <= 2, (size, loud)  # about 0.4 % at +-30 % noise
        swing = trend * np.exp(0.35 * np.cos(2 * np.pi * np.arange(size) / 8) + 0.05 * rng.standard_normal(size))
        [hit] = _found(swing)
        assert hit.evidence["period_points"] == pytest.approx(8, abs=0.2)  # size / the nearest frequency


def test_fewer_than_32_points_are_never_judged():
    size = 31
    swing = np.exp(-0.05 * np.arange(size) + 0.5 * np.cos(2 * np.pi * np.arange(size) / 6))
    assert _found(swing) == []
