"""The Python API: `lrdiag.read` gives tbparse's points as one tidy table, `analyze` says what the command
line says, the inline report escapes log names and really draws, and `import lrdiag` stays light."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lrdiag
from lrdiag.render import jsonout

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_logs"
REAL_TFEVENTS = ROOT.parent / "shared" / "real_logs" / "tfevents"
XSS = "<img src=x onerror=alert(1)>"
CHROMIUM = Path("/usr/bin/chromium")


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrdiag", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def tbparse_table(folder: Path) -> pd.DataFrame:
    """tbparse's scalars plus its numeric one-element tensors (TF2 scalars): dir_name, tag, step, value, wall_time."""
    from tbparse import SummaryReader

    reader = SummaryReader(str(folder), pivot=False, extra_columns={"wall_time", "dir_name"})
    tensors = reader.tensors
    scalar = tensors["value"].map(lambda value: np.size(value) == 1 and np.asarray(value).dtype.kind in "fiub")
    tensors = tensors[scalar].copy()
    tensors["value"] = [float(np.asarray(value).reshape(-1)[0]) for value in tensors["value"]]
    table = pd.concat([reader.scalars, tensors])[["dir_name", "tag", "step", "value", "wall_time"]]
    return table.astype({"dir_name": str, "tag": str, "step": np.int64, "value": np.float64})


def by_point(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return table[columns].sort_values(columns).reset_index(drop=True)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """A run folder named like markup, whose loss spikes once at step 250."""
    root = tmp_path_factory.mktemp("hostile")
    (root / XSS).mkdir()
    steps = np.arange(400)
    loss = 2 * np.exp(-steps / 80) + 0.3 + 0.01 * np.random.default_rng(0).standard_normal(400)
    loss[250] += 8
    lines = ["step,train_loss,lr"] + [f"{step},{value!r},0.1" for step, value in zip(steps, loss.tolist())]
    (root / XSS / "metrics.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def samples() -> lrdiag.Analysis:
    return lrdiag.analyze(str(SAMPLES), jobs=1)


# ---- read ----

def test_read_gives_every_point_of_the_real_tensorboard_logs_exactly_as_tbparse_with_wall_times():
    if not REAL_TFEVENTS.is_dir():
        pytest.skip(f"{REAL_TFEVENTS} is absent")
    got = lrdiag.read(REAL_TFEVENTS)
    expected = tbparse_table(REAL_TFEVENTS).rename(columns={"dir_name": "run", "tag": "metric"})
    assert got.attrs["problems"] == []
    assert sorted(got["run"].cat.categories) == sorted(p.name for p in REAL_TFEVENTS.iterdir())
    got = got.astype({"run": str, "metric": str})
    assert got.groupby(["run", "metric"]).size().to_dict() == expected.groupby(["run", "metric"]).size().to_dict()
    columns = ["run", "metric", "step", "wall_time", "value"]
    pd.testing.assert_frame_equal(by_point(got, columns), by_point(expected, columns), check_exact=True)


def test_read_and_analyze_agree_on_every_run_metric_role_and_problem_of_the_real_logs_in_every_format():
    real_logs = REAL_TFEVENTS.parent
    if not real_logs.is_dir():
        pytest.skip(f"{real_logs} is absent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lrdiag.ReadWarning)
        table = lrdiag.read(real_logs)
        doc = lrdiag.analyze(real_logs).to_dict()
    assert doc["errors"] == []
    expected = {(run["run"], tag): (metric["points"], metric["role"]) for run in doc["runs"]
                for tag, metric in run["metrics"].items()}
    roles = table["role"].astype(object).where(table["role"].notna(), None)
    got = table.assign(role=roles).groupby(["run", "metric"], observed=True)["role"].agg(["size", "first"])
    assert {key: (int(size), role) for key, (size, role) in zip(got.index, got.itertuples(index=False))} == expected
    assert len({source for source in (run["source"] for run in doc["runs"])}) >= 5  # many formats, not one
    assert table.attrs["problems"] == [{"run": run["run"], **problem} for run in doc["runs"]
                                       for problem in run["problems"]]


def test_read_is_a_categorical_long_table_in_logged_order_with_nan_wall_times_where_none_is_logged():
    folder = SAMPLES / "keras_csv"
    table = lrdiag.read(folder)
    assert list(table.columns) == ["run", "metric", "role", "step", "value", "wall_time"]
    assert [str(table[c].dtype) for c in table.columns] == ["category"] * 3 + ["int64", "float64", "float64"]
    assert table["wall_time"].isna().all()  # Keras' CSVLogger logs no times
    for run_name in table["run"].cat.categories:
        run = lrdiag.read_run(folder / run_name)
        rows = table[table["run"] == run_name]
        assert list(rows["metric"].unique()) == list(run.series)
        for tag, series in run.series.items():
            one = rows[rows["metric"] == tag]
            np.testing.assert_array_equal(one["step"].to_numpy(), series.steps)
            np.testing.assert_array_equal(one["value"].to_numpy(), series.values)
            assert set(one["role"].astype(object).fillna("none")) == {series.role or "none"}


def test_read_takes_several_paths_and_role_overrides_and_refuses_a_bad_role():
    table = lrdiag.read([SAMPLES / "keras_csv", str(SAMPLES / "tensorboard")], roles={"val/acc": "val_loss"})
    each = [lrdiag.read(SAMPLES / folder) for folder in ("keras_csv", "tensorboard")]
    assert list(table["run"].cat.categories) == [name for one in each for name in one["run"].cat.categories]
    assert len(table) == sum(len(one) for one in each)
    assert set(table.loc[table["metric"] == "val/acc", "role"]) == {"val_loss"}
    with pytest.raises(lrdiag.LrdiagError, match="unknown role 'loss_of_val'"):
        lrdiag.read(SAMPLES / "tensorboard", roles={"val/acc": "loss_of_val"})


def test_a_path_with_no_run_raises_a_user_error_naming_it(tmp_path):
    with pytest.raises(lrdiag.LrdiagError, match="the folder is empty"):
        lrdiag.read(tmp_path)
    with pytest.raises(lrdiag.LrdiagError):
        lrdiag.analyze(tmp_path / "missing")


def test_a_damaged_file_keeps_its_good_points_and_warns_with_its_problem(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from lrdiag.ingest.tfevents import read_files

    writer = SummaryWriter(str(tmp_path / "run"))
    for step in range(50):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    writer.close()
    [path] = (tmp_path / "run").glob("*tfevents*")
    path.write_bytes(path.read_bytes()[:-7])  # the last record cut short, as by a killed job
    with pytest.warns(lrdiag.ReadWarning, match=r"truncated"):
        table = lrdiag.read(tmp_path)
    [problem] = table.attrs["problems"]
    assert problem["run"] == "run" and problem["file"] == str(path) and problem["where"].startswith("offset ")
    assert len(table) == 49
    np.testing.assert_array_equal(table["value"], read_files([path]).series["train/loss"].values)
    with pytest.warns(lrdiag.ReadWarning, match=r"truncated"):
        analysis = lrdiag.analyze(tmp_path)
    assert analysis.problems == [problem] and analysis.runs["problems"].tolist() == [1]
    assert analysis.to_dict()["runs"][0]["problems"] == [{key: problem[key] for key in ("file", "where", "message")}]


def test_read_run_returns_one_runs_series_and_refuses_a_folder_of_several():
    run = lrdiag.read_run(SAMPLES / "tensorboard" / "mlp_sgd_bad_batch_spike")
    assert isinstance(run, lrdiag.Run)
    assert run.series["train/loss"].role == "train_loss" and len(run.series["train/loss"]) == 1400
    assert run.series["train/loss"].wall_times is not None
    with pytest.raises(lrdiag.LrdiagError, match=r"holds \d+ runs .*lrdiag.read"):
        lrdiag.read_run(SAMPLES / "tensorboard")


# ---- analyze ----

def test_analyze_to_dict_is_the_json_that_lrdiag_analyze_writes(samples):
    out = cli("analyze", str(SAMPLES), "--format", "json")
    assert out.returncode == 1, out.stderr  # the samples hold error findings
    assert json.loads(jsonout.render(samples.to_dict())) == json.loads(out.stdout)


def test_findings_and_runs_tables_hold_the_json_fields_row_for_row(samples):
    doc = samples.to_dict()
    expected = [{"run": run["run"], **finding} for run in doc["runs"] for finding in run["findings"]]
    findings = samples.findings
    assert list(findings.columns) == list(expected[0])
    assert findings.astype({"severity": str}).to_dict("records") == expected
    assert list(findings["severity"].cat.categories) == ["error", "warning", "info"]
    runs = samples.runs
    assert runs["run"].tolist() == [run["run"] for run in doc["runs"]]
    assert runs[["error", "warning", "info"]].sum().to_dict() == findings["severity"].value_counts().to_dict()
    assert runs["points"].tolist() == [sum(m["points"] for m in run["metrics"].values()) for run in doc["runs"]]
    assert repr(samples).startswith(f"<lrdiag.Analysis: {len(doc['runs'])} runs, ")


def test_select_and_ignore_choose_rules_as_on_the_command_line(samples):
    spikes = lrdiag.analyze(SAMPLES / "tensorboard", select="LRD101", jobs=1)
    assert set(spikes.findings["rule"]) == {"LRD101"}
    rest = lrdiag.analyze(SAMPLES / "tensorboard", ignore=["LRD101", "loss.stall"], jobs=1)
    assert not {"LRD101", "LRD103"} & set(rest.findings["rule"])
    with pytest.raises(lrdiag.LrdiagError, match="unknown rule 'loss.spikes'.*did you mean 'loss.spike'"):
        lrdiag.analyze(SAMPLES / "tensorboard", select=["loss.spikes"])


def test_report_writes_the_page_that_lrdiag_report_writes(samples, tmp_path):
    out = cli("report", str(SAMPLES), "-o", str(tmp_path / "cli.html"))
    assert out.returncode == 0, out.stderr
    assert samples.report(tmp_path / "api.html") == tmp_path / "api.html"
    assert (tmp_path / "api.html").read_text() == (tmp_path / "cli.html").read_text()


def test_the_inline_summary_escapes_log_names_and_frames_the_report_of_the_runs_with_findings(hostile):
    from lrdiag.render import html as report_html

    analysis = lrdiag.analyze(hostile)
    page = analysis._repr_html_()
    assert "<img" not in page and XSS not in page
    assert html.escape(XSS) in page  # the run's name, as text in the findings table
    [frame] = re.findall(r'<iframe sandbox="allow-scripts" srcdoc="([^"]*)"', page)
    framed = html.unescape(frame)
    assert framed == report_html.render(analysis._report_model(analysis._entries))


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install -y chromium)")
def test_the_inline_report_draws_its_charts_in_a_browser_and_the_hostile_name_never_runs(hostile):
    from playwright.sync_api import sync_playwright

    page_html = lrdiag.analyze(hostile)._repr_html_()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox",
                                                                                  "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        dialogs, errors, requests = [], [], []
        page.on("request", lambda request: requests.append(request.url))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.set_content(f"<html><body>{page_html}</body></html>")
        frame = page.frames[1]
        deadline = time.monotonic() + 30
        while not frame.evaluate("window.__lrdiagReady === true"):
            assert time.monotonic() < deadline, "the inline report never set window.__lrdiagReady"
            page.wait_for_timeout(50)
        canvases = frame.query_selector_all("section.run canvas")
        inked = frame.evaluate("""(canvas) => { const d = canvas.getContext("2d").getImageData(0, 0, canvas.width,
            canvas.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""",
                               canvases[0])
        assert inked > 2000
        assert XSS in frame.locator("section.run h2").all_inner_texts()
        page.locator("details summary").click()  # the folded findings table
        assert XSS in page.locator("details table").inner_text()
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        assert frame.evaluate("document.querySelectorAll('img').length") == 0
        assert dialogs == [] and errors == [] and requests == []  # self-contained: nothing fetched
        browser.close()


# ---- the package ----

def test_import_lrdiag_loads_neither_pandas_nor_numpy_and_every_public_name_is_documented():
    code = "import sys, lrdiag; print(sorted({'pandas', 'numpy'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
    for name in lrdiag.__all__:
        assert getattr(lrdiag, name).__doc__, name
    assert set(lrdiag.__all__) <= set(dir(lrdiag))
    with pytest.raises(AttributeError, match="no attribute 'reed'"):
        lrdiag.reed  # noqa: B018
    assert (ROOT / "lrdiag" / "py.typed").is_file()


def test_warnings_name_the_file_and_say_where_the_rest_are(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "events.out.tfevents.1.x").write_bytes(b"")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "events.out.tfevents.1.y").write_bytes(b"\x00" * 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = lrdiag.read(tmp_path)
    assert len(table) == 0 and len(table.attrs["problems"]) == 2
    [warning] = caught
    assert issubclass(warning.category, lrdiag.ReadWarning)
    assert str(tmp_path / "a" / "events.out.tfevents.1.x") in str(warning.message)
    assert "and 1 more problem" in str(warning.message)
    assert warning.filename == __file__  # points at the caller's line, not lrdiag's


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [example] = re.findall(r"## Python API\n.*?```python\n(.*?)```", readme, flags=re.S)
    (tmp_path / "sample_logs").symlink_to(ROOT / "sample_logs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(example, "README.md", "exec"), names)
    assert "mlp_sgd_bad_batch_spike" in capsys.readouterr().out
    rules = set(names["result"].findings["rule"])
    assert "LRD101" in rules and not [rule for rule in rules if rule.startswith("LRD2")]
    assert (tmp_path / "report.html").stat().st_size > 100_000
