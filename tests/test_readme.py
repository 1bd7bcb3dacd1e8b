"""The README's sample output is what lrdiag really prints: each run block of `lrdiag analyze
sample_logs/` it shows, the closing tally, and the findings and gate lines of its console examples
(`$ lrdiag analyze PATH`, `$ lrdiag gate ...`) appear verbatim in the commands' output."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _run(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "lrdiag", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300).stdout


def _shown_blocks() -> list[str]:
    block = README.split("Part of what the first command prints:", 1)[1].split("```", 2)[1]
    return [chunk.strip() for chunk in block.strip().split("\n\n")]


def test_readme_sample_output_is_real():
    out = _run("analyze", "sample_logs/", "--exit-zero")
    blocks = _shown_blocks()
    assert len(blocks) >= 3
    for chunk in blocks:
        lines = [line for line in chunk.splitlines() if line != "..."]
        assert "\n".join(lines) in out, f"README shows output that lrdiag no longer prints:\n{chunk}"


def _console_examples() -> list[tuple[str, list[str]]]:
    """Each `$ lrdiag analyze|gate ...` line of a console block, with the output lines shown under it."""
    examples = []
    for block in re.findall(r"```console\n(.*?)```", README, flags=re.S):
        command, shown = None, []
        for line in block.splitlines() + ["$"]:
            if line.startswith("$"):
                if command and command[1] in ("analyze", "gate") and shown:
                    examples.append((" ".join(command), shown))
                command, shown = shlex.split(line[1:].split("#")[0]), []
            elif line.strip() and line.strip() != "...":
                shown.append(line)
    return examples


@pytest.mark.parametrize("command, shown", _console_examples(), ids=lambda value: str(value)[:60])
def test_readme_console_examples_are_real(command, shown):
    out = _run(*shlex.split(command)[1:])
    for line in shown:
        # A line cut short with "..." shows the start and end of what lrdiag prints.
        position = 0
        for piece in (part.strip() for part in line.split("...")):
            found = out.find(piece, position)
            assert found >= 0, f"README shows for `{command}` a line lrdiag does not print:\n{line}\n---\n{out}"
            position = found + len(piece)
