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
