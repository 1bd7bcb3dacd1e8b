"""Logs of many distinct keys: the per-key work of the JSON-lines reader agrees with its one-key definitions,
and the trusted Series it makes are the checked ones."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import pickle

import numpy as np
import pytest

from lrdiag.ingest import jsonlog, textlog
from lrdiag.ingest.textlog import BOOKKEEPING, BOOKKEEPING_SUFFIXES, STEP_COLUMNS, is_bookkeeping
from lrdiag.series.model import Series

NAMES = [*STEP_COLUMNS, *BOOKKEEPING, *(name.upper() for name in BOOKKEEPING), "Step", "ITERATION", "eval_runtime",
         "train_samples_per_second", "x_steps_per_second", "_runtime", "loss", "val/loss", "time_loss", "timex",
         "runtime", "lr", "", "ß", "İ", "mode ", " time"]


def test_the_bookkeeping_test_of_many_names_is_is_bookkeeping_of_each():
    assert textlog.bookkeeping_mask(NAMES).tolist() == [is_bookkeeping(name) for name in NAMES]


@pytest.mark.parametrize("odd_one", [None, "a\nb", "ß_runtime", "x_RUNTİME"])
def test_thousands_of_names_narrowed_at_once_are_is_bookkeeping_of_each(odd_one):
    """Many ASCII names are narrowed in numpy by their first and last four letters; a newline in a
    name or a name beyond ASCII sends them all through the test a name."""
    rng = np.random.default_rng(1)
    ascii_names = [name for name in NAMES if name.isascii()]
    names = [f"AP-class{index}" for index in range(3000)] + [name.swapcase() for name in NAMES if name.isascii()]
    for place in rng.choice(len(names), 400, replace=False).tolist():  # at the start and end of the list too
        names[place] = rng.choice(ascii_names) + rng.choice(["", "", "x", "_runtime", "_Samples_Per_Second"])
    names[:2], names[-2:] = ["time", "a"], ["eval_runtime", "tim"]
    if odd_one is not None:
        names.insert(1500, odd_one)
    assert textlog.bookkeeping_mask(names).tolist() == [is_bookkeeping(name) for name in names]
    assert textlog.bookkeeping_mask(names).sum() > 100


@pytest.mark.parametrize("shared", [False, True])
def test_keys_cut_into_series_are_the_slices_of_their_points(shared):
    rng = np.random.default_rng(0)
    counts = rng.choice([0, 1, 1, 2, 3, 16, 17, 40], 500)
    bounds = np.concatenate(([0], np.cumsum(counts)))
    points = np.arange(bounds[-1]) // 200  # runs of equal points: rows repeat the row before, shared where most do
    keys = np.flatnonzero(counts > 0)
    pieces = jsonlog._cut(points, bounds, keys, shared=shared)
    assert len(pieces) == len(keys)
    for key, piece in zip(keys.tolist(), pieces):
        assert piece.tolist() == points[bounds[key]:bounds[key + 1]].tolist()
    assert (len({id(piece) for piece in pieces}) < len(pieces)) == shared
    assert all(piece.flags.writeable for piece in pieces) != shared


def test_the_steps_a_wide_lines_keys_share_are_one_read_only_array(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("".join(json.dumps({"iteration": step, "loss": step / 3}) + "\n" for step in range(5))
                    + json.dumps({"iteration": 5, **{f"AP-class{key}": key / 7 for key in range(100)}}) + "\n")
    series = jsonlog.read(path).series
    wide = [series[f"AP-class{key}"] for key in range(100)]
    assert all(one.steps.tolist() == [5] and one.steps is wide[0].steps for one in wide)
    assert not wide[0].steps.flags.writeable and series["loss"].steps.flags.writeable
    with pytest.raises(ValueError):  # a change to one series' steps would change its peers'
        wide[0].steps[0] = 6


@pytest.mark.parametrize("exact", [False, True])
def test_keys_of_many_points_on_the_same_lines_share_one_read_only_array_of_steps(tmp_path, exact):
    path = tmp_path / "metrics.json"
    records = [{"iteration": step, "loss": step / 3, "lr": 0.1, "acc": 0.5, **({"grad": 1.0} if step % 2 else {})}
               for step in range(5000)]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    series = jsonlog.read(path, exact=exact).series
    assert series["loss"].steps is series["lr"].steps is series["acc"].steps
    assert series["loss"].steps.tolist() == list(range(5000)) and not series["loss"].steps.flags.writeable
    assert series["grad"].steps.tolist() == list(range(1, 5000, 2)) and series["grad"].steps.flags.writeable
    assert [series[tag].values.tolist() for tag in ("loss", "lr")] == [[step / 3 for step in range(5000)], [0.1] * 5000]


def test_names_are_numbered_as_they_first_show_whatever_mix_of_new_known_and_repeated(monkeypatch):
    monkeypatch.setattr(jsonlog, "_MANY_KEYS", 5)
    chunks, numbered = jsonlog._Chunks(), {}
    batches = [["a", "b"], ["b", "c", "c", "a", "d"], [f"k{index}" for index in range(8)], ["e", "k1", "e"],
               [f"w{index}" for index in range(10)], ["a", *(f"x{index}" for index in range(9))], ["w3", "w3", "f"],
               [f"y{index}" for index in range(6)], ["k2", "y0", "g", "x1"]]
    for batch in batches:
        distinct = len(set(batch)) == len(batch)
        ids = chunks.key_ids(batch, distinct=distinct)
        for name in batch:
            numbered.setdefault(name, len(numbered))
        assert ids.tolist() == [numbered[name] for name in batch]
        assert chunks.names == list(numbered)


def test_keys_of_one_count_are_cut_into_their_slices_in_key_order():
    points = np.arange(30.0)
    bounds = np.arange(0, 31, 3)  # ten keys of three points each: the one-count path
    keys = np.array([0, 2, 3, 9])
    assert [piece.tolist() for piece in jsonlog._cut(points, bounds, keys)] == [
        points[bounds[key]:bounds[key + 1]].tolist() for key in keys.tolist()]


def test_a_series_of_arrays_is_the_series_the_checked_constructor_makes():
    steps, values = np.array([0, 10, 20], np.int64), np.array([1.5, np.nan, -0.0])
    checked, trusted = Series("loss", [0, 10, 20], [1.5, np.nan, -0.0]), Series.of_arrays("loss", steps, values)
    for name in ("tag", "wall_times", "role"):
        assert getattr(trusted, name) == getattr(checked, name)
    for name in ("steps", "values"):
        assert getattr(trusted, name).dtype == getattr(checked, name).dtype
        assert getattr(trusted, name).tobytes() == getattr(checked, name).tobytes()
    assert trusted.steps is steps and trusted.values is values  # taken as they are: no copy
    assert trusted.summary() == checked.summary()


def _round_trip(series: Series) -> Series:
    return series


def test_a_series_pickles_and_crosses_to_another_process_and_back():
    series = Series.of_arrays("val/loss", np.array([1, 2], np.int64), np.array([0.25, np.inf]))
    series.role = "val_loss"
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        back = pool.submit(_round_trip, series).result()
    for copy in (pickle.loads(pickle.dumps(series)), back):
        assert (copy.tag, copy.role, copy.wall_times) == ("val/loss", "val_loss", None)
        assert copy.steps.tolist() == [1, 2] and copy.values.tolist() == [0.25, np.inf]
    with pytest.raises(AttributeError):  # slotted: no attribute outside the fields
        series.colour = "red"


def _read_numbers(path, exact=False) -> dict:
    result = jsonlog.read(path, exact=exact)
    assert not result.problems
    return {tag: (series.steps.tolist(), series.values.tobytes()) for tag, series in result.series.items()}


@pytest.mark.parametrize("exact", [False, True])
def test_a_line_of_numbers_alone_reads_as_the_same_line_with_text_in_it(tmp_path, exact):
    """Records of numbers alone become float64 at once; a record with text in it goes through the
    cells' conversion: a number reads the same either way (an int past 2**53 or 2**64 rounded as
    float() rounds it, -0.0 keeps its sign, 0 is 0.0)."""
    numbers = {"big": 2**64 + 2**11 + 1, "odd": 2**53 + 1, "negative": -(2**70) - 3, "zero": 0,
               "negative_zero": -0.0, "small": 5e-324, "huge": 1.5e308, **{f"AP-class{i}": i / 7 for i in range(3000)}}
    lines = [{"iteration": step, "loss": 1 / (step + 1)} for step in range(1500)] + [{"iteration": 1500, **numbers}]
    plain, texted = tmp_path / "plain" / "metrics.json", tmp_path / "texted" / "metrics.json"
    for path, extra in ((plain, {}), (texted, {"note": "x"})):
        path.parent.mkdir()
        path.write_text("".join(json.dumps({**line, **extra}) + "\n" for line in lines))
    read = _read_numbers(plain, exact)
    assert read == {tag: value for tag, value in _read_numbers(texted, exact).items() if tag != "note"}
    assert read["big"][1] == np.array([float(2**64 + 2**11 + 1)]).tobytes()
    assert np.signbit(np.frombuffer(read["negative_zero"][1])[0])


def _write_many_key_lines(path, seed: int) -> None:
    """Ordinary lines with lines of 60-200 keys among them: new, repeated from an earlier wide
    line, or both; some with text, a null or a boolean among the numbers."""
    rng = np.random.default_rng(seed)
    lines = []
    for step in range(400):
        line = {"iteration": step, "total_loss": 1 / (step + 1)}
        if rng.random() < 0.08:
            first = int(rng.integers(0, 300))
            line.update({f"AP-class{key}": key / 7 for key in range(first, first + int(rng.integers(60, 200)))})
            if rng.random() < 0.3:
                line[rng.choice(["mode", "note", "flag"])] = rng.choice(["val", None, True])
        elif rng.random() < 0.05:
            line[f"AP-class{int(rng.integers(0, 400))}"] = 0.5
        lines.append(json.dumps(line))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("how", ["exact", "line by line", "blocks", "blocks, 4 kB chunks"])
def test_a_line_of_many_new_keys_numbered_at_once_reads_as_when_each_is_looked_up(tmp_path, monkeypatch, seed, how):
    path = tmp_path / "metrics.json"
    _write_many_key_lines(path, seed)
    exact = how == "exact"
    if how.startswith("blocks"):  # the bulk paths (blocks, pandas' parser) beside the lines parsed alone
        monkeypatch.setattr(jsonlog, "_SMALL", 0)
    if how.endswith("chunks"):  # keys numbered at once in one chunk, met again in later ones
        monkeypatch.setattr(textlog, "CHUNK_BYTES", 4096)

    def read(many_keys: int) -> list:
        monkeypatch.setattr(jsonlog, "_MANY_KEYS", many_keys)
        result = jsonlog.read(path, exact=exact)
        return [(tag, series.steps.tolist(), series.values.tobytes()) for tag, series in result.series.items()] + [
            [problem.to_dict() for problem in result.problems], result.notes]
    assert read(50) == read(10**9)


@pytest.mark.parametrize("places", [(0,), (1, 57, 11_999), (5_000, 12_000)])
def test_a_line_of_many_numbers_finding_its_few_listed_keys_in_its_own_dict_reads_as_json_loads_reads_it(
        tmp_path, places):
    """The few names listed before a line of 10,000+ numbers are looked for in the line's own dict, not each
    of its keys in the list of names: wherever they stand in it, the line reads as line by line."""
    lines = [json.dumps({"iteration": step, "total_loss": 1 / (step + 1), "lr": 0.1}) for step in range(30_000)]
    keys = [f"AP-class{index}" for index in range(12_000)]
    for place, name in zip(places, ["iteration", "lr", "total_loss"]):
        keys.insert(place, name)
    wide = {key: index / 7 for index, key in enumerate(keys)}
    wide["iteration"] = 30_000  # where it stands in the line, or last
    path = tmp_path / "metrics.json"
    path.write_text("\n".join([*lines, json.dumps(wide), json.dumps({"iteration": 30_001, "total_loss": 0.5})]) + "\n")
    calls = []
    looked_up = jsonlog._Chunks.key_ids

    def key_ids(chunks, names, distinct=False, known=None):
        calls.append(known)
        return looked_up(chunks, names, distinct, known)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonlog._Chunks, "key_ids", key_ids)
        result = jsonlog.read(path)
    assert any(known is not None and len(known) == len(places) for known in calls)  # the path under test was taken
    exact = jsonlog.read(path, exact=True)
    assert list(result.series) == list(exact.series) and not result.problems and not exact.problems
    for name, series in result.series.items():
        assert series.steps.tolist() == exact.series[name].steps.tolist()
        assert series.values.tobytes() == exact.series[name].values.tobytes()
