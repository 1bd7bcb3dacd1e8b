"""Views of the output models that several formats share: checks and findings as testcases, a run's headline losses."""

from __future__ import annotations

import re
from itertools import chain

from lrdiag.detect.finding import SEVERITY_RANK
from lrdiag.series.roles import rank

_LEVELS = {"error": "error", "warning": "warning", "info": "notice"}
# Control characters (C0, DEL, C1) and Unicode line breaks: a newline in a folder name or a JSON key
# would start a line of output of its own, which GitHub Actions runs as a workflow command (`::add-mask::`).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def inert(text: str) -> str:
    """`text` with every control character shown as its escape (`\\n`, `\\x1b`): one line, no terminal codes."""
    return _CONTROL.sub(lambda m: _ESCAPES.get(m[0]) or (f"\\x{ord(m[0]):02x}" if ord(m[0]) < 256
                                                         else f"\\u{ord(m[0]):04x}"), text)


def plural(count: int, noun: str) -> str:
    """`1 run`, `2 runs`, `0 runs`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def inert_doc(value, keep: tuple[str, ...] = ()):
    """An output model with every string in it, keys too, made inert; the values of keys in `keep` (lrdiag's
    own multi-line text, such as a candidate's code) are left as they are. A model with no control character
    in any string is itself (nearly always so: a copy would double a run of a million metrics)."""
    return _inert_copy(value, keep) if _holds_control(value) else value


def _inert_copy(value, keep: tuple[str, ...]):
    if isinstance(value, str):
        return inert(value)
    if isinstance(value, dict):
        return {(inert(key) if isinstance(key, str) else key): (item if key in keep else _inert_copy(item, keep))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_inert_copy(item, keep) for item in value]
    return value


def _holds_control(value) -> bool:
    """Whether a string in `value`, a key or a value at any depth, holds a control character. A level of the tree
    at a time, its strings joined and searched at once: a run of a million metrics holds eight million values,
    and a call a value would cost more than the rest of its analysis."""
    level = [value]
    while level:
        kinds = set(map(type, level))
        dicts, lists, strings = (_only(level, kinds, kind) for kind in (dict, list, str))
        keys = list(chain.from_iterable(dicts))
        try:
            keys_text = "".join(keys)
        except TypeError:  # a key that is a number or None
            keys_text = "".join(key for key in keys if isinstance(key, str))
        if _CONTROL.search("".join(strings)) or _CONTROL.search(keys_text):
            return True
        level = [*chain.from_iterable(map(dict.values, dicts)), *chain.from_iterable(lists)]
    return False


def _only(items: list, kinds: set[type], kind: type) -> list:
    """Those of `items` (of the types `kinds`) that are `kind`s: all, none, or looked for one by one."""
    if kinds == {kind}:
        return items
    if not any(issubclass(one, kind) for one in kinds):
        return []
    return [item for item in items if isinstance(item, kind)]


def is_gate(doc: dict) -> bool:
    return doc.get("kind") == "lrdiag-gate"


def cause(finding: dict) -> str:
    """`cause: data (a single step: ...)`: the likely cause detect/cause.py gave, with its first fact; '' if none."""
    said = finding.get("evidence", {}).get("cause")
    if not said:
        return ""
    facts = finding["evidence"].get("cause_evidence") or []
    fact = next((f["fact"] for f in facts if f.get("says") == said), facts[0]["fact"] if facts else "")
    return f"cause: {said}" + (f" ({fact})" if fact else "")


def incidents(run: dict) -> list[dict]:
    """The run's incidents; one a finding for a document written before incidents existed."""
    if "incidents" in run:
        return run["incidents"]
    return [{"id": i + 1, "category": f["category"], "severity": f["severity"], "step_start": f["step_start"],
             "step_end": f["step_end"], "metrics": [f["metric"]], "headline": i, "findings": [i]}
            for i, f in enumerate(run["findings"])]


def also_on(run: dict, incident: dict) -> str:
    """`also on: val_loss@150, loss_epoch@151–200`: the incident's findings other than its headline."""
    spots = [f"{f['metric']}@{where(f).split(' ', 1)[1]}" for i in incident["findings"] if i != incident["headline"]
             for f in [run["findings"][i]]]
    return "also on: " + ", ".join(spots) if spots else ""


def where(finding: dict) -> str:
    start, end = finding["step_start"], finding["step_end"]
    return f"step {start}" if start == end else f"steps {start}–{end}"


def suites(doc: dict, fail_on: str = "error") -> list[dict]:
    """[{"name", "cases": [{"name", "classname", "status", "level", "title", "message", "file", "line"}]}]:
    a gate's checks, or each run's incidents (failed when at or above `fail_on`; the headline finding, the
    others as "also on", its likely cause) and read problems."""
    if is_gate(doc):
        return [{"name": f"lrdiag gate {gate['run']}",
                 "cases": [_case(check["name"], f"lrdiag.gate.{gate['run']}", check["status"],
                                 {"failed": "error", "skipped": "notice"}.get(check["status"]),
                                 f"lrdiag gate: {check['name']}", check["message"], gate["file"])
                           for check in gate["checks"]]} for gate in doc["gates"]] + _error_suite(doc)
    worst = SEVERITY_RANK.get(fail_on, -1)  # never: nothing fails
    out = []
    for run in doc["runs"]:
        file = run["files"][0] if run["files"] else run["run"]
        cases = [_case(f"{f['rule']} {f['name']} {f['metric']} {where(f)}", f"lrdiag.{run['run']}",
                       "failed" if SEVERITY_RANK[f["severity"]] <= worst else "passed", _LEVELS[f["severity"]],
                       f"{f['rule']} {f['name']} ({f['metric']})"
                       + (f" and {plural(len(inc['metrics']) - 1, 'more metric')}" if len(inc["metrics"]) > 1 else ""),
                       "\n".join(part for part in (f"{where(f)}: {f['message']}", also_on(run, inc), cause(f)) if part),
                       file)
                 for inc in incidents(run) for f in [run["findings"][inc["headline"]]]]
        cases += [_case(f"read problem {p['file']} {p['where']}".rstrip(), f"lrdiag.{run['run']}", "passed", "warning",
                        "lrdiag: damaged log", f"{p['where'] + ': ' if p['where'] else ''}{p['message']}", p["file"],
                        _line(p["where"])) for p in run["problems"]]
        if not cases:
            cases.append(_case("no findings", f"lrdiag.{run['run']}", "passed", None, "", "no findings", file))
        out.append({"name": run["run"], "cases": cases})
    return out + _error_suite(doc)


def _case(name, classname, status, level, title, message, file, line=None) -> dict:
    return {"name": name, "classname": classname, "status": status, "level": level, "title": title,
            "message": message, "file": file, "line": line}


def _line(where: str) -> int | None:
    return int(where[5:]) if where.startswith("line ") and where[5:].isdigit() else None


def _error_suite(doc: dict) -> list[dict]:
    if not doc.get("errors"):
        return []
    return [{"name": "lrdiag errors", "cases": [_case(f"error {i + 1}", "lrdiag.errors", "failed", "error",
                                                      "lrdiag error", error, "") for i, error in enumerate(doc["errors"])]}]


def headline(run: dict, role: str = "val_loss") -> dict | None:
    """The run's main metric of a role (the plain total loss before components), as in Run.primary."""
    found = [(rank(tag, role), tag) for tag, metric in run["metrics"].items() if metric["role"] == role]
    if not found:
        return None
    tag = min(found)[1]
    return {"tag": tag, **run["metrics"][tag]}


def severity_counts(run: dict) -> dict[str, int]:
    counts = {severity: 0 for severity in SEVERITY_RANK}
    for finding in run["findings"]:
        counts[finding["severity"]] += 1
    return counts
