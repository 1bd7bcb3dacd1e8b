"""LRD102 against noise: short logs (32 to 63 points: a per-epoch Keras CSV, a sparse per-step log) are one
window, the whole log, with a bar that holds the chance that noise passes at 1e-3 for a background that is
the median of a dozen powers; red noise (a smoothing logger's) is judged against the frequencies near the
peak, not the whole spectrum far below its hump."""

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
    needed = oscillation._background_bar(11, np.log2(16 / 1e-3))
    rng = np.random.default_rng(0)
    background = np.sort(rng.exponential(size=(400_000, 11)), axis=1)[:, 5]
    chance = float(np.mean(rng.exponential(size=400_000) > needed * background))
    assert chance * 16 == pytest.approx(1e-3, rel=0.25)  # 16 frequencies tested
    assert oscillation._background_bar(11, 14.0) > oscillation._background_bar(16, 14.0) > oscillation._background_bar(40, 14.0) > 14


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


def test_red_noise_passes_for_a_swing_far_less_often():
    # AR(0.7) noise of +-30 % a step on a falling loss: 37 of these 60 500-point logs "oscillated" when a
    # slow peak's background was the median of the whole spectrum, 14 with its 16 nearest frequencies (a
    # hump this loud still passes now and then: a known limit).
    rng = np.random.default_rng(3)
    loud = 0
    for _ in range(60):
        noise = np.zeros(500)
        for i in range(1, 500):
            noise[i] = 0.7 * noise[i - 1] + 0.3 * rng.standard_normal()
        loud += any(hit.evidence.get("peak_ratio") is not None for hit in _found(np.exp(-3 * np.arange(500) / 500 + noise)))
    assert loud <= 15
