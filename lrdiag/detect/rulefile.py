"""Rule files (`rules/*.toml`): loaded strictly, every error reported at once.

Like Prometheus' rulefmt: an unknown key, a missing one, a bad type or an out-of-range value
is an error naming the file, the rule and the key; all of a load's errors are raised together
as one LrdiagError, one line each. Parameter errors read like scikit-learn's.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lrdiag.errors import LrdiagError
from lrdiag.series.roles import ROLES

CATEGORIES = ("spike", "oscillation", "stall", "train_val_divergence", "nonfinite", "explosion", "lr_schedule")
SEVERITIES = ("error", "warning", "info")
DOC_HEADINGS = {"what": "What it detects", "why": "Why it matters", "example": "Example", "fix": "What to do",
                "options": "Options"}
_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str}
_RULE_KEYS = {"code", "name", "category", "detector", "roles", "severity", "message", "aliases", "params", "docs"}
_REQUIRED = _RULE_KEYS - {"aliases", "params"}
_PARAM_KEYS = {"default", "type", "min", "max", "choices", "doc"}
ENTRY_POINT_GROUP = "lrdiag.detectors"


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: object
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple = ()

    def problem(self, code: str, value) -> str | None:
        """The scikit-learn style message when `value` does not fit, else None."""
        expected = _TYPES[self.type]
        wrong_type = not isinstance(value, expected) or (self.type != "bool" and isinstance(value, bool))
        low = "-inf" if self.min is None else self.min
        high = "inf" if self.max is None else self.max
        kind = {"int": "an int", "float": "a float", "bool": "a bool", "str": "a str"}[self.type]
        ranged = self.type in ("int", "float") and (self.min is not None or self.max is not None)
        wanted = f"{kind} in the range [{low}, {high}{']' if self.max is not None else ')'}" if ranged else kind
        if self.choices:
            wanted = f"one of {list(self.choices)}"
        message = f"The {self.name!r} parameter of {code} must be {wanted}. Got {value!r} instead."
        if wrong_type or (self.choices and value not in self.choices):
            return message
        if ranged and ((self.min is not None and value < self.min) or (self.max is not None and value > self.max)):
            return message
        return None


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    category: str
    detector: str
    roles: tuple[str, ...]
    severity: str
    message: str
    docs: dict = field(compare=False, hash=False)
    params: dict = field(default_factory=dict, compare=False, hash=False)  # name -> Param
    aliases: tuple[str, ...] = ()
    path: str = ""

    @property
    def defaults(self) -> dict:
        return {name: param.default for name, param in self.params.items()}


def builtin_rules_dir() -> Path:
    """The rules shipped in the wheel (`lrdiag/_rules`), or the repository's `rules/` when
    running from a checkout or an editable install."""
    packaged = Path(__file__).resolve().parents[1] / "_rules"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "rules"


def detector_function(name: str):
    """A built-in detector module's `detect`, or a plug-in's from the entry-point group."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            return entry.load()
    try:
        module = importlib.import_module(f"lrdiag.detect.{name}")
    except ModuleNotFoundError:
        return None
    return getattr(module, "detect", None)


def _detector_exists(name: str) -> bool:
    if any(entry.name == name for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)):
        return True
    return importlib.util.find_spec(f"lrdiag.detect.{name}") is not None if name.isidentifier() else False


def load_rules(dirs: list[Path]) -> list[Rule]:
    rules: list[Rule] = []
    errors: list[str] = []
    for folder in dirs:
        folder = Path(folder)
        if not folder.is_dir():
            errors.append(f"{folder}: rules folder not found")
            continue
        for path in sorted(folder.glob("*.toml")):
            rule = _load_one(path, errors)
            if rule is not None:
                rules.append(rule)
    seen: dict[str, str] = {}
    for rule in rules:
        for key in (rule.code, rule.name, *rule.aliases):
            if key in seen:
                errors.append(f"{rule.path}: rule {rule.code}: {key!r} is already used by {seen[key]}")
            seen[key] = f"{rule.code} ({rule.path})"
    if errors:
        raise LrdiagError("\n".join(errors))
    return sorted(rules, key=lambda rule: rule.code)


def _load_one(path: Path, errors: list[str]) -> Rule | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        errors.append(f"{path}: cannot read rule file: {error}")
        return None
    code = data.get("code", "?")
    where = f"{path}: rule {code}"
    before = len(errors)
    for key in sorted(set(data) - _RULE_KEYS):
        errors.append(f"{where}: unknown key {key!r}")
    for key in sorted(_REQUIRED - set(data)):
        errors.append(f"{where}: missing key {key!r}")
    for key in ("code", "name", "category", "detector", "severity", "message"):
        if key in data and not isinstance(data[key], str):
            errors.append(f"{where}: {key!r} must be a string, got {data[key]!r}")
    if isinstance(data.get("category"), str) and data["category"] not in CATEGORIES:
        errors.append(f"{where}: category {data['category']!r} is not one of {', '.join(CATEGORIES)}")
    if isinstance(data.get("severity"), str) and data["severity"] not in SEVERITIES:
        errors.append(f"{where}: severity {data['severity']!r} is not one of {', '.join(SEVERITIES)}")
    roles = data.get("roles", [])
    if not isinstance(roles, list) or not roles or any(role not in ROLES for role in roles):
        errors.append(f"{where}: roles must be a non-empty list of {', '.join(ROLES)}, got {roles!r}")
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(alias, str) for alias in aliases):
        errors.append(f"{where}: aliases must be a list of strings, got {aliases!r}")
    if isinstance(data.get("detector"), str) and not _detector_exists(data["detector"]):
        errors.append(f"{where}: detector {data['detector']!r} is neither built in (lrdiag/detect/) nor "
                      f"registered in the {ENTRY_POINT_GROUP!r} entry-point group")
    docs = data.get("docs", {})
    if not isinstance(docs, dict):
        errors.append(f"{where}: docs must be a table")
        docs = {}
    for key in sorted(set(docs) - set(DOC_HEADINGS)):
        errors.append(f"{where}: docs: unknown key {key!r}")
    for key in DOC_HEADINGS:
        if not isinstance(docs.get(key), str) or not docs.get(key, "").strip():
            errors.append(f"{where}: docs: missing {key!r} ({DOC_HEADINGS[key]})")
    params = _params(data.get("params", {}), code, where, errors)
    if len(errors) > before:
        return None
    return Rule(data["code"], data["name"], data["category"], data["detector"], tuple(roles), data["severity"],
                data["message"], docs, params, tuple(aliases), str(path))


def _params(table, code: str, where: str, errors: list[str]) -> dict:
    if not isinstance(table, dict):
        errors.append(f"{where}: params must be a table")
        return {}
    params = {}
    for name, spec in table.items():
        if not isinstance(spec, dict):
            errors.append(f"{where}: params.{name} must be a table with default, type and doc")
            continue
        for key in sorted(set(spec) - _PARAM_KEYS):
            errors.append(f"{where}: params.{name}: unknown key {key!r}")
        for key in ("default", "type", "doc"):
            if key not in spec:
                errors.append(f"{where}: params.{name}: missing key {key!r}")
        if spec.get("type") not in _TYPES:
            errors.append(f"{where}: params.{name}: type must be one of {', '.join(_TYPES)}, got {spec.get('type')!r}")
            continue
        if "default" not in spec or "doc" not in spec:
            continue
        param = Param(name, spec["type"], spec["default"], spec["doc"], spec.get("min"), spec.get("max"),
                      tuple(spec.get("choices", ())))
        problem = param.problem(code, param.default)
        if problem:
            errors.append(f"{where}: params.{name}: default: {problem}")
        params[name] = param
    return params
