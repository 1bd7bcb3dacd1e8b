"""Rule files (`rules/*.toml`) loaded strictly: every error, naming file, rule and key, reported at once."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lrdiag.errors import LrdiagError
from lrdiag.series.roles import ROLES

CATEGORIES = ("spike", "oscillation", "stall", "train_val_divergence", "nonfinite", "explosion", "lr_schedule")
SEVERITIES = ("error", "warning", "info")
DOC_HEADINGS = {"what": "What it detects", "why": "Why it matters", "example": "Example", "fix": "What to do",
                "options": "Options"}
ENTRY_POINT_GROUP = "lrdiag.detectors"

_REQUIRED = {"code", "name", "category", "detector", "roles", "severity", "message", "docs"}
_OPTIONAL = {"aliases", "params"}
_PARAM_KEYS = {"default", "type", "doc", "min", "max", "choices"}
_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str}
_ARTICLE = {"int": "an int", "float": "a float", "bool": "a bool", "str": "a str"}
# Codes are selected by prefix (LRD1 = the loss rules), so they must be letters then digits.
_CODE_RE = re.compile(r"[A-Z]+[0-9]+")
_NAME_RE = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+")


@dataclass(frozen=True)
class Param:
    """A rule parameter's spec: its type, default, bounds or choices, and why the default is what it is."""

    name: str
    type: str
    default: object
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple = ()

    def expected(self) -> str:
        """What a value must be, in scikit-learn's words: 'an int in the range [3, inf)'."""
        if self.choices:
            return f"{_ARTICLE[self.type]} among {{{', '.join(map(repr, self.choices))}}}"
        if self.min is None and self.max is None:
            return _ARTICLE[self.type]
        low = "(-inf" if self.min is None else f"[{self.min}"
        high = "inf)" if self.max is None else f"{self.max}]"
        return f"{_ARTICLE[self.type]} in the range {low}, {high}"

    def problem(self, code: str, value) -> str | None:
        """The scikit-learn style message when `value` does not fit this spec, else None."""
        # bool is an int subclass in Python, but `window = true` is a mistake, not 1.
        fits = isinstance(value, _TYPES[self.type]) and (self.type == "bool" or not isinstance(value, bool))
        if fits and self.choices:
            fits = value in self.choices
        if fits and self.min is not None:
            fits = value >= self.min
        if fits and self.max is not None:
            fits = value <= self.max
        if fits:
            return None
        return f"The {self.name!r} parameter of {code} must be {self.expected()}. Got {value!r} instead."

    def coerce(self, value):
        """TOML writes `z = 8` for a float parameter: hand the detector 8.0."""
        return float(value) if self.type == "float" else value


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    category: str
    detector: str
    roles: tuple[str, ...]
    severity: str
    message: str
    docs: dict = field(compare=False, hash=False)  # DOC_HEADINGS key -> text
    params: dict = field(compare=False, hash=False)  # name -> default value
    specs: dict = field(compare=False, hash=False)  # name -> Param
    aliases: tuple[str, ...] = ()
    path: str = ""

    def selectors(self) -> tuple[str, ...]:
        """Everything that names this rule exactly: code, name, old codes and names."""
        return (self.code, self.name, *self.aliases)


def builtin_rules_dir() -> Path:
    """The rules shipped in the wheel (`lrdiag/_rules`), else the checkout's top-level `rules/`
    (running from the repository or an editable install)."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "_rules"
    return packaged if packaged.is_dir() else package.parent / "rules"


def find_detector(name: str) -> Callable | None:
    """The built-in `lrdiag.detect.<name>.detect`, else the callable registered as `name` in the
    `lrdiag.detectors` entry-point group, else None. Loading a plug-in may raise."""
    # Built-ins first, so that an installed plug-in cannot silently replace one.
    if name.isidentifier() and importlib.util.find_spec(f"lrdiag.detect.{name}") is not None:
        detect = getattr(importlib.import_module(f"lrdiag.detect.{name}"), "detect", None)
        if callable(detect):
            return detect
    from importlib.metadata import entry_points  # only for a detector lrdiag does not ship: 10-30 ms at start

    for entry in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return entry.load()
    return None


def shown(path: Path | str) -> str:
    """A path as messages show it: relative to the current folder when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def raise_errors(errors: list[str]) -> None:
    if len(errors) == 1:
        raise LrdiagError(errors[0])
    if errors:
        raise LrdiagError(f"{len(errors)} errors:\n" + "\n".join(f"  {error}" for error in errors))


def load_rules(dirs: list[Path | str]) -> list[Rule]:
    """Every `*.toml` rule in `dirs`, in code order; an LrdiagError listing all errors if any."""
    rules: list[Rule] = []
    errors: list[str] = []
    seen_dirs = set()
    for folder in map(Path, dirs):
        if folder.resolve() in seen_dirs:
            continue  # `--rules rules` in a checkout names the built-in folder again
        seen_dirs.add(folder.resolve())
        if not folder.is_dir():
            errors.append(f"{shown(folder)}: no such rules folder")
            continue
        for path in sorted(folder.glob("*.toml")):
            rule = _load_rule(path, errors)
            if rule is not None:
                rules.append(rule)
    owner: dict[str, Rule] = {}
    for rule in rules:
        for selector in dict.fromkeys(rule.selectors()):
            if selector in owner:
                errors.append(f"{shown(rule.path)}: rule {rule.code}: {selector!r} is already used by "
                              f"{owner[selector].code} in {shown(owner[selector].path)}")
            else:
                owner[selector] = rule
    raise_errors(errors)
    return sorted(rules, key=lambda rule: rule.code)


def _load_rule(path: Path, errors: list[str]) -> Rule | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        errors.append(f"{shown(path)}: cannot read rule file: {error}")
        return None
    code = data.get("code")
    where = f"{shown(path)}: rule {code}" if isinstance(code, str) else shown(path)
    before = len(errors)

    def fail(key: str, message: str) -> None:
        errors.append(f"{where}: {key}: {message}")

    for key in sorted(set(data) - _REQUIRED - _OPTIONAL):
        fail(key, "unknown key")
    for key in sorted(_REQUIRED - set(data)):
        fail(key, "missing key")
    for key in ("code", "name", "category", "detector", "severity", "message"):
        if key in data and not isinstance(data[key], str):
            fail(key, f"must be a string, got {data[key]!r}")
    if isinstance(code, str) and not _CODE_RE.fullmatch(code):
        fail("code", f"{code!r} must be capital letters then digits, e.g. 'LRD101'")
    if isinstance(data.get("name"), str) and not _NAME_RE.fullmatch(data["name"]):
        fail("name", f"{data['name']!r} must be dotted lower-case words, e.g. 'loss.spike'")
    for key, allowed in (("category", CATEGORIES), ("severity", SEVERITIES)):
        if isinstance(data.get(key), str) and data[key] not in allowed:
            fail(key, f"{data[key]!r} is not one of {', '.join(allowed)}")
    if isinstance(data.get("message"), str):
        try:
            list(string.Formatter().parse(data["message"]))
        except ValueError as error:
            fail("message", f"not a valid str.format template: {error}")
    roles = data.get("roles", [])
    if not isinstance(roles, list) or not roles:
        fail("roles", f"must be a non-empty list of roles, got {roles!r}")
        roles = []
    for role in roles:
        if role not in ROLES:
            fail("roles", f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(alias, str) for alias in aliases):
        fail("aliases", f"must be a list of strings, got {aliases!r}")
        aliases = []
    docs = _docs(data.get("docs", {}), fail)
    detect = _detector(data.get("detector"), fail)
    defaults, specs = _params(data.get("params", {}), code if isinstance(code, str) else path.stem, detect, fail,
                              errors)
    if len(errors) > before:
        return None
    return Rule(code, data["name"], data["category"], data["detector"], tuple(roles), data["severity"],
                data["message"], docs, defaults, specs, tuple(aliases), str(path))


def _docs(docs, fail) -> dict:
    if not isinstance(docs, dict):
        fail("docs", "must be a table with the keys " + ", ".join(DOC_HEADINGS))
        return {}
    for key in sorted(set(docs) - set(DOC_HEADINGS)):
        fail(f"docs.{key}", f"unknown key; expected {', '.join(DOC_HEADINGS)}")
    for key, heading in DOC_HEADINGS.items():
        if not isinstance(docs.get(key), str) or not docs[key].strip():
            fail(f"docs.{key}", f"missing the {heading!r} text")
    return docs


def _detector(name, fail) -> Callable | None:
    if not isinstance(name, str):
        return None
    try:
        detect = find_detector(name)
    except Exception as error:  # noqa: BLE001 - a detector that cannot import is one more rule error
        fail("detector", f"cannot load {name!r}: {type(error).__name__}: {error}")
        return None
    if detect is None:
        fail("detector", f"{name!r} is neither a built-in detector (lrdiag/detect/{name}.py) nor registered "
                         f"in the {ENTRY_POINT_GROUP!r} entry-point group")
    return detect


def _params(table, code: str, detect: Callable | None, fail, errors: list[str]) -> tuple[dict, dict]:
    if not isinstance(table, dict):
        fail("params", "must be a table of [params.<name>] tables")
        return {}, {}
    accepted = _keyword_names(detect)
    defaults, specs = {}, {}
    for name, spec in table.items():
        key = f"params.{name}"
        if not isinstance(spec, dict):
            fail(key, "must be a table with default, type and doc")
            continue
        before = len(errors)
        for extra in sorted(set(spec) - _PARAM_KEYS):
            fail(f"{key}.{extra}", "unknown key")
        for missing in ("default", "type", "doc"):
            if missing not in spec:
                fail(f"{key}.{missing}", "missing key")
        if not name.isidentifier():
            fail(key, "a parameter name must be a Python identifier (it is passed as a keyword)")
        elif accepted is not None and name not in accepted:
            fail(key, f"the detector takes no parameter {name!r}")
        if "doc" in spec and (not isinstance(spec["doc"], str) or not spec["doc"].strip()):
            fail(f"{key}.doc", "must say what the parameter does and why its default is what it is")
        kind = spec.get("type")
        if "type" in spec and kind not in _TYPES:
            fail(f"{key}.type", f"{kind!r} is not one of {', '.join(_TYPES)}")
            continue
        for bound in ("min", "max"):
            value = spec.get(bound)
            if value is not None and (kind not in ("int", "float") or isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                fail(f"{key}.{bound}", f"must be a number, and only for int and float parameters; got {value!r}")
        choices = spec.get("choices", [])
        if not isinstance(choices, list) or ("choices" in spec and not choices):
            fail(f"{key}.choices", f"must be a non-empty list, got {choices!r}")
        elif kind is not None:
            for choice in choices:
                if not isinstance(choice, _TYPES[kind]):
                    fail(f"{key}.choices", f"{choice!r} is not {_ARTICLE[kind]}")
        if len(errors) > before:
            continue
        param = Param(name, kind, spec["default"], spec["doc"], spec.get("min"), spec.get("max"), tuple(choices))
        problem = param.problem(code, param.default)
        if problem:
            fail(f"{key}.default", problem)
            continue
        defaults[name] = param.coerce(param.default)
        specs[name] = param
    return defaults, specs


def _keyword_names(detect: Callable | None) -> set[str] | None:
    """The keyword parameters a detector takes, or None when it takes any (**kwargs) or is unknown."""
    if detect is None:
        return None
    try:
        signature = inspect.signature(detect)
    except (TypeError, ValueError):
        return None
    parameters = list(signature.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
