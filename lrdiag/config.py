"""User configuration: `[tool.lrdiag]` in pyproject.toml or an lrdiag.toml, loaded strictly.

    [tool.lrdiag]
    select = ["LRD1", "lr.no-warmup"]     # codes, names, aliases or code prefixes
    ignore = ["LRD102"]
    extra-rules = ["ci/rules"]            # more rule folders, relative to this file
    fail-on = "warning"                   # error | warning | never
    roles = { "my/valid_metric" = "val_loss" }

    [tool.lrdiag.rules.LRD101]
    severity = "error"
    z = 10.0
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lrdiag.detect.engine import Engine
from lrdiag.detect.rulefile import SEVERITIES, Rule, builtin_rules_dir, load_rules
from lrdiag.errors import LrdiagError
from lrdiag.series.roles import parse_role_overrides

FAIL_ON = ("error", "warning", "never")
_KEYS = {"select", "ignore", "extra-rules", "fail-on", "roles", "rules"}


@dataclass
class Config:
    origin: str = "defaults"
    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    extra_rules: list[Path] = field(default_factory=list)
    fail_on: str | None = None
    roles: dict[str, str] = field(default_factory=dict)
    rule_options: dict[str, dict] = field(default_factory=dict)


def find_config(start: Path) -> Path | None:
    """The first lrdiag.toml, or pyproject.toml with a [tool.lrdiag] table, from `start` upwards."""
    for folder in [start, *start.parents]:
        if (folder / "lrdiag.toml").is_file():
            return folder / "lrdiag.toml"
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                if "lrdiag" in tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}):
                    return pyproject
            except (OSError, tomllib.TOMLDecodeError):
                continue
    return None


def load_config(path: Path | None) -> Config:
    if path is None:
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LrdiagError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise LrdiagError(f"{path}: cannot read config: {error}") from None
    table = data.get("tool", {}).get("lrdiag", {}) if path.name == "pyproject.toml" else data
    origin = f"{path}: [tool.lrdiag]" if path.name == "pyproject.toml" else str(path)
    errors = [f"{origin}: unknown key {key!r}" for key in sorted(set(table) - _KEYS)]
    config = Config(origin=origin)
    for key in ("select", "ignore", "extra-rules"):
        value = table.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            errors.append(f"{origin}: {key} must be a list of strings, got {value!r}")
    config.select = table.get("select")
    config.ignore = list(table.get("ignore", []))
    config.extra_rules = [path.parent / folder for folder in table.get("extra-rules", [])]
    fail_on = table.get("fail-on")
    if fail_on is not None and fail_on not in FAIL_ON:
        errors.append(f"{origin}: fail-on must be one of {', '.join(FAIL_ON)}, got {fail_on!r}")
    config.fail_on = fail_on
    roles = table.get("roles", {})
    if not isinstance(roles, dict):
        errors.append(f"{origin}: roles must be a table of tag = role")
    else:
        try:
            config.roles = parse_role_overrides([f"{role}={tag}" for tag, role in roles.items()], f"{origin}: roles")
        except LrdiagError as error:
            errors.append(str(error))
    options = table.get("rules", {})
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        errors.append(f"{origin}: rules must hold one table per rule, e.g. [tool.lrdiag.rules.LRD101]")
    else:
        config.rule_options = options
    if errors:
        raise LrdiagError("\n".join(errors))
    return config


def _matches(selector: str, rule: Rule) -> bool:
    return (selector in (rule.code, rule.name, *rule.aliases) or rule.code.startswith(selector)
            or rule.name.startswith(selector + "."))


def _pick(rules: list[Rule], selectors: list[str], origin: str) -> set[str]:
    unknown = [s for s in selectors if not any(_matches(s, rule) for rule in rules)]
    if unknown:
        raise LrdiagError(f"{origin}: unknown rule {', '.join(map(repr, unknown))} "
                          f"(see `lrdiag rules` for the codes and names)")
    return {rule.code for rule in rules if any(_matches(s, rule) for s in selectors)}


def _resolve(rules: list[Rule], selector: str) -> Rule | None:
    return next((rule for rule in rules if selector in (rule.code, rule.name, *rule.aliases)), None)


def build_engine(config: Config, select: list[str] | None = None, ignore: list[str] | None = None,
                 extra_rules: list[Path] | None = None) -> Engine:
    """The engine for the rules the config and the command line select, with their options."""
    rules = load_rules([builtin_rules_dir(), *config.extra_rules, *(extra_rules or [])])
    chosen = {rule.code for rule in rules}
    if select is not None:
        chosen = _pick(rules, select, "--select")
    elif config.select is not None:
        chosen = _pick(rules, config.select, f"{config.origin}: select")
    chosen -= _pick(rules, config.ignore, f"{config.origin}: ignore")
    chosen -= _pick(rules, ignore or [], "--ignore")
    severities, params, errors = {}, {}, []
    for selector, options in config.rule_options.items():
        rule = _resolve(rules, selector)
        where = f"{config.origin}: rules.{selector}"
        if rule is None:
            errors.append(f"{where}: unknown rule {selector!r}")
            continue
        for key, value in options.items():
            if key == "severity":
                if value not in SEVERITIES:
                    errors.append(f"{where}: severity must be one of {', '.join(SEVERITIES)}, got {value!r}")
                severities[rule.code] = value
            elif key not in rule.params:
                errors.append(f"{where}: unknown option {key!r} (options: severity, {', '.join(rule.params) or 'none'})")
            else:
                problem = rule.params[key].problem(rule.code, value)
                if problem:
                    errors.append(f"{where}: {problem}")
                params.setdefault(rule.code, {})[key] = value
    if errors:
        raise LrdiagError("\n".join(errors))
    return Engine([rule for rule in rules if rule.code in chosen], severities, params)
