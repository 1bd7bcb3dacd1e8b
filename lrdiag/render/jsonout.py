"""JSON output: the output model as it is, the stable contract for other tools."""

from __future__ import annotations

import json


def render(doc: dict) -> str:
    return json.dumps(doc, indent=2, allow_nan=False)
