"""Logs of many distinct keys: the per-key work of the JSON-lines reader agrees with its one-key definitions."""

from __future__ import annotations

import numpy as np

from lrdiag.ingest import jsonlog
from lrdiag.ingest.textlog import BOOKKEEPING, BOOKKEEPING_SUFFIXES, STEP_COLUMNS, is_bookkeeping

NAMES = [*STEP_COLUMNS, *BOOKKEEPING, *(name.upper() for name in BOOKKEEPING), "Step", "ITERATION", "eval_runtime",
         "train_samples_per_second", "x_steps_per_second", "_runtime", "loss", "val/loss", "time_loss", "timex",
         "runtime", "lr", "", "ß", "İ", "mode ", " time"]


def test_the_bookkeeping_test_of_many_names_is_is_bookkeeping_of_each():
    assert jsonlog._bookkeeping(NAMES).tolist() == [is_bookkeeping(name) for name in NAMES]


def test_keys_cut_into_series_are_the_slices_of_their_points():
    rng = np.random.default_rng(0)
    counts = rng.choice([0, 1, 1, 2, 3, 16, 17, 40], 500)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    points = rng.random(bounds[-1])
    keys = np.flatnonzero(counts > 0)
    pieces = jsonlog._cut(points, bounds, keys)
    assert len(pieces) == len(keys)
    for key, piece in zip(keys.tolist(), pieces):
        assert piece.tolist() == points[bounds[key]:bounds[key + 1]].tolist()
