"""The README's sample output is what `lrdiag analyze sample_logs/` really prints: each run block
it shows, and the closing tally, appear verbatim in the command's output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _shown_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("Part of what the first command prints:", 1)[1].split("```", 2)[1]
    return [chunk.strip() for chunk in block.strip().split("\n\n")]


def test_readme_sample_output_is_real():
    out = subprocess.run([sys.executable, "-m", "lrdiag", "analyze", "sample_logs/", "--exit-zero"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    blocks = _shown_blocks()
    assert len(blocks) >= 3
    for chunk in blocks:
        lines = [line for line in chunk.splitlines() if line != "..."]
        assert "\n".join(lines) in out, f"README shows output that lrdiag no longer prints:\n{chunk}"
