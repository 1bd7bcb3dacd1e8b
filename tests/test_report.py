"""`lrdiag report`: one self-contained HTML file whose log names are inert text, whose size stays
bounded for 100 runs of 100k points, and which really renders in headless Debian chromium (charts
drawn, no console error, table sorting and filtering, recommendations and replays shown)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lrdiag.output import run_entry
from lrdiag.render import html, report
from lrdiag.render.downsample import minmax
from lrdiag.series.model import Run, Series

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_logs"
XSS = "<img src=x onerror=alert(1)>"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def lrdiag(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lrdiag", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def falling(points: int, seed: int = 0) -> np.ndarray:
    steps = np.arange(points)
    return 2.0 * np.exp(-steps / (points / 5)) + 0.3 + 0.01 * np.random.default_rng(seed).standard_normal(points)


def write_replays(folder: Path) -> None:
    """Replays as `lrdiag recommend --trainer` lays them out: <label>/seed<k>/ TensorBoard runs."""
    from torch.utils.tensorboard import SummaryWriter

    for label, spike in (("control", 8.0), ("warmup-cosine", 0.0)):
        for seed in range(2):
            writer = SummaryWriter(str(folder / label / f"seed{seed}"))
            loss = falling(200, seed)
            loss[60] += spike
            for step, value in enumerate(loss):
                writer.add_scalar("train/loss", float(value), step)
                writer.add_scalar("lr", 0.1 if label == "control" else 0.1 * min(1.0, (step + 1) / 50), step)
            writer.close()


def embedded(page: str, element_id: str):
    match = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report")
    hostile = root / "hostile" / XSS
    hostile.mkdir(parents=True)
    loss = falling(300)
    loss[150] = 9.0
    rows = "".join(f"{step},{value:.6g},0.01\n" for step, value in enumerate(loss.tolist()))
    (hostile / "metrics.csv").write_text("step,</script><script>alert(2)</script>train_loss,lr\n" + rows)
    recommended = lrdiag("recommend", str(SAMPLES / "example_spiky"), "--format", "json", cwd=root)
    assert recommended.returncode == 0, recommended.stderr
    (root / "recommendations.json").write_text(recommended.stdout)
    write_replays(root / "replays")
    done = lrdiag("report", str(SAMPLES), str(root / "hostile"), "--recommendations", "recommendations.json",
                  "--replays", "replays", "-o", "report.html", cwd=root)
    assert done.returncode == 0, done.stderr
    return {"root": root, "path": root / "report.html", "page": (root / "report.html").read_text(encoding="utf-8")}


def test_the_report_is_one_file_that_loads_nothing_from_the_network(built):
    page = built["page"]
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"<script[^>]*\ssrc=|<link\b|<iframe\b|@import|url\(\s*['\"]?https?:", page, re.I)
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy.split("script-src")[1]


def test_names_from_logs_are_escaped_never_markup(built):
    page = built["page"]
    assert XSS not in page and "<script>alert(2)" not in page
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in page
    runs = embedded(page, "lrdiag-data")["runs"]
    assert XSS in {run["run"] for run in runs}  # the name itself survives, as data


def test_the_report_holds_every_run_and_finding_that_analyze_reports(built):
    analyzed = json.loads(lrdiag("analyze", str(SAMPLES), "--format", "json", cwd=built["root"]).stdout)
    data = embedded(built["page"], "lrdiag-data")
    shown = {run["run"]: run for run in data["runs"]}
    for run in analyzed["runs"]:
        assert [f["message"] for f in shown[run["run"]]["findings"]] == [f["message"] for f in run["findings"]]
    assert set(data["rules"]) >= {"LRD101", "LRD105"} and data["rules"]["LRD101"]["why"]
    assert data["recommendations"]["example_spiky"]["candidates"]
    assert {(one["label"], one["seed"]) for one in data["replays"]["runs"]} == {
        ("control", 0), ("control", 1), ("warmup-cosine", 0), ("warmup-cosine", 1)}


def test_downsampling_keeps_spikes_gaps_and_both_ends():
    steps = np.arange(100_000)
    values = falling(100_000)
    values[31_337] = 50.0
    values[70_000:70_010] = np.nan
    shown_steps, shown = minmax(steps, values, 1000)
    assert shown.size <= 1100
    assert shown_steps[np.nanargmax(shown)] == 31_337 and np.nanmax(shown) == 50.0
    assert np.isnan(shown).any() and 70_000 <= shown_steps[np.isnan(shown)][0] < 70_010
    assert (shown_steps[0], shown_steps[-1]) == (0, 99_999)
    flat_steps, flat = minmax(steps, np.full(steps.size, 0.1), 1000)
    assert flat_steps.tolist() == [0, 99_999] and flat.tolist() == [0.1, 0.1]


def test_a_hundred_runs_of_100k_points_make_a_report_under_5_mb():
    points = report.points_per_run(100)
    steps = np.arange(100_000)
    runs = []
    for index in range(100):
        train = falling(100_000, index)
        train[1000 + index] = 40.0
        run = Run(f"runs/run_{index:03d}", "generic_csv", [f"runs/run_{index:03d}/metrics.csv"], series={
            "train_loss": Series("train_loss", steps, train, role="train_loss"),
            "val_loss": Series("val_loss", steps, falling(100_000, index + 1000) + 0.05, role="val_loss"),
            "lr": Series("lr", steps, 1e-3 * np.cos(steps / steps[-1] * np.pi / 2) + 1e-5, role="lr")})
        runs.append({**run_entry(run), "curves": report.curves(run, points)})
    model = {"schema": 1, "kind": "lrdiag-report", "lrdiag": "test", "paths": ["runs"], "runs": runs, "errors": [],
             "rules": {}, "recommendations": {}, "replays": None}
    page = html.render(model)
    assert len(page.encode()) <= 5_000_000
    curves = embedded(page, "lrdiag-curves")
    assert len(curves) == 100
    first_steps, first_values = curves[0]["train_loss"]
    assert max(first_values) == 40.0 and first_steps[first_values.index(40.0)] == 1000  # the spike survived


def test_a_bad_recommendations_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "recs.json").write_text('{"runs": [{"candidates": 3}]}')
    done = lrdiag("report", str(SAMPLES / "example_spiky"), "--recommendations", "recs.json", "-o", "r.html",
                  cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "recs.json: not the output of `lrdiag recommend --format json`" in done.stderr
    assert not (tmp_path / "r.html").exists()


# ---- in a real browser ----

def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install playwright)"
    return None


browser_test = pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def opened(browser, built):
    """The report open and ready, with what it logged and any dialog it tried to show."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    events = {"console": [], "errors": [], "dialogs": [], "requests": []}
    page.on("console", lambda message: events["console"].append((message.type, message.text)))
    page.on("pageerror", lambda error: events["errors"].append(str(error)))
    page.on("dialog", lambda dialog: (events["dialogs"].append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: events["requests"].append(request.url))
    page.goto(built["path"].as_uri())
    # Polled from here: wait_for_function's in-page polling evals its predicate, which the
    # report's Content-Security-Policy (no 'unsafe-eval') rightly refuses now and then.
    deadline = time.monotonic() + 30
    while not page.evaluate("window.__lrdiagReady === true"):
        assert time.monotonic() < deadline, "the report never set window.__lrdiagReady"
        page.wait_for_timeout(50)
    yield page, events
    page.close()


_INKED = """(canvas) => {
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) inked++;
  return inked;
}"""


@browser_test
def test_the_page_loads_without_console_errors_and_draws_its_charts(opened, browser):
    page, events = opened
    assert events["errors"] == []
    assert [text for kind, text in events["console"] if kind in ("error", "warning")] == []
    assert all(url.startswith("file://") for url in events["requests"])
    first = page.locator("section.run").first  # charts are drawn as they come near the viewport
    first.scroll_into_view_if_needed()
    first.locator("canvas").first.wait_for(timeout=10_000)
    canvases = page.query_selector_all("section.run canvas")
    assert canvases, "no chart drawn"
    assert page.evaluate(_INKED, canvases[0]) > 2000  # axes, grid and lines, not an empty canvas
    shot = page.screenshot()
    blank = browser.new_page(viewport={"width": 1280, "height": 1000})
    blank.set_content("<html><body style='background:#fafafa'></body></html>")
    empty = blank.screenshot()
    blank.close()
    assert len(shot) > 10 * len(empty)  # PNG size grows with what is drawn; a blank page compresses to little


@browser_test
def test_a_hostile_run_name_shows_as_text_and_its_script_never_runs(opened):
    page, events = opened
    assert events["dialogs"] == []
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    headings = page.locator("section.run h2").all_inner_texts()
    assert XSS in headings
    assert "</script><script>alert(2)</script>train_loss" in page.locator("body").inner_text()


@browser_test
def test_the_overview_table_sorts_and_filters(opened):
    page, _ = opened

    def column(index: int) -> list[str]:
        return page.locator("table.overview").first.locator("tbody tr:not(.hidden)").evaluate_all(
            f"rows => rows.map(row => row.cells[{index}].textContent)")

    page.locator("table.overview th", has_text="final val loss").click()
    numbers = [float(text) for text in column(6) if text not in ("–", "nan")]
    assert len(numbers) > 10 and numbers == sorted(numbers)
    page.locator("table.overview th", has_text="final val loss").click()
    numbers = [float(text) for text in column(6) if text not in ("–", "nan")]
    assert numbers == sorted(numbers, reverse=True)
    page.fill("input[type=search]", "keras")
    names = column(0)
    assert names and all("keras" in name for name in names)
    assert page.locator("section.run:not(.hidden)").count() == len(names)
    page.fill("input[type=search]", "")
    page.select_option("select", "error")
    errors = column(2)
    assert errors and all(int(count) > 0 for count in errors)


@browser_test
def test_hovering_a_chart_shows_values_and_zooming_redraws_it(opened):
    page, _ = opened
    section = page.locator("section.run", has_text="tensorboard/mlp_sgd_bad_batch_spike")
    section.scroll_into_view_if_needed()
    chart = section.locator(".u-over")
    chart.wait_for()
    legend = section.locator(".u-legend .u-value").first
    assert legend.inner_text() == "–"
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert re.fullmatch(r"\d+", legend.inner_text())  # the step under the cursor
    canvas = section.locator("canvas").element_handle()
    before = page.evaluate("(c) => c.toDataURL()", canvas)
    section.locator("button.zoom").first.click()
    page.wait_for_timeout(100)
    assert page.evaluate("(c) => c.toDataURL()", canvas) != before


@browser_test
def test_recommended_schedules_and_replays_are_drawn(opened):
    page, _ = opened
    section = page.locator("section.run", has_text="Recommended schedules").first
    assert "torch.optim.lr_scheduler" in section.locator("pre").first.inner_text()
    section.locator(".candidate").first.scroll_into_view_if_needed()
    section.locator(".candidate canvas").first.wait_for()
    replays = page.locator("section#replays")
    rows = replays.locator("table.overview tbody tr").all_inner_texts()
    assert [row.split("\t") for row in rows] == [["control", "2", "LRD101 | LRD101"],
                                                  ["warmup-cosine", "2", "none | none"]]
    replays.locator("canvas").first.wait_for()
    assert page.evaluate(_INKED, replays.locator("canvas").first.element_handle()) > 2000


def test_a_runs_clock_pairs_steps_with_seconds_when_wall_times_are_logged():
    steps = np.arange(1000)
    timed = Run("timed", "tensorboard", [], series={"loss": Series("loss", steps, falling(1000), 1_700_000_000.0 + steps
                                                                   * 0.5, role="train_loss")})
    clock = report.clock(timed)
    assert all(curve["clock"] == clock for curve in report.curves(timed, 1000).values())
    assert clock["start"] == 1_700_000_000.0 and len(clock["steps"]) == report.CLOCK_POINTS
    assert clock["steps"][-1] == 999 and clock["seconds"][-1] == 499.5
    assert report.clock(Run("csv", "generic_csv", [], series={"loss": Series("loss", steps, falling(1000))})) is None


def test_the_overview_counts_incidents_and_names_each_roles_main_curve(built):
    data = embedded(built["page"], "lrdiag-data")
    run = next(run for run in data["runs"] if run["run"] == "lightning_csv/mlp_sgd_lr_spikes/version_0")
    assert len(run["findings"]) > len(run["incidents"]) == sum(run["overview"]["counts"].values())
    assert run["overview"]["primary"]["train_loss"] in run["curves"]


def _section(page, name: str):
    section = page.locator("section.run", has_text=name).first
    section.scroll_into_view_if_needed()
    section.locator("canvas").first.wait_for()
    return section


@browser_test
def test_the_smoothing_slider_moves_the_curve_and_is_remembered(opened):
    page, events = opened
    weights = [0.0, 0.6, 0.9]
    values = [1.0, 2.0, None, 4.0, 3.0]
    for weight in weights:  # TensorBoard's debiased EMA, gaps kept
        expected, last, count = [], 0.0, 0
        for value in values:
            if value is None:
                expected.append(None)
                continue
            last, count = last * weight + (1 - weight) * value, count + 1
            expected.append(last / (1 - weight ** count) if weight else value)
        got = page.evaluate("([v, w]) => window.__lrdiag.smooth(v, w)", [values, weight])
        assert got == pytest.approx(expected)
    assert page.locator("#smoothing").input_value() == "0.6"
    section = _section(page, "tensorboard/mlp_sgd_bad_batch_spike")
    assert section.locator(".u-legend tr.raw").count() == 2  # train/loss and val/loss, drawn faint, shown in the
    assert "train/loss (raw)" not in section.locator(".u-legend").inner_text()  # smoothed rows: "0.31 (raw 0.29)"
    box = section.locator(".u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert re.search(r"train/loss:?\s*[-\d.e]+ \(raw [-\d.e]+\)", section.locator(".u-legend").inner_text())
    before = page.evaluate("(c) => c.toDataURL()", section.locator("canvas").first.element_handle())
    page.evaluate("() => { const s = document.getElementById('smoothing'); s.value = '0.95';"
                  " s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }")
    page.wait_for_timeout(100)
    assert page.evaluate("(c) => c.toDataURL()", section.locator("canvas").first.element_handle()) != before
    page.reload()
    deadline = time.monotonic() + 30
    while not page.evaluate("window.__lrdiagReady === true"):
        assert time.monotonic() < deadline, "the report never set window.__lrdiagReady after a reload"
        page.wait_for_timeout(50)
    assert page.locator("#smoothing").input_value() == "0.95"  # file:// pages keep localStorage in chromium
    page.evaluate("() => localStorage.removeItem('lrdiag.smoothing')")
    assert events["errors"] == [] and [t for kind, t in events["console"] if kind == "error"] == []


@browser_test
def test_the_overlay_draws_the_chosen_runs_on_one_chart_with_time_axes(opened):
    page, events = opened
    for name in ("tensorboard/mlp_adam_moons", "tensorboard/mlp_sgd_bad_batch_spike"):
        page.locator("table.overview tbody tr", has_text=name).locator("input.compare").check()
    overlay = page.locator("section.overlay")
    overlay.locator("canvas").first.wait_for()
    labels = overlay.locator(".u-legend tr:not(.raw) .u-label").all_inner_texts()
    assert "tensorboard/mlp_adam_moons · train/loss" in labels and "tensorboard/mlp_sgd_bad_batch_spike · train/loss" in labels
    assert page.evaluate(_INKED, overlay.locator("canvas").first.element_handle()) > 2000
    overlay.locator("select.overlay-x").select_option("relative")
    assert overlay.locator(".u-legend .u-label").first.inner_text().startswith("relative time")
    overlay.locator("select.overlay-x").select_option("wall")
    overlay.locator("select.overlay-role").select_option("val_loss")
    assert "tensorboard/mlp_adam_moons · val/loss" in overlay.locator(".u-legend .u-label").all_inner_texts()
    # A CSV run has no wall times: with it chosen, only the step axis is offered.
    page.locator("table.overview tbody tr", has_text="keras_csv/mlp_adam_overfit").locator("input.compare").check()
    assert overlay.locator("select.overlay-x").input_value() == "step"
    assert overlay.locator("select.overlay-x option[value=wall]").is_disabled()
    assert events["errors"] == [] and [t for kind, t in events["console"] if kind == "error"] == []


@browser_test
def test_log_toggle_and_readable_ticks(opened):
    page, _ = opened
    assert page.evaluate("[1e-4, 0.001, 1e4, 2.5e-5, 0.25, 1500000, -3e-7].map(v => window.__lrdiag.readable(v, 3))") == \
        ["1e-4", "0.001", "10k", "2.5e-5", "0.25", "1.5M", "-3e-7"]
    section = _section(page, "tensorboard/mlp_sgd_bad_batch_spike")
    toggle = section.locator("input.log-toggle")
    was = toggle.is_checked()
    toggle.click()
    page.wait_for_timeout(100)
    axis = section.locator(".u-axis").nth(1).inner_text()
    assert ("loss (log)" in axis) != was
    ticks = " ".join(page.locator("section.run .u-axis").all_inner_texts())
    assert not re.search(r"\d\.\d{3}e[-+]?\d", ticks), ticks


@browser_test
def test_an_incident_is_listed_once_with_its_metrics_and_linked_from_the_overview(opened):
    page, _ = opened
    row = page.locator("table.overview tbody tr", has_text="lightning_csv/mlp_sgd_lr_spikes")
    link = row.locator("a[href$='-incidents']").first
    target = link.get_attribute("href")
    section = page.locator(f"section.run:has({target})")
    items = section.locator(target + " > li")
    assert items.count() < 9  # 9 findings on 3 metrics
    grouped = section.locator("li:has(div.also)").first
    assert grouped.locator("div.also").inner_text().startswith("also on: ")
    assert grouped.locator("div.cause").inner_text().startswith("likely cause: ")
