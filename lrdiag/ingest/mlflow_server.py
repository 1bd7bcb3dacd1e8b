"""Read runs from an MLflow tracking server: `mlflow+http://HOST:PORT[/EXPERIMENT]` (or `mlflow+https://`).

Through the server's REST API, with the standard library's urllib (no mlflow package needed):
`experiments/search` (or `experiments/get-by-name` / `get` for the experiment named or numbered
in the URL), `runs/search` for the active runs, and for each metric `metrics/get-history`, page
by page, so that every point comes, never a sampled curve (`get-history-bulk-interval` samples).
Runs are named `experiment name/run name`; runs without metrics are skipped. A server that asks
for credentials gets those MLflow's own client sends: MLFLOW_TRACKING_TOKEN, or
MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.

A server that is down, refuses, times out or does not answer as MLflow does is one error (exit 2)
when its runs are listed; a run whose history fails part way keeps the points that came, with a
problem that says so. Points are ordered by step, in the server's order within a step.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.parse

import numpy as np

from lrdiag.errors import LrdiagError
from lrdiag.series.model import Problem, ReadResult, Series

NAME = "mlflow_server"
SCHEMES = ("mlflow+http://", "mlflow+https://")
TIMEOUT_S = 30.0  # one request; a server busy with a big history page answers well within it
_PAGE = 25_000  # the most points MLflow's get-history gives a page
_API = "/api/2.0/mlflow/"


def claim(argument) -> list[tuple[str, str, str]] | None:
    """The runs (name, server URL, run id) at an `mlflow+http(s)://` URL; None for anything else."""
    if not isinstance(argument, str) or not argument.startswith(SCHEMES):
        return None
    server, experiment = _split(argument)
    try:
        experiments = _experiments(server, experiment)
        runs = []
        for experiment_id, experiment_name in experiments:
            for run in _pages(server, "runs/search", "runs", {"experiment_ids": [experiment_id], "max_results": 1000,
                                                              "run_view_type": "ACTIVE_ONLY"}):
                if run.get("data", {}).get("metrics"):
                    info = run["info"]
                    name = info.get("run_name") or _tag(run, "mlflow.runName") or info["run_id"]
                    runs.append((f"{experiment_name}/{name}", info["run_id"]))
    except ServerError as error:
        raise LrdiagError(f"{argument}: {error}") from None
    except (KeyError, TypeError, AttributeError) as error:
        raise LrdiagError(f"{argument}: the server's answer is not an MLflow tracking server's (no {error})") from None
    names = [name for name, _ in runs]
    return [(name + (f" ({run_id[:8]})" if names.count(name) > 1 else ""), server, run_id) for name, run_id in runs]


def read(server: str, run: str = "") -> ReadResult:
    """Every point of every metric of one run."""
    run_id = run
    result = ReadResult("mlflow_server")
    try:
        found = _call(server, "runs/get", {"run_id": run_id})["run"]
    except (ServerError, KeyError) as error:
        result.problems.append(Problem(server, f"run {run_id}", f"run not read: {error}"))
        return result
    keys = sorted({metric["key"] for metric in found.get("data", {}).get("metrics", [])})
    for key in keys:
        points: list[dict] = []
        try:
            for point in _pages(server, "metrics/get-history", "metrics",
                                {"run_id": run_id, "metric_key": key, "max_results": _PAGE}):
                points.append(point)
        except ServerError as error:
            result.problems.append(Problem(server, f"run {run_id}, metric {key!r}",
                                           f"the server failed after {len(points)} points ({error}); "
                                           "the points that came are kept, the rest of this metric is missing"))
        rows = list(filter(None, map(_row, points)))
        if len(rows) < len(points):
            result.problems.append(Problem(server, f"run {run_id}, metric {key!r}",
                                           f"{len(points) - len(rows)} points with no value, or a step that is no "
                                           "number a step can be (a 64-bit integer), skipped"))
        if rows:
            steps, values, times = (np.array(column, dtype) for column, dtype in zip(zip(*rows), _DTYPES))
            order = np.argsort(steps, kind="stable")
            result.series[key] = Series(key, steps[order], values[order], times[order])
    return result


_DTYPES = (np.int64, np.float64, np.float64)


def _row(point: dict) -> tuple[int, float, float] | None:
    """(step, value, wall time) of a point of the server's metric history; None if it is no such point."""
    try:
        step = int(point.get("step", 0))  # an int64, which MLflow's JSON writes as a string
        row = step, float(point["value"]), float(point.get("timestamp", 0)) / 1000.0
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return row if -2 ** 63 <= step < 2 ** 63 else None


class ServerError(Exception):
    """The server could not be reached, or did not answer as an MLflow tracking server."""


def _split(argument: str) -> tuple[str, str]:
    """(server base URL, experiment name or id or "") of an mlflow+http(s) URL."""
    parts = urllib.parse.urlsplit(argument.removeprefix("mlflow+"))
    if not parts.hostname:
        raise LrdiagError(f"{argument}: expected mlflow+http://HOST:PORT[/EXPERIMENT]")
    return f"{parts.scheme}://{parts.netloc}", urllib.parse.unquote(parts.path.strip("/"))


def _experiments(server: str, experiment: str) -> list[tuple[str, str]]:
    if not experiment:
        found = _pages(server, "experiments/search", "experiments", {"max_results": 1000, "view_type": "ACTIVE_ONLY"})
        return [(item["experiment_id"], item["name"]) for item in found]
    try:
        item = _call(server, "experiments/get-by-name", {"experiment_name": experiment})["experiment"]
    except ServerError as by_name:
        if not experiment.isdigit():
            raise ServerError(f"no experiment named {experiment!r} ({by_name})") from None
        item = _call(server, "experiments/get", {"experiment_id": experiment})["experiment"]
    return [(item["experiment_id"], item["name"])]


def _pages(server: str, endpoint: str, field: str, body: dict):
    """The items of every page of a paged endpoint, following next_page_token."""
    token = None
    while True:
        page = _call(server, endpoint, {**body, **({"page_token": token} if token else {})})
        yield from page.get(field, [])
        token = page.get("next_page_token")
        if not token:
            return


def _call(server: str, endpoint: str, body: dict) -> dict:
    """One API call: GET with a query for reads of one thing, POST with JSON for searches."""
    import http.client  # here, not at the top: discovery imports this module to claim URLs (ssl, email: ~10 ms)
    import socket
    import urllib.error
    import urllib.request

    url = server + _API + endpoint
    if endpoint.endswith("/search"):
        request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    else:
        request = urllib.request.Request(url + "?" + urllib.parse.urlencode(body))
    request.headers.update(_credentials())
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        hint = ("; set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
                if error.code in (401, 403) else "")
        raise ServerError(f"{endpoint} answered HTTP {error.code}: {_message(error)}{hint}") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise ServerError(f"no answer within {TIMEOUT_S:g} s; is the server overloaded?") from None
        raise ServerError(f"cannot reach the server ({reason}); is `mlflow server` running there?") from None
    except (socket.timeout, TimeoutError):
        raise ServerError(f"no answer within {TIMEOUT_S:g} s; is the server overloaded?") from None
    except (OSError, ValueError, http.client.HTTPException) as error:  # a dropped connection, or not JSON
        raise ServerError(f"{endpoint} gave no MLflow answer ({type(error).__name__}: {error})") from None


def _credentials() -> dict[str, str]:
    """The Authorization header MLflow's own client sends, from the same environment variables."""
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        pair = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


def _message(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read()).get("message", error.reason)
    except (OSError, ValueError, AttributeError):
        return str(error.reason)


def _tag(run: dict, key: str) -> str:
    return next((tag.get("value", "") for tag in run.get("data", {}).get("tags", []) if tag.get("key") == key), "")
