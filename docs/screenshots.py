"""The README's screenshots of the HTML report, taken in headless chromium (playwright) from sample_logs/.

    python docs/screenshots.py [--chromium /usr/bin/chromium]

Writes docs/report_incidents.png (a run whose spikes show on three losses: each incident one band, listed
once with the other metrics and its likely cause), docs/report_smoothing.png (the same chart, smoothing 0.9
against 0), docs/report_overlay.png (two runs compared on one chart, by relative time).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def ready(page) -> None:
    deadline = time.monotonic() + 60
    while not page.evaluate("window.__lrdiagReady === true"):
        if time.monotonic() > deadline:
            raise SystemExit("the report never became ready")
        page.wait_for_timeout(50)


def smoothing(page, weight: float) -> None:
    page.evaluate("(w) => { const s = document.getElementById('smoothing'); s.value = String(w);"
                  " s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }", weight)
    page.wait_for_timeout(200)


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    page_path = Path(tempfile.mkdtemp(prefix="lrdiag-shots-")) / "report.html"
    subprocess.run([sys.executable, "-m", "lrdiag", "report", "sample_logs", "-o", str(page_path)], check=True, cwd=ROOT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1000}, device_scale_factor=1)
        page.goto(page_path.as_uri())
        ready(page)
        page.evaluate("() => { try { localStorage.removeItem('lrdiag.smoothing'); } catch (e) {} }")
        section = page.locator("section.run", has_text="lightning_csv/mlp_sgd_lr_spikes").first
        section.scroll_into_view_if_needed()
        section.locator("canvas").first.wait_for()
        section.screenshot(path=str(ROOT / "docs" / "report_incidents.png"))
        smoothing(page, 0.9)
        box = section.locator(".chart-box").first
        box.screenshot(path=str(ROOT / "docs" / "report_smoothing.png"))
        smoothing(page, 0.6)
        for name in ("tensorboard/mlp_sgd_bad_batch_spike", "tensorboard/cnn_sgd_warmup_cosine"):
            page.locator("table.overview tbody tr", has_text=name).locator("input.compare").check()
        overlay = page.locator("section.overlay")
        overlay.locator("select.overlay-x").select_option("relative")
        overlay.locator("canvas").first.wait_for()
        overlay.scroll_into_view_if_needed()
        overlay.screenshot(path=str(ROOT / "docs" / "report_overlay.png"))
        browser.close()
    print("wrote docs/report_incidents.png, docs/report_smoothing.png, docs/report_overlay.png")


if __name__ == "__main__":
    main()
