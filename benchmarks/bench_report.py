"""The HTML report's size and load time: 100 generated runs of 100k points, and the sample logs.

    python benchmarks/bench_report.py [--runs 100] [--points 100000] [--out DIR]

Writes the generated runs as CSV (step,train_loss,val_loss,lr), builds both reports with
`lrdiag report`, and opens each in headless Debian chromium (playwright) to time the load up to
the page's `window.__lrdiagReady` flag, which it sets once the charts in view are drawn (the
others are drawn as they scroll into view).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def write_run(folder: Path, index: int, points: int) -> None:
    """A warmup-cosine run with noise; every fifth has a spike, every seventh a late rise of val_loss.
    The rows are written by json's C encoder (a 4-column list of lists), 3x faster than pandas' to_csv."""
    rng = np.random.default_rng(index)
    steps = np.arange(points)
    decay = np.exp(-steps / (points / 5))
    train = 2.5 * decay + 0.3 + 0.03 * rng.standard_normal(points)
    val = 2.5 * decay + 0.35 + 0.01 * rng.standard_normal(points)
    if index % 5 == 0:
        train[points // 3] += 20.0
    if index % 7 == 0:
        val += np.clip(steps - points * 0.6, 0, None) / points
    warm = max(points // 50, 1)
    lr = np.where(steps < warm, 1e-3 * (steps + 1) / warm,
                  0.5e-3 * (1 + np.cos(np.pi * np.clip(steps - warm, 0, None) / (points - warm))))
    table = np.column_stack([steps, np.round(train, 6), np.round(val, 6), np.round(lr, 10)]).tolist()
    rows = json.dumps(table, separators=(",", ":"))[2:-2].replace("],[", "\n").replace(".0,", ",")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.csv").write_text("step,train_loss,val_loss,lr\n" + rows + "\n")


def write_runs(folder: Path, runs: int, points: int) -> None:
    with ProcessPoolExecutor() as pool:
        list(pool.map(write_run, [folder / f"run_{index:03d}" for index in range(runs)], range(runs),
                      [points] * runs))


_SCROLL_THROUGH = """async () => {
  const start = performance.now();
  const frame = () => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  for (let y = 0; y < document.body.scrollHeight; y += innerHeight) { scrollTo(0, y); await frame(); }
  return [(performance.now() - start) / 1000, document.querySelectorAll("canvas").length];
}"""


def load_seconds(page_path: Path, screenshot: Path | None = None) -> tuple[float, float, float, int]:
    """Seconds from navigation to the ready flag (as the page measures it, and wall as seen from here),
    then seconds to scroll through the whole page with every chart drawn, and the charts' canvases."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        start = time.perf_counter()
        page.goto(page_path.resolve().as_uri())
        page.wait_for_function("window.__lrdiagReady === true", timeout=120_000)
        wall = time.perf_counter() - start
        in_page = page.evaluate("window.__lrdiagReadyAt") / 1000
        if screenshot:
            page.set_viewport_size({"width": 1280, "height": 1500})
            page.wait_for_timeout(300)  # charts that came into view are drawn
            page.screenshot(path=str(screenshot))
        scrolled, canvases = page.evaluate(_SCROLL_THROUGH)
        browser.close()
    if errors:
        raise SystemExit(f"{page_path}: console errors: {errors[:3]}")
    return in_page, wall, scrolled, canvases


def report(paths: list[str], output: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lrdiag", "report", *paths, "-o", str(output.resolve())], check=True,
                   cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None, help="Keep the logs and reports here.")
    parser.add_argument("--screenshot", type=Path, default=None,
                        help="Save a screenshot of the sample logs' report here (docs/report.png).")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="lrdiag-bench-report-"))
    start = time.perf_counter()
    write_runs(out / "runs", args.runs, args.points)
    print(f"wrote {args.runs} runs x {args.points} points in {time.perf_counter() - start:.1f} s under {out}/runs")
    cases = [("sample logs", ["sample_logs"], out / "sample_logs.html", args.screenshot),
             (f"{args.runs} runs x {args.points} points", [str(out / "runs")], out / "generated.html", None)]
    for name, paths, page, screenshot in cases:
        build = report(paths, page)
        size = page.stat().st_size
        if Path(CHROMIUM).exists():
            in_page, wall, scrolled, canvases = load_seconds(page, screenshot)
            timing = (f"ready in {in_page:.2f} s after navigation ({wall:.2f} s wall, headless chromium); "
                      f"scrolled end to end, drawing all its charts ({canvases} canvases), in {scrolled:.2f} s")
        else:
            timing = f"load time not measured: {CHROMIUM} is missing"
        print(f"{name}: report {size / 1e6:.2f} MB, built in {build:.1f} s; {timing}")


if __name__ == "__main__":
    main()
