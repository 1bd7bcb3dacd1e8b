"""User configuration (`[tool.lrdiag]` in pyproject.toml, or lrdiag.toml) and the engine it selects.

    [tool.lrdiag]
    select = ["LRD1", "lr.no-warmup"]   # codes, names, aliases or code prefixes; default: all
    ignore = ["LRD102"]                 # wins over select
    rule-dirs = ["ci/rules"]            # more rule folders, relative to this file
    fail-on = "warning"                 # error | warning | never
    fail-on-problems = true             # analyze exits 1 when a log was damaged (default false)
    roles = { "my/valid_metric" = "val_loss" }

    [tool.lrdiag.rules.LRD101]          # by code, name or alias
    severity = "error"
    z = 12.0                            # fewer, bigger spikes

Command-line flags override the file: --select replaces `select`, --ignore adds to `ignore`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lrdiag.detect.engine import Engine
from lrdiag.detect.rulefile import SEVERITIES, Rule, builtin_rules_dir, load_rules, raise_errors, shown
from lrdiag.errors import LrdiagError
from lrdiag.series.roles import parse_role_overrides

FAIL_ON = ("error", "warning", "never")
# `rules` holds the per-rule tables, so the extra rule folders need a key of their own.
KEYS = ("select", "ignore", "rule-dirs", "fail-on", "fail-on-problems", "roles", "rules")


@dataclass
class Config:
    path: Path | None = None
    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)
    rule_dirs: list[Path] = field(default_factory=list)
    fail_on: str | None = None
    fail_on_problems: bool = False
    roles: dict[str, str] = field(default_factory=dict)  # tag -> role
    rules: dict[str, dict] = field(default_factory=dict)  # code, name or alias -> {severity, params}

    def section(self, table: str = "") -> str:
        """The TOML table a key is in, as the file spells it: `tool.lrdiag.rules.LRD101` or `rules.LRD101`."""
        base = "tool.lrdiag" if self.path is not None and self.path.name == "pyproject.toml" else ""
        return ".".join(part for part in (base, table) if part)

    def where(self, key: str, table: str = "") -> str:
        """How messages name a key: `pyproject.toml: [tool.lrdiag] select`, `lrdiag.toml: [rules.LRD101] z`."""
        section = self.section(table)
        parts = [f"{shown(self.path)}:" if self.path else "", f"[{section}]" if section else "", key]
        return " ".join(part for part in parts if part)


def find_config(start: Path) -> Path | None:
    """The first lrdiag.toml, or pyproject.toml with a [tool.lrdiag] table, from `start` upwards."""
    for folder in [start, *start.parents]:
        if (folder / "lrdiag.toml").is_file():
            return folder / "lrdiag.toml"
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "lrdiag" in _read(pyproject).get("tool", {}):
            return pyproject
    return None


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LrdiagError(f"{shown(path)}: config file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise LrdiagError(f"{shown(path)}: cannot read config: {error}") from None


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def load_config(path: Path | None) -> Config:
    """The config in `path` (None: the defaults), its keys and types checked; rule codes are
    checked by build_engine, once the rules are loaded."""
    config = Config(path)
    if path is None:
        return config
    data = _read(path)
    table = data.get("tool", {}).get("lrdiag", {}) if path.name == "pyproject.toml" else data
    if not isinstance(table, dict):
        raise LrdiagError(f"{shown(path)}: [tool.lrdiag] must be a table, got {table!r}")
    errors = [f"{config.where(key)}: unknown key{_did_you_mean(key, KEYS)}; expected one of {', '.join(KEYS)}"
              for key in sorted(set(table) - set(KEYS))]
    for key in ("select", "ignore", "rule-dirs"):
        if key in table and not _strings(table[key]):
            errors.append(f"{config.where(key)}: must be a list of strings, got {table[key]!r}")
    if _strings(table.get("select")):
        config.select = table["select"]
    if _strings(table.get("ignore")):
        config.ignore = table["ignore"]
    for folder in table.get("rule-dirs", []) if _strings(table.get("rule-dirs")) else []:
        config.rule_dirs.append(path.parent / folder)
        if not config.rule_dirs[-1].is_dir():
            errors.append(f"{config.where('rule-dirs')}: no such folder {folder!r} (relative to {shown(path.parent)})")
    fail_on = table.get("fail-on")
    if fail_on is not None and fail_on not in FAIL_ON:
        errors.append(f"{config.where('fail-on')}: must be one of {', '.join(FAIL_ON)}, got {fail_on!r}")
    else:
        config.fail_on = fail_on
    fail_on_problems = table.get("fail-on-problems", False)
    if not isinstance(fail_on_problems, bool):
        errors.append(f"{config.where('fail-on-problems')}: must be true or false, got {fail_on_problems!r}")
    else:
        config.fail_on_problems = fail_on_problems
    roles = table.get("roles", {})
    if not isinstance(roles, dict) or not all(isinstance(role, str) for role in roles.values()):
        errors.append(f"{config.where('roles')}: must be a table of \"tag\" = \"role\", got {roles!r}")
    else:
        try:
            pairs = [f"{role}={tag}" for tag, role in roles.items()]
            config.roles = parse_role_overrides(pairs, config.where("roles"))
        except LrdiagError as error:
            errors.append(str(error))
    per_rule = table.get("rules", {})
    if not isinstance(per_rule, dict) or not all(isinstance(options, dict) for options in per_rule.values()):
        example = config.section("rules.LRD101")
        errors.append(f"{config.where('rules')}: must hold one table per rule, e.g. [{example}]")
    else:
        config.rules = per_rule
    raise_errors(errors)
    return config


def project_config(config_path: Path | None) -> Config:
    """The config in `config_path`, or the one found from the current folder up (or the defaults)."""
    return load_config(config_path or find_config(Path.cwd()))


def project_setup(config_path: Path | None, roles: tuple[str, ...] | list[str] = (), select: list[str] | None = None,
                  ignore: list[str] | None = None,
                  rule_dirs: list[Path] | tuple = ()) -> tuple[Config, Engine, dict[str, str]]:
    """The project's config, its engine with the command line's --select, --ignore and --rules, and its roles
    with the command line's --role on top: what `lrdiag analyze` runs, for every command that reads runs."""
    config = project_config(config_path)
    return (config, build_engine(config, select, ignore, rule_dirs),
            {**config.roles, **parse_role_overrides(roles, "--role")})


def rule_set(config: Config, rule_dirs: list[Path] | tuple = ()) -> list[Rule]:
    """The built-in rules plus those in the config's and the command line's rule folders."""
    return load_rules([builtin_rules_dir(), *config.rule_dirs, *rule_dirs])


def build_engine(config: Config, select: list[str] | None = None, ignore: list[str] | None = None,
                 rule_dirs: list[Path] | tuple = ()) -> Engine:
    """The engine for the rules that the config and the command line select, with their options;
    every unknown rule, option or bad value reported at once, naming where it came from."""
    rules = rule_set(config, rule_dirs)
    errors: list[str] = []
    chosen = {rule.code for rule in rules}
    if config.select is not None:
        chosen = _pick(rules, config.select, config.where("select"), errors)
    if select is not None:
        chosen = _pick(rules, select, "--select", errors)
    chosen -= _pick(rules, config.ignore, config.where("ignore"), errors)
    chosen -= _pick(rules, ignore or [], "--ignore", errors)
    severities: dict[str, str] = {}
    params: dict[str, dict] = {}
    for selector, options in config.rules.items():
        rule = next((rule for rule in rules if selector in rule.selectors()), None)
        table = f"rules.{selector}"
        if rule is None:
            errors.append(f"{config.where('', table)}: unknown rule {selector!r}{_near_rule(selector, rules)}")
            continue
        for key, value in options.items():
            where = config.where(key, table)
            if key == "severity":
                if value in SEVERITIES:
                    severities[rule.code] = value
                else:
                    errors.append(f"{where}: must be one of {', '.join(SEVERITIES)}, got {value!r}")
            elif key not in rule.specs:
                known = ["severity", *rule.specs]
                errors.append(f"{where}: {rule.code} has no option {key!r}{_did_you_mean(key, known)}; "
                              f"its options: {', '.join(known)}")
            elif problem := rule.specs[key].problem(rule.code, value):
                errors.append(f"{where}: {problem}")
            else:
                params.setdefault(rule.code, {})[key] = rule.specs[key].coerce(value)
    raise_errors(errors)
    return Engine(rules, chosen, severities, params)


def _matches(selector: str, rule: Rule) -> bool:
    """A code, name or alias; a code prefix (LRD1); a name prefix up to a dot (loss)."""
    return (selector in rule.selectors() or rule.code.startswith(selector)
            or rule.name.startswith(selector + "."))


def _pick(rules: list[Rule], selectors: list[str], where: str, errors: list[str]) -> set[str]:
    for selector in selectors:
        if not any(_matches(selector, rule) for rule in rules):
            errors.append(f"{where}: unknown rule {selector!r}{_near_rule(selector, rules)}")
    return {rule.code for rule in rules if any(_matches(selector, rule) for selector in selectors)}


def _near_rule(selector: str, rules: list[Rule]) -> str:
    """A near name for a mistyped one; codes are not guessed (LRD109 is not 'almost' LRD101)."""
    if selector[:1].isupper():
        return ""
    return _did_you_mean(selector, [name for rule in rules for name in rule.selectors() if not name[:1].isupper()])


def _did_you_mean(word: str, options) -> str:
    import difflib  # only for a config mistake: not at every start
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
