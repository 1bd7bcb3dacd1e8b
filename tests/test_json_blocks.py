"""JSON lines read as blocks of one layout (jsonblocks) give exactly what json.loads line by line gives."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lrdiag.ingest import jsonblocks, jsonlog, textlog
from lrdiag.ingest.textlog import line_bounds

ROOT = Path(__file__).parents[1]
ARROW_NUMBERS = jsonblocks._arrow_numbers
REAL_LOGS = Path(__file__).parents[2] / "shared" / "real_logs"
SAMPLE_JSON = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "sample_logs").rglob("*.json")
                     if path.name != "manifest.json")
REAL_JSON = sorted(str(path.relative_to(REAL_LOGS)) for path in REAL_LOGS.rglob("*.json")
                   if "wandb" not in path.parts) if REAL_LOGS.is_dir() else []


@pytest.fixture(autouse=True, params=["arrow", "pandas"])
def blocks_for_small_files_too(monkeypatch, request):
    """The blocks (and pandas) read every chunk here, however small: the tests' files are small;
    their numbers by Arrow, and by pandas' C parser as where pyarrow is not installed."""
    monkeypatch.setattr(jsonlog, "_SMALL", 0)
    if request.param == "pandas":
        monkeypatch.setattr(jsonblocks, "_arrow_numbers", lambda *args: None)


def assert_same_reading(path: Path, data: bytes | None = None) -> jsonlog.ReadResult:
    """read() and read(exact=True) agree: tags in order, steps, value bits, problems, notes."""
    fast, exact = jsonlog.read(path, data), jsonlog.read(path, data, exact=True)
    assert fast.source == exact.source
    assert list(fast.series) == list(exact.series)
    for tag, series in fast.series.items():
        assert series.steps.tolist() == exact.series[tag].steps.tolist(), tag
        assert series.values.view(np.int64).tolist() == exact.series[tag].values.view(np.int64).tolist(), tag
    assert fast.problems == exact.problems
    assert fast.notes == exact.notes
    return fast


def block_lines(data: bytes) -> int:
    """How many lines of `data` the block reader takes."""
    starts, ends = line_bounds(data)
    blocks, _ = jsonblocks.parse_blocks(data, starts, ends, np.arange(len(starts)))
    return sum(len(block.lines) for block in blocks)


@pytest.mark.parametrize("relative", SAMPLE_JSON)
def test_sample_json_logs_read_the_same_as_line_by_line(relative):
    assert_same_reading(ROOT / relative)


@pytest.mark.parametrize("relative", REAL_JSON or ["absent"])
def test_real_json_logs_read_the_same_as_line_by_line(relative):
    if not REAL_JSON:
        pytest.skip(f"{REAL_LOGS} is absent")
    assert_same_reading(REAL_LOGS / relative)


def test_real_json_lines_are_mostly_read_as_blocks():
    if not REAL_LOGS.is_dir():
        pytest.skip(f"{REAL_LOGS} is absent")
    path = REAL_LOGS / "detectron2_mmdet/NYU-Semi-Supervise-Object-Detection/metrics.json"
    data = path.read_bytes()
    assert block_lines(data) >= 0.99 * data.count(b"\n")


def test_sample_detectron2_lines_are_all_read_as_blocks():
    data = (ROOT / "sample_logs/detectron2/detector_lr_spikes/metrics.json").read_bytes()
    assert block_lines(data) == data.count(b"\n")


# ---- one odd line among lines of one layout --------------------------------------------------

def layout_lines(value: str, count: int = 40, at: int = 17) -> bytes:
    """detectron2-like lines; line `at` (0-based) has `value` as its loss."""
    lines = []
    for index in range(count):
        loss = value if index == at else repr(1 / (index + 3))
        lines.append(f'{{"data_time": 0.0042, "iteration": {index}, "loss": {loss}, "lr": 0.02, "mode": "train"}}')
    return ("\n".join(lines) + "\n").encode()


# every spelling json.loads refuses or reads otherwise than a plain float, and a few it reads as usual
TOKENS = ["1", "-1", "0", "-0", "-0.0", "0.0", "01", "-01", "00", "+1", "1.", ".5", "-.5", "1.e5", "1e5", "1E5",
          "1e+5", "1E-05", "1e", "1e+", "-", ".", "e5", "1.2.3", "1e5e5", "1e5.3", "--1", "1-2", "1+2", "inf",
          "-inf", "Infinity", "-Infinity", "NaN", "nan", "true", "false", "null", '"1"', '"x"', "1e400", "-1e400",
          "1e-400", "9007199254740993", "12345678901234567890123", "-9223372036854775809", "1_000", "0x10",
          " 1", "1 ", "1 2", "\t1", "1\t", "[1]", "{}", "1e05", "0e0", "-0e-0", "1.5E+300", "2.2250738585072014e-308",
          "4.9e-324", "1.7976931348623157e308", "0.1000000000000000055511151231257827", "١", "1\x00",
          # decimal-to-binary cases that a parser rounding once too often gets wrong
          "2.4703282292062327e-324", "2.4703282292062328e-324", "1.7976931348623158e308", "1.7976931348623159e308",
          "9007199254740992", "9007199254740991.5", "0.30000000000000004", "8.988465674311579e307",
          "2.2250738585072011e-308", "1.00000000000000011102230246251565404236316680908203125",
          "7.2057594037927933e16", "4.5035996273704985e15"]


@pytest.mark.parametrize("token", TOKENS)
def test_one_odd_number_reads_as_json_loads_reads_it(tmp_path, token):
    data = layout_lines(token)
    path = tmp_path / "metrics.json"
    path.write_bytes(data)
    result = assert_same_reading(path)
    assert len(result.series["loss"]) in (39, 40)


def test_regular_lines_are_read_as_blocks_and_odd_ones_are_not():
    assert block_lines(layout_lines("0.5")) == 40
    for token in ("01", "+1", "1.", ".5", "1.e5", "-0", "NaN", "true", "1e400", "9007199254740993", "1 2", "1_000",
                  "0x10", "١"):  # the last three: a byte no number holds, which the CSV translation deletes
        assert block_lines(layout_lines(token)) == 39, token


@pytest.mark.parametrize("token", ["0", "7", "-7", "-0.5", "10", "01", "-01", "00", "+1", ".5", "-.5", "1.", "-", "-0",
                                   "1.e5", "1e5", "-1E-5", "1e", "x"])
@pytest.mark.parametrize("slot", [0, 1, 2])
def test_an_odd_number_in_any_slot_of_a_compact_layout_reads_as_json_loads_reads_it(tmp_path, token, slot):
    """Separators of 13, 8, 6 and 1 bytes (no blanks): a number's first and last bytes lie in the
    words read for the separators around it, at every offset."""
    lines = []
    for index in range(40):
        values = [str(index), repr(1 / (index + 3)), "0.5"]
        values[slot] = token if index == 17 else values[slot]
        lines.append('{"iteration":%s,"loss":%s,"lr":%s}' % tuple(values))
    data = ("\n".join(lines) + "\n").encode()
    clean = token in ("0", "7", "-7", "-0.5", "10", "1e5", "-1E-5")
    assert block_lines(data) == (40 if clean else 39)
    path = tmp_path / "metrics.json"
    path.write_bytes(data)
    assert_same_reading(path)


def test_a_layout_of_one_line_in_many_is_tried_on_a_sample_of_them_only(monkeypatch):
    """A new key each line: every line has one comma, but each layout is one line's; its check runs
    on 64 of the lines, not all 2,000."""
    data = "".join(json.dumps({"iteration": step, f"metric_{step}": step / 2}) + "\n" for step in range(2000)).encode()
    checked, match = [], jsonblocks._match
    monkeypatch.setattr(jsonblocks, "_match", lambda data, starts, ends, lines, *rest: (
        checked.append(len(lines)), match(data, starts, ends, lines, *rest))[1])
    assert block_lines(data) == 0
    assert checked and max(checked) <= 64


def test_clean_numbers_are_read_by_arrow_and_pandas_parser_is_not_called(monkeypatch):
    pytest.importorskip("pyarrow")
    monkeypatch.setattr(jsonblocks, "_arrow_numbers", ARROW_NUMBERS)
    monkeypatch.setattr(jsonblocks, "_csv_numbers", lambda *args: pytest.fail("pandas' parser called"))
    assert block_lines(layout_lines("0.5")) == 40
    assert block_lines(layout_lines("1.5e-07")) == 40


def test_a_key_of_block_lines_and_of_odd_lines_among_them_reads_in_line_order(tmp_path, monkeypatch):
    """Blocks put a chunk's points key by key and the odd lines' come after them: the series are
    put back in line order, chunk after chunk, as line by line."""
    monkeypatch.setattr(textlog, "CHUNK_BYTES", 1 << 14)  # several chunks
    records = [{"iteration": step, "loss": step / 7, "lr": 0.1} for step in range(2000)]
    for step in range(3, 2000, 97):
        records[step]["extra"] = {"nested": [step]}  # read line by line
    path = tmp_path / "metrics.json"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    result = assert_same_reading(path)
    assert result.series["loss"].steps.tolist() == list(range(2000))


# lines whose commas fall where the layout's do, but some other byte differs
LOOKALIKES = [
    '{"data_time": 0.0042, "iteration": 17, "lose": 0.5, "lr": 0.02, "mode": "train"}',  # a key renamed
    '{"data_time": 0.0042, "iteration": 17, "lr": 0.5, "loss": 0.02, "mode": "train"}',  # keys swapped
    '{"data_time": 0.0042, "iteration": 17, "loss":0.5, "lr": 0.02, "mode": "train"}',  # spacing
    '{"data_time": 0.0042, "iteration": 17, "loss": 0.5, "lr": 0.02, "mode": "tra,n"}',  # a comma moved into text
    '{"data_time": 0.0042, "iteration": 17, "loss": 0.5, "lr": 0.02, "mode": "valid"}',  # other text
    '{"data_time": 0.0042, "iteration": 17, "loss": 0.5, "lr": 0.02, "mode": "train" }',  # a space before }
    '{"data_time": 0.0042, "iteration": 17, "loss": 0.5, "lr": 0.02, "mode": 1}',  # a number for text
    '{"data_time": 0.0042, "iteration": 17, "loss": 0.5, "lr": 0.02, "mode": "train", "x": 1}',  # one more key
    '{"data_time": 0.0042, "iteration": 17, "loss": 0.5, "lr": 0.02}',  # one key fewer
]


@pytest.mark.parametrize("line", LOOKALIKES)
def test_a_line_like_the_layout_but_for_one_byte_is_read_as_itself(tmp_path, line):
    lines = layout_lines("0.25").decode().splitlines()
    lines[17] = line
    data = ("\n".join(lines) + "\n").encode()
    assert block_lines(data) == 39
    path = tmp_path / "metrics.json"
    path.write_bytes(data)
    result = assert_same_reading(path)
    assert (17 in result.series["loss"].steps) == ('"loss":' in line)


def test_text_constants_of_a_layout_are_text_points(tmp_path):
    lines = [json.dumps({"mode": "train", "epoch": 1, "iter": i, "lr": 0.1, "loss": 1 / i, "flag": True, "x": None})
             for i in range(1, 30)]
    path = tmp_path / "run.log.json"
    path.write_text("\n".join(lines) + "\n")
    assert block_lines(path.read_bytes()) == 29
    result = assert_same_reading(path)
    assert result.source == "mmdet_json"
    assert result.series["loss"].values.tolist() == [1 / i for i in range(1, 30)]


# ---- generated files: regular lines mixed with irregular ones --------------------------------

KEYS = st.sampled_from(["iteration", "loss", "lr", "total_loss", "a,b", "k:v", "ünï", "loss_cls", "x y"])
NUMBERS = st.one_of(
    st.integers(-10 ** 20, 10 ** 20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda number: f"{number:.3e}"),
    st.sampled_from(TOKENS),
)


@st.composite
def files(draw) -> bytes:
    keys = draw(st.lists(KEYS, min_size=1, max_size=5, unique=True))
    keys = ["iteration"] + [key for key in keys if key != "iteration"]
    separator = draw(st.sampled_from([", ", ",", " , "]))
    colon = draw(st.sampled_from([": ", ":", " : "]))
    rows = [[str(index)] + [repr((index + 1) * 0.37 + slot) for slot in range(1, len(keys))]
            for index in range(draw(st.integers(0, 60)))]
    for _ in range(draw(st.integers(0, 4)) if rows else 0):  # a value spelled otherwise
        rows[draw(st.integers(0, len(rows) - 1))][draw(st.integers(0, len(keys) - 1))] = draw(NUMBERS)
    lines = ["{" + separator.join(f"{json.dumps(key)}{colon}{value}" for key, value in zip(keys, row)) + "}"
             for row in rows]
    twin = keys[:]  # the same keys renamed (same length) or in another order: commas where the layout has them
    twin[draw(st.integers(0, len(keys) - 1))] = draw(st.sampled_from(["iteratioN", "lost", "lR", "a;b", "k.v"]))
    twin = draw(st.permutations(twin))
    odd = st.one_of(
        st.integers(0, 99).map(lambda index: "{" + separator.join(
            f"{json.dumps(key)}{colon}{index * 0.5}" for key in twin) + "}"),
        st.just(None),  # a line cut short
        st.text(max_size=30),  # anything at all
        st.dictionaries(KEYS, st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.booleans(), st.none(),
                                        st.lists(st.integers(), max_size=2)), max_size=4).map(json.dumps),
    )
    for _ in range(draw(st.integers(0, 4)) if lines else 0):
        at = draw(st.integers(0, len(lines) - 1))
        change = draw(odd)
        lines[at] = lines[at][:draw(st.integers(0, len(lines[at])))] if change is None else change.replace("\n", " ")
    return ("\n".join(lines) + "\n").encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=files())
def test_generated_json_lines_read_the_same_as_line_by_line(tmp_path, data):
    path = tmp_path / "metrics.json"
    path.write_bytes(data)
    if jsonlog.claims(path, data[:65536]):
        assert_same_reading(path)


# ---- small logs: read without pandas, to what the pandas paths give ---------------------------

@pytest.mark.parametrize("relative", SAMPLE_JSON + [f"real/{relative}" for relative in REAL_JSON])
def test_small_json_logs_read_without_pandas_as_with_it(monkeypatch, relative):
    path = REAL_LOGS / relative.removeprefix("real/") if relative.startswith("real/") else ROOT / relative
    monkeypatch.setattr(jsonlog, "_SMALL", 1 << 30)  # every chunk line by line, values converted in Python
    without = jsonlog.read(path)
    monkeypatch.setattr(jsonlog, "_SMALL", 0)
    monkeypatch.setattr(jsonlog, "_PYTHON_CELLS", -1)  # blocks, pandas' parser, pandas' conversions
    with_pandas = jsonlog.read(path)
    assert list(without.series) == list(with_pandas.series)
    for tag, series in without.series.items():
        assert series.steps.tolist() == with_pandas.series[tag].steps.tolist()
        assert series.values.view(np.int64).tolist() == with_pandas.series[tag].values.view(np.int64).tolist()
    assert without.problems == with_pandas.problems


def test_reading_small_json_logs_imports_no_pandas():
    code = ("import pathlib, sys\n"
            "from lrdiag.ingest import jsonlog\n"
            f"for path in {[str(ROOT / relative) for relative in SAMPLE_JSON]!r}:\n"
            "    assert jsonlog.read(pathlib.Path(path)).series\n"
            "print('pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


CELLS = st.lists(st.one_of(st.integers(-10 ** 30, 10 ** 30), st.floats(), st.text(max_size=6), st.booleans(),
                           st.none(), st.sampled_from(["null", "NaN", " nan ", "-Infinity", "1e5", " 7", "0x1", "-0"])),
                 max_size=30)


@settings(max_examples=300, deadline=None)
@given(cells=CELLS)
@example(cells=[0, -0.0])  # pandas reads an all-whole batch as integers: -0.0 lost its sign
@example(cells=["-0", 1])
@example(cells=[10 ** 400, -10 ** 310, 1.5, "2"])  # pandas gives up on ints past a float's range: Python reads them
def test_json_values_convert_in_python_as_in_pandas(cells):
    raw = np.empty(len(cells), dtype=object)
    raw[:] = cells
    in_python = jsonlog._cells_to_floats(raw)
    saved = jsonlog._PYTHON_CELLS
    try:  # pandas' to_numeric gives up on an int past a float's range: then Python reads them all, as +-inf
        jsonlog._PYTHON_CELLS = -1
        in_pandas = jsonlog._cells_to_floats(raw)
    finally:
        jsonlog._PYTHON_CELLS = saved
    assert in_python[0].tolist() == in_pandas[0].tolist()
    assert in_python[1].view(np.int64).tolist() == in_pandas[1].view(np.int64).tolist()
    assert in_python[2].tolist() == in_pandas[2].tolist()
    for cell, number in zip(cells, in_python[1].tolist()):  # each zero keeps its own sign
        if number == 0 and isinstance(cell, float):
            assert math.copysign(1, number) == math.copysign(1, cell)


ODD_KEYS = ["1", "2.5", "-3", "true", "False", "NaN", "null", "inf", " lead", "trail ", "x,y", "a:b", "é/loss", "",
            "0x10", "1e5"]


@pytest.mark.parametrize("rows", [1500, 3000])
def test_keys_that_look_like_numbers_or_words_read_by_pandas_parser_as_by_json_loads(tmp_path, rows):
    """Lines of varied layouts (no block takes them, so pandas' parser reads them) whose keys are
    numbers, booleans, NaN, blanks or separators as text: each key keeps its spelling, or its line
    goes to json.loads; either way as json.loads reads it."""
    rng = np.random.default_rng(rows)
    lines = []
    for step in range(rows):
        keys = rng.choice(ODD_KEYS + [f"metric_{step}", "loss"], int(rng.integers(1, 4)), replace=False).tolist()
        lines.append(json.dumps({"iteration": step, **{key: float(rng.random()) for key in keys}}))
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(lines) + "\n")
    result = assert_same_reading(path)
    assert {"1", "true", "NaN", " lead", "x,y", "a:b", "é/loss"} <= set(result.series)
