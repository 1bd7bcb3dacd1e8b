"""The detectors' own median filter equals scipy's exactly, on the numpy path and on the scipy path."""

import numpy as np
import pytest
from scipy.ndimage import median_filter as scipy_median_filter

from lrdiag.detect import robust


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest"])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 6, 7, 8, 41, 64, 65, 129, 256])
@pytest.mark.parametrize("n", [2, 5, 10, 100, 1000, 5000])
def test_median_filter_equals_scipy(n, size, mode, monkeypatch):
    monkeypatch.setattr(robust, "_scipy_imported", lambda: False)  # scipy is imported here: force numpy's path
    values = np.random.default_rng(n * 1000 + size).standard_t(2, size=n)
    values[::7] = values[0]  # ties
    want = scipy_median_filter(values, size=min(size, n), mode=mode)
    assert np.array_equal(robust.median_filter(values, size, mode), want)


def test_large_inputs_take_scipy_and_agree(monkeypatch):
    monkeypatch.setattr(robust, "_scipy_imported", lambda: False)
    values = np.random.default_rng(1).normal(size=30_000)
    big = robust.median_filter(values, 101)  # 3.03M > the numpy bound: scipy's filter
    monkeypatch.setattr(robust, "_NUMPY_UP_TO", 10**9)
    assert np.array_equal(robust.median_filter(values, 101), big)


def test_numpy_path_until_the_process_has_spent_what_importing_scipy_costs(monkeypatch):
    import scipy.ndimage

    calls = []
    monkeypatch.setattr(robust, "_scipy_imported", lambda: False)
    monkeypatch.setattr(robust, "_numpy_spent", 0)
    monkeypatch.setattr(scipy.ndimage, "median_filter", lambda *a, **k: calls.append(1) or scipy_median_filter(*a, **k))
    values = np.random.default_rng(2).normal(size=30_000)
    for _ in range(60):  # 1.23M points x window each: 41 of them reach the 50M budget
        robust.median_filter(values, 41)
    assert len(calls) == 60 - 40 and robust._numpy_spent <= robust._NUMPY_BUDGET


@pytest.mark.parametrize("n", [3, 5, 7])
def test_kendall_falling_p_is_exact_on_short_series(n):
    import itertools

    rng = np.random.default_rng(n)
    orders = np.array(list(itertools.permutations(range(n))), dtype=float)
    first, second = np.triu_indices(n, 1)
    scores = np.sign(orders[:, second] - orders[:, first]).sum(axis=1)
    for _ in range(5):
        v = rng.standard_normal(n)
        score = np.sign(v[second] - v[first]).sum()
        assert robust.kendall_falling_p(v) == pytest.approx(np.mean(scores <= score), abs=1e-12)


def test_kendall_falling_p_beats_the_normal_approximation_on_a_short_steady_fall():
    v = np.array([0.5388, 0.5061, 0.4919, 0.4781, 0.4616, 0.464, 0.4438, 0.4596])  # 2 of 28 pairs rise
    assert robust.kendall_z(v) > -3.0  # the normal approximation: 0.15 %
    assert robust.kendall_falling_p(v) == pytest.approx(35 / 40320)  # 1 + 7 + 27 of the 8! orderings
