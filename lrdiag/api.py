"""The Python API for notebooks and scripts: every point of every run as one tidy pandas table
(`read`), one run's series (`read_run`), and the findings with their report (`analyze`).

These are the functions the command line runs (discovery, the readers, the rules engine, the output
model and the HTML report), so a notebook sees what `lrdiag analyze` says, point for point.
"""

from __future__ import annotations

import copy
import html
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd

from lrdiag.errors import LrdiagError
from lrdiag.ingest import runs as ingest
from lrdiag.ingest.discover import RunSpec
from lrdiag.series.model import Run
from lrdiag.series.roles import ROLES, parse_role_overrides

PathLike = Union[str, "os.PathLike[str]"]
Paths = Union[PathLike, Iterable[PathLike]]
Codes = Union[str, Iterable[str], None]

FINDING_COLUMNS = ("run", "rule", "name", "category", "severity", "metric", "step_start", "step_end", "message",
                   "evidence")
RUN_COLUMNS = ("run", "source", "files", "metrics", "points", "error", "warning", "info", "problems")
# Jupyter keeps an output in the notebook file: the inline report shows the runs with the most severe findings,
# up to this many (each up to 4,000 points a curve), to keep the notebook small; `Analysis.report(path)` has all.
INLINE_RUNS = 20
INLINE_FINDINGS = 50  # rows of the inline findings table; `Analysis.findings` has them all


class ReadWarning(UserWarning):
    """A log was damaged or could not be read. The points before the damage are kept; every problem
    (run, file, offset or line, message) is in the table's `attrs["problems"]`."""


def read(paths: Paths, *, roles: Mapping[str, str] | None = None, verify: bool = True,
         jobs: int | None = None) -> pd.DataFrame:
    """Every point of every run under `paths`, as one long table in the order each run logged it.

    Columns: `run`, `metric` and `role` (categoricals; `role` is NaN for a metric that plays none), `step`
    (int64), `value` (float64, NaN and Inf as logged) and `wall_time` (float64 seconds since the epoch,
    NaN where the format does not log it). `paths`: folders, log files or tracker stores (one or a list).
    `roles`: {tag: role} on top of the project's `[tool.lrdiag] roles` and the roles inferred from tag
    names. `verify=False` skips TFRecord checksums. Many runs are read in parallel over `jobs` processes
    (default: one per core). Damaged files warn with `ReadWarning`; their problems are in
    `df.attrs["problems"]`. A path that holds no run raises `LrdiagError`.
    """
    from lrdiag.pipeline import map_runs

    entries, errors = map_runs(_read_one, _specs(paths), verify, _role_map(roles), jobs=jobs)
    for error in errors:  # a reader's bug: the other runs go on
        warnings.warn(ReadWarning(error), stacklevel=2)
    runs = [entry["run"] for entry in entries]
    frame = tidy(runs)
    frame.attrs["problems"] = [{"run": run.name, **problem.to_dict()} for run in runs for problem in run.problems]
    _warn_problems(frame.attrs["problems"], "the table's attrs['problems']")
    return frame


def read_run(path: PathLike, *, roles: Mapping[str, str] | None = None, verify: bool = True) -> Run:
    """The one run at `path` (a run folder, a log file, or a store holding one run): its series by tag, each
    with `steps`, `values`, `wall_times` and `role`, and the problems met reading it (also a `ReadWarning`).
    A path holding several runs raises `LrdiagError` naming them: `read` takes them all."""
    specs = _specs(path)
    if len(specs) > 1:
        names = ", ".join(spec.name for spec in specs[:3]) + (", ..." if len(specs) > 3 else "")
        raise LrdiagError(f"{os.fspath(path)}: holds {len(specs)} runs ({names}), and read_run reads one: "
                          "name one of them, or read them all with lrdiag.read")
    run = ingest.read_run(specs[0], verify=verify, roles=_role_map(roles))
    _warn_problems([{"run": run.name, **problem.to_dict()} for problem in run.problems], "the run's problems")
    return run


def analyze(paths: Paths, *, config: PathLike | None = None, select: Codes = None, ignore: Codes = None,
            roles: Mapping[str, str] | None = None, rule_dirs: Iterable[PathLike] = (), verify: bool = True,
            jobs: int | None = None) -> Analysis:
    """Read every run under `paths` and run the rules on it, as `lrdiag analyze` does.

    `config`: a lrdiag.toml or pyproject.toml (default: the one found from the current folder up, as the
    command line does). `select` / `ignore`: rule codes, names or code prefixes (a list, or one string
    separated by commas), over the config's. `roles` ({tag: role}) and `rule_dirs` add to the config's.
    Runs are read in parallel over `jobs` processes (default: one per core) when there are many. A path
    holding no run, and a bad config or rule code, raise `LrdiagError`. Damaged files warn with
    `ReadWarning` (their problems are in `problems`), and so does a run none of whose files could be read
    (an entry of `errors`).
    """
    from lrdiag.config import project_setup, rule_set
    from lrdiag.pipeline import map_runs
    from lrdiag.render.report import points_per_run, rule_docs

    dirs = [Path(folder) for folder in rule_dirs]
    config_file, engine, role_map = project_setup(Path(config) if config is not None else None, (), _codes(select),
                                                  _codes(ignore), dirs)
    role_map = {**role_map, **_role_map(roles, project=False)}
    specs = _specs(paths)
    entries, errors = map_runs(_analyze_run, specs, engine, role_map, verify, points_per_run(len(specs)), jobs=jobs)
    analysis = Analysis(_arguments(paths), entries, errors, rule_docs(rule_set(config_file, dirs)))
    for error in errors:
        warnings.warn(ReadWarning(error), stacklevel=2)
    _warn_problems(analysis.problems, "the analysis' problems")
    return analysis


class Analysis:
    """What `lrdiag analyze` found: `findings` and `runs` as DataFrames, `problems` (damaged logs), `errors`
    (runs that could not be read), `to_dict()` (the JSON output), `report(path)` (the HTML report), and a
    summary with the findings' charts when shown in Jupyter."""

    def __init__(self, paths: list[str], entries: list[dict], errors: list[str], rules: dict) -> None:
        self.paths = paths
        self.errors = list(errors)  # runs that could not be read, or whose analysis failed
        self._entries = entries  # each run's output entry plus its display curves
        self._rules = rules

    @property
    def findings(self) -> pd.DataFrame:
        """One row per finding, most severe first within each run: the JSON's fields (run, rule, name,
        category, severity, metric, step_start, step_end, message, evidence) as columns."""
        rows = [{"run": entry["run"], **finding} for entry in self._entries for finding in entry["findings"]]
        frame = pd.DataFrame(rows, columns=list(FINDING_COLUMNS))
        frame["severity"] = pd.Categorical(frame["severity"], categories=("error", "warning", "info"), ordered=True)
        for column in ("step_start", "step_end"):
            frame[column] = frame[column].astype(np.int64)
        return frame

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run read: its source format, number of files, metrics and points, findings by
        severity, and read problems."""
        from lrdiag.render.view import severity_counts

        rows = [(entry["run"], entry["source"], len(entry["files"]), len(entry["metrics"]),
                 sum(metric["points"] for metric in entry["metrics"].values()),
                 *severity_counts(entry).values(), len(entry["problems"])) for entry in self._entries]
        return pd.DataFrame(rows, columns=list(RUN_COLUMNS))

    @property
    def problems(self) -> list[dict]:
        """Every read problem: {run, file, where (offset or line), message}."""
        return [{"run": entry["run"], **problem} for entry in self._entries for problem in entry["problems"]]

    def to_dict(self) -> dict:
        """The output model that `lrdiag analyze --format json` writes (schema 1), as a new dict."""
        from lrdiag.output import document

        return copy.deepcopy(document([_without_curves(entry) for entry in self._entries], self.errors))

    def report(self, path: PathLike) -> Path:
        """Write the HTML report of these runs, as `lrdiag report` does (one self-contained file); its path."""
        from lrdiag import safeio
        from lrdiag.render import html as report_html
        from lrdiag.render.report import inputs_of

        output = safeio.check_output(path, what="report")
        model = self._report_model(self._entries)
        safeio.write_text(output, report_html.render(model), inputs_of(model, None), what="report")
        return output

    def __repr__(self) -> str:
        counts = self._counts()
        return (f"<lrdiag.Analysis: {_plural(len(self._entries), 'run')}, "
                + ", ".join(_plural(count, severity) for severity, count in counts.items())
                + (f", {_plural(len(self.errors), 'error')} reading" if self.errors else "") + ">")

    def _repr_html_(self) -> str:
        """The summary, the report of the runs with findings in a sandboxed frame, and the findings as a
        folded table (shown where the frame's scripts cannot run: an untrusted notebook, a static viewer).
        Every name from a log is escaped here, and inside the frame the report escapes its own."""
        counts = self._counts()
        parts = [f"<div><p><b>lrdiag</b>: {_plural(len(self._entries), 'run')} · "
                 + " · ".join(_plural(count, severity) for severity, count in counts.items())
                 + (f" · {_plural(len(self.problems), 'read problem')}" if self.problems else "") + "</p>"]
        if self.errors:
            parts.append("<ul>" + "".join(f"<li>{html.escape(error)}</li>" for error in self.errors) + "</ul>")
        findings = self.findings
        if len(findings):
            parts.append(self._report_frame())
            parts.append(f"<details><summary>{_plural(len(findings), 'finding')}</summary>{_findings_table(findings)}"
                         "</details>")
        parts.append("</div>")
        return "\n".join(parts)

    def _counts(self) -> dict[str, int]:
        from lrdiag.render.view import severity_counts

        totals = {"error": 0, "warning": 0, "info": 0}
        for entry in self._entries:
            for severity, count in severity_counts(entry).items():
                totals[severity] += count
        return totals

    def _report_frame(self) -> str:
        from lrdiag.detect.finding import SEVERITY_RANK
        from lrdiag.render import html as report_html

        with_findings = [entry for entry in self._entries if entry["findings"]]
        shown = sorted(with_findings, key=lambda entry: min(SEVERITY_RANK[f["severity"]] for f in entry["findings"]))
        shown = sorted(shown[:INLINE_RUNS], key=self._entries.index)
        note = (f"<p>The {INLINE_RUNS} runs with the most severe findings of {len(with_findings)}; "
                "<code>.report(path)</code> writes them all.</p>") if len(with_findings) > INLINE_RUNS else ""
        page = report_html.render(self._report_model(shown))
        # No allow-same-origin: the report's scripts run in an opaque origin, away from the notebook's page.
        return (note + f'<iframe sandbox="allow-scripts" srcdoc="{html.escape(page, quote=True)}" '
                'title="lrdiag report" style="width:100%;height:640px;border:1px solid #ccc"></iframe>')

    def _report_model(self, entries: list[dict]) -> dict:
        """The model `lrdiag report` renders (see lrdiag.render.report), without recommendations or replays."""
        from lrdiag import __version__

        return {"schema": 1, "kind": "lrdiag-report", "lrdiag": __version__, "paths": self.paths, "runs": entries,
                "errors": self.errors, "rules": self._rules, "recommendations": {}, "replays": None}


def tidy(runs: list[Run]) -> pd.DataFrame:
    """The long table of `runs`' series: each column one concatenation of the series' arrays, the names
    as categorical codes repeated per series, never a Python loop over points."""
    series = [(run.name, one) for run in runs for one in run.series.values()]
    lengths = np.array([len(one) for _, one in series], dtype=np.int64)

    def categorical(labels: list, categories: list | None = None) -> pd.Categorical:
        categories = categories if categories is not None else list(dict.fromkeys(labels))
        index = {label: code for code, label in enumerate(categories)}
        codes = np.array([index.get(label, -1) for label in labels], dtype=np.int32)
        return pd.Categorical.from_codes(np.repeat(codes, lengths), categories=categories)

    def joined(arrays: list[np.ndarray], dtype) -> np.ndarray:
        return np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)

    return pd.DataFrame({
        "run": categorical([name for name, _ in series]),
        "metric": categorical([one.tag for _, one in series]),
        "role": categorical([one.role for _, one in series], list(ROLES)),
        "step": joined([one.steps for _, one in series], np.int64),
        "value": joined([one.values for _, one in series], np.float64),
        "wall_time": joined([one.wall_times if one.wall_times is not None else np.full(len(one), np.nan)
                             for _, one in series], np.float64),
    }, copy=False)


def _read_one(spec: RunSpec, verify: bool, roles: dict[str, str]) -> dict:
    return {"run": ingest.read_run(spec, verify=verify, roles=roles)}


def _analyze_run(spec: RunSpec, engine, roles: dict[str, str], verify: bool, run_points: int) -> dict | str:
    """One run's output entry with its display curves (what `lrdiag report` holds), read once for both;
    or why none of its files could be read."""
    from lrdiag.output import run_entry
    from lrdiag.pipeline import unread_error
    from lrdiag.render.report import curves

    run = ingest.read_run(spec, verify=verify, roles=roles)
    if unread := unread_error(run):
        return unread
    entry = run_entry(run, engine.run(run))
    entry["curves"] = curves(run, run_points)
    return entry


def _arguments(paths: Paths) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    arguments = [os.fspath(path) for path in paths]
    if not arguments:
        raise LrdiagError("no paths given: name at least one folder, log file or store")
    return arguments


def _specs(paths: Paths) -> list[RunSpec]:
    from lrdiag.pipeline import specs_or_raise

    return specs_or_raise(_arguments(paths))


def _role_map(roles: Mapping[str, str] | None, project: bool = True) -> dict[str, str]:
    """{tag: role}, checked as the config's roles are; with the project's config roles under it."""
    from lrdiag.config import project_config

    if roles is not None and not isinstance(roles, Mapping):
        raise LrdiagError(f"roles must be a mapping of tag to role, e.g. {{'my/valid_metric': 'val_loss'}}; "
                          f"got {roles!r}")
    given = parse_role_overrides([f"{role}={tag}" for tag, role in (roles or {}).items()], "roles")
    return {**project_config(None).roles, **given} if project else given


def _codes(codes: Codes) -> list[str] | None:
    if codes is None:
        return None
    items = codes.split(",") if isinstance(codes, str) else list(codes)
    return [item.strip() for item in items if item.strip()]


def _warn_problems(problems: list[dict], kept_in: str) -> None:
    """One ReadWarning for the caller's line: the first problem, and how many more `kept_in` holds."""
    if not problems:
        return
    first = problems[0]
    where = f"{first['where']}: " if first["where"] else ""
    more = f" (and {_plural(len(problems) - 1, 'more problem')}, all in {kept_in})" if len(problems) > 1 else ""
    warnings.warn(ReadWarning(f"{first['run']}: {first['file']}: {where}{first['message']}{more}"), stacklevel=3)


def _without_curves(entry: dict) -> dict:
    return {key: value for key, value in entry.items() if key != "curves"}


def _findings_table(findings: pd.DataFrame) -> str:
    head = "".join(f"<th>{name}</th>" for name in ("run", "severity", "rule", "metric", "steps", "message"))
    rows = []
    for finding in findings.head(INLINE_FINDINGS).itertuples(index=False):
        steps = (f"{finding.step_start}" if finding.step_start == finding.step_end
                 else f"{finding.step_start}–{finding.step_end}")
        cells = (finding.run, finding.severity, f"{finding.rule} {finding.name}", finding.metric, steps, finding.message)
        rows.append("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(cell))}</td>" for cell in cells)
                    + "</tr>")
    more = (f"<p>and {len(findings) - INLINE_FINDINGS} more in <code>.findings</code></p>"
            if len(findings) > INLINE_FINDINGS else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 or noun == 'info' else 's'}"
