"""The HTML report: one self-contained file (uPlot, styles and data inline; no network) built from the report model.

Names from logs reach the page only as JSON inside `<script type="application/json">`, with `<`,
`>` and `&` escaped, and the page's script puts them in the DOM with textContent. A Content
Security Policy allows only the page's own scripts (by hash), so an injected handler could not run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from importlib import resources

import numpy as np

from lrdiag.render.view import headline, incidents

_ASSETS = resources.files("lrdiag.render") / "assets"


def asset(name: str) -> str:
    return (_ASSETS / name).read_text(encoding="utf-8")


def _plain(value):
    """JSON-able with no NaN/Inf (JSON.parse rejects them): as in the JSON output, they become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


def script_json(value) -> str:
    """JSON safe inside a <script> element: no `</script>`, no `<!--`, whatever the strings hold."""
    return _in_script(json.dumps(value, separators=(",", ":")))


def _in_script(text: str) -> str:
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _data_json(value) -> str:
    """script_json(_plain(value)), read as it is where it holds nothing _plain changes (no NaN or Inf, no numpy
    number but float64's): a call a value would cost more than the rest for a run of a million metrics."""
    try:
        return _in_script(json.dumps(value, separators=(",", ":"), allow_nan=False))
    except (ValueError, TypeError):
        return script_json(_plain(value))


def _numbers(array: np.ndarray, form: str) -> str:
    if not array.size:
        return "[]"
    text = np.char.mod(form, array)
    if array.dtype.kind == "f":
        text = np.where(np.isfinite(array), text, "null")
    return "[" + ",".join(text.tolist()) + "]"


def curves_json(curves: dict) -> str:
    """{tag: [[steps], [values]]}, numbers written with 5 significant digits (display only), NaN/Inf as null."""
    parts = [script_json(tag) + ":[" + _numbers(curve["steps"], "%d") + "," + _numbers(curve["values"], "%.5g") + "]"
             for tag, curve in curves.items()]
    return "{" + ",".join(parts) + "}"


def _without_curves(run: dict) -> dict:
    entry = {key: value for key, value in run.items() if key != "curves"}
    entry["curves"] = {tag: {"role": c["role"], "points": c["points"]} for tag, c in run["curves"].items()}
    return entry


def _overview(run: dict) -> dict:
    """The overview row: incidents by severity (one event on several metrics counts once), the validation loss,
    and each curve role's main tag (the plain total loss before its components), which the overlay draws."""
    val = headline(run) or {}
    counts = {"error": 0, "warning": 0, "info": 0}
    for incident in incidents(run):
        counts[incident["severity"]] += 1
    primary = {}
    for role in ("train_loss", "val_loss", "lr"):
        found = headline({"metrics": {tag: run["metrics"][tag] for tag in run["curves"] if tag in run["metrics"]}}, role)
        if found:
            primary[role] = found["tag"]
    return {"counts": counts, "best_val": val.get("min"), "final_val": val.get("last"), "primary": primary,
            "downsampled": any(c["downsampled"] for c in run["curves"].values())}


def _hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode() + "'"


def render(model: dict) -> str:
    runs = [{**_without_curves(run), "incidents": incidents(run), "overview": _overview(run),
             "clock": next((c.get("clock") for c in run["curves"].values() if c.get("clock")), None)}
            for run in model["runs"]]
    replays = model.get("replays")
    data = {**{key: value for key, value in model.items() if key not in ("runs", "replays")}, "runs": runs,
            "replays": {**replays, "runs": [_without_curves(one) for one in replays["runs"]]} if replays else None}
    scripts = [asset("uPlot.iife.min.js").replace("</script", "<\\/script"), asset("report.js")]
    policy = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src "
              + " ".join(_hash(script) for script in scripts))
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>lrdiag report</title>",
        "<style>", asset("uPlot.min.css"), asset("report.css"), "</style>",
        "</head><body>",
        '<header><h1>lrdiag report</h1><div id="summary" class="muted"></div></header>',
        '<main id="app"><noscript>This report draws its tables and charts with JavaScript.</noscript></main>',
        '<script type="application/json" id="lrdiag-data">' + _data_json(data) + "</script>",
        '<script type="application/json" id="lrdiag-curves">['
        + ",".join(curves_json(run["curves"]) for run in model["runs"]) + "]</script>",
        '<script type="application/json" id="lrdiag-replay-curves">['
        + ",".join(curves_json(one["curves"]) for one in (replays or {}).get("runs", [])) + "]</script>",
        *(f"<script>{script}</script>" for script in scripts),
        "</body></html>",
        "",
    ])
