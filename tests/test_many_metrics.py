"""A run of very many metrics costs a small multiple of its read: what is done for every metric after the read
(summaries, roles, the check that names are inert, the JSON text) is done in bulk, and gives what the one-metric
definitions give."""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from lrdiag.detect import incident
from lrdiag.ingest.discover import find_runs
from lrdiag.ingest.runs import read_run
from lrdiag.output import document, run_entry
from lrdiag.render import jsonout, markdown, text, view
from lrdiag.series import model, roles
from lrdiag.series.model import Run, Series

ROOT = Path(__file__).resolve().parents[1]
REAL_LOGS = ROOT.parent / "shared" / "real_logs"
ODD_VALUES = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-320, -5e300, 0.1, 3.0, -2.5]


def odd_series(count: int, seed: int) -> dict[str, Series]:
    """Series of 0 to 200 points, their values often NaN, infinite, 0.0 or -0.0, steps in any order."""
    rng = np.random.default_rng(seed)
    out = {}
    for index in range(count):
        size = int(rng.choice([0, 1, 1, 1, 2, 3, 5, 63, 64, 65, 200]))
        values = rng.choice(ODD_VALUES, size) if rng.random() < 0.7 else rng.normal(size=size)
        steps = rng.integers(-5, 10**12, size)
        out[f"m{index}"] = Series(f"m{index}", steps, values, role=rng.choice([None, "val_acc"]))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_summaries_made_together_are_each_series_summary_to_the_bit(seed):
    run = Run("r", "", [], series=odd_series(3000, seed))
    made = run.summaries()
    alone = {tag: series.summary() for tag, series in run.series.items()}
    assert list(made) == list(alone)
    # json.dumps tells 0.0 from -0.0 and 1 from 1.0, which == does not
    assert json.dumps(made, allow_nan=False) == json.dumps(alone, allow_nan=False)
    assert any(0 < len(series) <= model.FEW_POINTS for series in run.series.values())


def test_summaries_of_more_series_than_a_part_keep_their_order():
    series = {f"k{index}": Series.of_arrays(f"k{index}", np.array([index]), np.array([index / 7]))
              for index in range(model.PART + 5)}
    series["long"] = Series("long", np.arange(100), np.linspace(1, 2, 100))
    made = Run("r", "", [], series=series).summaries()
    assert list(made) == list(series)
    assert made[f"k{model.PART + 4}"]["last"] == (model.PART + 4) / 7 and made["long"]["max"] == 2.0


def test_run_entry_takes_the_logging_interval_of_the_metrics_findings_name_only(monkeypatch):
    run = read_run(find_runs([str(ROOT / "sample_logs" / "detectron2" / "detector_lr_spikes")])[0])
    from lrdiag.config import project_setup

    findings = project_setup(None)[1].run(run)
    assert findings
    asked = []
    real = incident.logging_interval
    monkeypatch.setattr("lrdiag.output.logging_interval", lambda steps: asked.append(1) or real(steps))
    entry = run_entry(run, findings)
    assert len(asked) == len({finding.metric for finding in findings}) < len(run.series)
    every = {tag: real(series.steps) for tag, series in run.series.items()}
    assert entry["incidents"] == incident.group(entry["findings"], every)


def tag_names() -> list[str]:
    """The tags of the sample logs and of ../shared/real_logs (where present), and names made of the words the
    roles look for, in any case, joined every way, with letters whose lower case is another length (İ)."""
    tags = set()
    for spec in find_runs([str(ROOT / "sample_logs")] + ([str(REAL_LOGS)] if REAL_LOGS.is_dir() else [])):
        tags |= set(read_run(spec).series)
    vocabulary = sorted(roles._VAL_WORDS | roles._QUALITY_WORDS | roles._PLAIN_LOSS_WORDS | roles._STEP_WORDS
                        | {"lr", "lr0", "lr-Adam", "learning_rate", "learning rate", "grad_norm", "gradients-norm",
                           "loss_scale", "metrics", "precisionB", "mAP50-95M", "AP-class7", "İ", "\u212a", "ß", "x"})
    rng = np.random.default_rng(0)
    for _ in range(20000):
        parts = rng.choice(vocabulary, int(rng.integers(1, 4)))
        name = str(rng.choice(["/", "_", "-", ".", "", " "])).join(parts)
        tags.add([name, name.upper(), name.title(), "X" + name][int(rng.integers(4))])
    return sorted(tags)


def test_roles_of_many_tags_are_infer_role_of_each():
    names = tag_names()
    series = {name: Series.of_arrays(name, np.array([1]), np.array([1.0])) for name in names}
    roles.assign_roles(series)
    assert [one.role for one in series.values()] == [roles.infer_role(name) for name in names]
    assert sum(one.role is not None for one in series.values()) > 1000


def test_role_overrides_win_over_the_first_test_of_a_tag():
    series = {tag: Series.of_arrays(tag, np.array([1]), np.array([1.0])) for tag in ("AP-class7", "loss", "val_acc")}
    roles.assign_roles(series, {"AP-class7": "val_acc", "loss": "none"})
    assert [one.role for one in series.values()] == ["val_acc", None, "val_acc"]


def inert_as_before(value, keep=()):
    """inert_doc as it was, a call a value: the reference the bulk check must agree with."""
    if isinstance(value, str):
        return view.inert(value)
    if isinstance(value, dict):
        return {(view.inert(key) if isinstance(key, str) else key): (item if key in keep else inert_as_before(item, keep))
                for key, item in value.items()}
    if isinstance(value, list):
        return [inert_as_before(item, keep) for item in value]
    return value


def hostile_doc(control: str, depth: int, in_key: bool) -> dict:
    """An analyze document whose one string at `depth` (0: a run's name) holds `control`, in a key or a value."""
    leaf = {"role": None, "points": 1, "last": 0.5, "min": "nan", "nonfinite": 1, 7: (1, "a\nb"), "note": "C:\\x1b"}
    path = [leaf]
    for level in range(depth):
        path.append({f"level{level}": path[-1], "list": [path[-1], "plain", 3.0, None, True]})
    bad = "name" + control + "::error ::x"
    nested = path[-1]
    if in_key:
        nested = {bad: nested, "fine": 1}
    else:
        nested = {**nested, "name": bad}
    run = {"run": "r", "files": ["f"], "metrics": {f"AP-class{k}": dict(leaf) for k in range(50)}, "deep": nested,
           "findings": [], "problems": [], "notes": ["C:\\logs\\run"]}
    return {"schema": 1, "runs": [run], "errors": []}


@pytest.mark.parametrize("control", ["\n", "\r", "\x1b", "\x00", "\x7f", "\x85", "\x9f", "\u2028", "\u2029"])
@pytest.mark.parametrize("depth", [0, 1, 4])
@pytest.mark.parametrize("in_key", [False, True])
def test_inert_doc_escapes_a_control_character_anywhere_as_before(control, depth, in_key):
    doc = hostile_doc(control, depth, in_key)
    made = view.inert_doc(doc)
    assert made == inert_as_before(doc) and made != doc
    assert control not in json.dumps(made, ensure_ascii=False).replace("\\n", "")


def test_inert_doc_of_a_clean_document_is_the_document_itself():
    doc = hostile_doc("", 3, False)
    doc["runs"][0]["deep"]["name"] = "no control here, a backslash \\ and a tab's name \\t"
    assert view.inert_doc(doc) is doc and inert_as_before(doc) == doc


def test_inert_doc_keeps_the_values_of_keep_keys_and_escapes_the_rest():
    doc = {"runs": [{"run": "a\nb", "candidates": [{"code": "x = 1\ny = 2\n", "name": "c\x1b"}]}]}
    assert view.inert_doc(doc, keep=("code",)) == inert_as_before(doc, keep=("code",))
    assert view.inert_doc(doc, keep=("code",))["runs"][0]["candidates"][0]["code"] == "x = 1\ny = 2\n"


JSON_DOCS = [
    {}, {"a": []}, {"a": {}}, {"a": [[]]}, [], [1], {"a": (1, 2)}, {"a": [(), {}, [{}]]},
    {"x": {1: "int key", 2.5: [1], True: None, None: {"y": -0.0}}},
    {"x": [{"a": 1}, {5: 2, "b": [3]}], "z": {"k": {"n": 1e300, "m": 5e-324, "big": 10**30}}},
    {"names": ["é", "\u2028", "\x00", "\\", '"', "日本", "\ud83d\ude00"], "é\n": {"\x1b": [np.float64(0.1), False]}},
    {"deep": [[[[{"a": [[1, 2], {"b": {"c": [None]}}]}]]]]},
]


@pytest.mark.parametrize("doc", JSON_DOCS)
def test_json_text_is_json_dumps_indented_to_the_byte(doc):
    expected = json.dumps(doc, indent=2, allow_nan=False)
    assert jsonout.render(doc) == expected
    written = []
    jsonout.write(doc, type("Out", (), {"write": staticmethod(written.append)}))
    assert "".join(written) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, [1, -math.inf], {"a": {"b": math.nan}}, {"a": object()}])
def test_json_text_refuses_what_json_dumps_refuses(bad):
    doc = {"runs": [{"metrics": {"m": {"last": 1.0}}, "bad": bad}]}
    with pytest.raises((ValueError, TypeError)) as expected:
        json.dumps(doc, indent=2, allow_nan=False)
    with pytest.raises(expected.type):
        jsonout.render(doc)


def wide_log(path: Path, keys: int) -> Path:
    """A detectron2 JSON-lines log: 300 training lines, then one evaluation line of `keys` per-class APs."""
    lines = [json.dumps({"iteration": step, "total_loss": 1 / (step + 1) + (3.0 if step == 200 else 0), "lr": 0.01})
             for step in range(300)]
    lines.append(json.dumps({"iteration": 300, **{f"AP-class{key}": key / 7 for key in range(keys)}}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_run_of_many_one_point_metrics_is_summed_up_in_bulk(tmp_path, monkeypatch):
    """Pins the fast paths: no Series.summary, infer_role or logging_interval a metric."""
    calls = {"summary": 0, "infer_role": 0, "logging_interval": 0}

    def counted(name, real):
        def call(*args):
            calls[name] += 1
            return real(*args)
        return call

    monkeypatch.setattr(Series, "summary", counted("summary", Series.summary))
    monkeypatch.setattr(roles, "infer_role", counted("infer_role", roles.infer_role))
    monkeypatch.setattr("lrdiag.output.logging_interval", counted("logging_interval", incident.logging_interval))
    from lrdiag.config import project_setup

    run = read_run(find_runs([str(wide_log(tmp_path / "metrics.json", 20000))])[0])
    entry = run_entry(run, project_setup(None)[1].run(run))
    assert len(entry["metrics"]) == 20002 and entry["findings"]
    # the long loss and LR alone, and AP-class0, whose 0.0 could be -0.0
    assert calls == {"summary": 3, "infer_role": 2, "logging_interval": 1}


def test_analyze_of_a_hundred_thousand_one_point_metrics_costs_little_more_than_its_read(tmp_path):
    """Before, a metric cost 14 us for its summary, 8 us for its logging interval, 5 us for its role, 5 us for
    each inert copy of the document, 10 us for its JSON: 4.3 s of CPU here for this test's 100,000 metrics; now
    1.4 s. The bound is 10x that: it catches a slide back into quadratic work, not a busy machine (the test
    above pins the bulk paths themselves)."""
    from lrdiag.config import project_setup
    from lrdiag.pipeline import Options, analyze

    path = wide_log(tmp_path / "metrics.json", 100_000)
    began = time.process_time()
    doc = analyze([str(path)], Options(engine=project_setup(None)[1]), progress=False)
    shown, written, summary = text.render(doc, width=100), jsonout.render(doc), markdown.render(doc)
    seconds = time.process_time() - began
    assert len(doc["runs"][0]["metrics"]) == 100_002 and "... and 99,962" not in shown
    assert "and 99962 more metrics" in shown and json.loads(written) == doc and "total_loss" in summary
    assert seconds < 14, f"{seconds:.1f} s of CPU for 100,000 one-point metrics"


def test_the_json_text_of_many_metrics_takes_twice_its_size_at_its_peak(tmp_path):
    """Its parts and their join; Python's indenting encoder, a piece of text a value, took 6x."""
    run = read_run(find_runs([str(wide_log(tmp_path / "metrics.json", 20000))])[0])
    doc = document([run_entry(run)])
    tracemalloc.start()
    began = tracemalloc.get_traced_memory()[0]
    written = jsonout.render(doc)
    made = tracemalloc.get_traced_memory()[1] - began
    tracemalloc.stop()
    assert made < 3 * len(written), f"{made / len(written):.1f}x the JSON text at the peak"


@pytest.mark.parametrize("data", [
    {"runs": [{"metrics": {f"AP-class{k}": {"min": k / 7, "role": None} for k in range(100)}}], "t": (1, 2)},
    {"a": [np.float64(0.1), np.float64("nan"), math.inf]}, {"a": np.int64(3), "b": np.bool_(True)},
    {"a": {"b": [np.float32(0.5), "</script><!--", -0.0]}}, {"a": np.str_("x&y")},
])
def test_the_report_data_read_as_it_is_is_what_plain_would_make_of_it(data):
    from lrdiag.render import html

    assert html._data_json(data) == html.script_json(html._plain(data))


def shown_as_before(run: dict) -> list[str]:
    tags = list(run["metrics"])
    if len(tags) <= text.MAX_METRICS:
        return tags
    flagged = {finding["metric"] for finding in run["findings"]}
    first = [tag for tag in tags if run["metrics"][tag]["role"] or tag in flagged][:text.MAX_METRICS]
    rest = [tag for tag in tags if tag not in set(first)][:text.MAX_METRICS - len(first)]
    chosen = set(first + rest)
    return [tag for tag in tags if tag in chosen]


@pytest.mark.parametrize("seed", range(20))
def test_the_text_table_shows_the_tags_it_showed_before(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.choice([3, 40, 41, 60, 500]))
    share = rng.choice([0.0, 0.02, 0.5, 1.0])
    metrics = {f"m{k}": {"role": "lr" if rng.random() < share else None} for k in range(count)}
    findings = [{"metric": f"m{k}"} for k in rng.integers(0, count, int(rng.integers(0, 50)))]
    run = {"metrics": metrics, "findings": findings}
    assert text._shown(run) == shown_as_before(run)


@pytest.mark.parametrize("seed", range(4))
def test_the_run_span_and_the_finite_check_in_bulk_are_their_one_series_definitions(seed):
    """cause._run_span and gate's finite check take every metric's points at once (a run of a million one-point
    metrics with a finding: 2.5 s, a reduction or two a series): the same span and the same failing tags,
    counts and first steps, in the run's order, as a series at a time."""
    from lrdiag.detect.cause import _run_span
    from lrdiag.gate.checks import _finite_check

    rng = np.random.default_rng(seed)
    shared = np.array([7, 9], np.int64)
    series = odd_series(300, seed)
    for index in range(200):  # one-point and shared steps, as a wide line's keys
        series[f"AP-class{index}"] = Series(f"AP-class{index}", shared, rng.choice([0.5, np.nan, np.inf], 2))
    series["empty"] = Series("empty", np.zeros(0, np.int64), np.zeros(0))
    run = Run("r", "test", [], series=dict(sorted(series.items(), key=lambda item: rng.random())))
    logged = [s.steps for s in run.series.values() if s.steps.size]
    assert _run_span(run) == (min(int(s.min()) for s in logged), max(int(s.max()) for s in logged))
    bad = []
    for tag, one in run.series.items():
        nonfinite = ~np.isfinite(one.values)
        if nonfinite.any():
            bad.append(f"{tag}: {int(nonfinite.sum())} NaN/Inf from step {int(one.steps[np.argmax(nonfinite)])}")
    check = _finite_check(run)
    assert bad and check["status"] == "failed" and check["message"] == "non-finite values: " + "; ".join(bad)
    run.series = {tag: one for tag, one in run.series.items() if np.isfinite(one.values).all()}
    assert _finite_check(run)["status"] == "passed"
