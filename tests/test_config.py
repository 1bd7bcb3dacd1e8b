"""Config from `[tool.lrdiag]` or lrdiag.toml: selection, per-rule options, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrdiag.config import Config, build_engine, find_config, load_config
from lrdiag.detect.rulefile import builtin_rules_dir, load_rules
from lrdiag.errors import LrdiagError

BUILTIN_RULES = {rule.code: rule for rule in load_rules([builtin_rules_dir()])}
BUILTIN = list(BUILTIN_RULES)

ALIASED_RULE = '''
code = "TST901"
name = "test.nan"
aliases = ["TST001", "test.old-nan"]
category = "nonfinite"
detector = "nonfinite"
roles = ["train_loss"]
severity = "info"
message = "{metric} is NaN at step {step}"

[docs]
what = "w"
why = "y"
example = "e"
fix = "f"
options = "none"
'''


def pyproject(folder: Path, body: str) -> Path:
    path = folder / "pyproject.toml"
    path.write_text('[project]\nname = "someone"\n\n[tool.lrdiag]\n' + body)
    return path


def engine_codes(config: Config, **flags) -> list[str]:
    return [rule.code for rule in build_engine(config, **flags).rules]


def errors_of(call) -> str:
    with pytest.raises(LrdiagError) as caught:
        call()
    return str(caught.value)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # messages name config files relative to the current folder
    return tmp_path


def test_the_nearest_config_upwards_is_found_and_lrdiag_toml_wins_in_its_folder(tmp_path):
    deep = tmp_path / "project" / "runs" / "today"
    deep.mkdir(parents=True)
    (tmp_path / "project" / "pyproject.toml").write_text('[project]\nname = "x"\n')  # no [tool.lrdiag]: skipped
    (tmp_path / "lrdiag.toml").write_text("")
    assert find_config(deep) == tmp_path / "lrdiag.toml"
    pyproject(tmp_path / "project", 'select = ["LRD1"]\n')
    assert find_config(deep) == tmp_path / "project" / "pyproject.toml"
    (tmp_path / "project" / "lrdiag.toml").write_text("")
    assert find_config(deep) == tmp_path / "project" / "lrdiag.toml"


def test_no_config_selects_every_rule():
    assert engine_codes(load_config(None)) == BUILTIN


@pytest.mark.parametrize("selector", ["LRD105", "loss.nonfinite", "LRD10", "loss"])
def test_select_takes_a_code_a_name_or_a_prefix(in_tmp, selector):
    codes = engine_codes(load_config(pyproject(in_tmp, f'select = ["{selector}"]\n')))
    assert "LRD105" in codes and "LRD201" not in codes
    assert all(code.startswith("LRD10") for code in codes)


@pytest.mark.parametrize("selector", ["TST001", "test.old-nan", "test.nan"])
def test_an_alias_selects_its_rule(in_tmp, selector):
    (in_tmp / "extra").mkdir()
    (in_tmp / "extra" / "nan.toml").write_text(ALIASED_RULE)
    config = load_config(pyproject(in_tmp, f'rule-dirs = ["extra"]\nselect = ["{selector}"]\n'))
    assert engine_codes(config) == ["TST901"]


def test_ignore_wins_over_select_and_the_command_line_adds_to_it(in_tmp):
    config = load_config(pyproject(in_tmp, 'select = ["LRD1"]\nignore = ["loss.spike"]\n'))
    assert engine_codes(config) == [code for code in BUILTIN if code.startswith("LRD1") and code != "LRD101"]
    assert "LRD105" not in engine_codes(config, ignore=["LRD105"])


def test_select_on_the_command_line_replaces_the_configs(in_tmp):
    config = load_config(pyproject(in_tmp, 'select = ["LRD1"]\n'))
    assert engine_codes(config, select=["LRD201"]) == ["LRD201"]


def test_per_rule_severity_and_parameters_come_from_pyproject(in_tmp):
    config = load_config(pyproject(in_tmp, '[tool.lrdiag.rules.LRD101]\nseverity = "error"\nwindow = 7\nz = 10\n'))
    engine = build_engine(config)
    assert engine.severities == {"LRD101": "error"}
    assert engine.params["LRD101"]["window"] == 7
    assert engine.params["LRD101"]["z"] == 10.0 and isinstance(engine.params["LRD101"]["z"], float)


def test_per_rule_tables_take_names_in_lrdiag_toml(in_tmp):
    (in_tmp / "lrdiag.toml").write_text('fail-on = "warning"\n[rules."loss.spike"]\nseverity = "info"\n')
    config = load_config(in_tmp / "lrdiag.toml")
    assert config.fail_on == "warning"
    assert build_engine(config).severities == {"LRD101": "info"}


def test_roles_map_tags_to_roles(in_tmp):
    config = load_config(pyproject(in_tmp, '[tool.lrdiag.roles]\n"my/valid_metric" = "val_loss"\n'))
    assert config.roles == {"my/valid_metric": "val_loss"}


def test_an_unknown_code_in_select_says_which_file_and_key(in_tmp):
    config = load_config(pyproject(in_tmp, 'select = ["LRD999"]\n'))
    assert errors_of(lambda: build_engine(config)) == "pyproject.toml: [tool.lrdiag] select: unknown rule 'LRD999'"


def test_an_unknown_code_on_the_command_line_says_which_flag():
    assert errors_of(lambda: build_engine(Config(), select=["LRD999"])) == "--select: unknown rule 'LRD999'"
    assert errors_of(lambda: build_engine(Config(), ignore=["loss.spikes"])) == (
        "--ignore: unknown rule 'loss.spikes' (did you mean 'loss.spike'?)")


def test_every_unknown_rule_option_and_bad_value_is_reported_at_once(in_tmp):
    config = load_config(pyproject(in_tmp, 'ignore = ["LRD998"]\n'
                                           '[tool.lrdiag.rules.LRD101]\nwindow = 0\nwindoww = 5\nseverity = "fatal"\n'
                                           '[tool.lrdiag.rules.LRD999]\nseverity = "info"\n'))
    lines = errors_of(lambda: build_engine(config)).splitlines()
    assert lines[0] == "5 errors:"
    assert sorted(line.strip() for line in lines[1:]) == sorted([
        "pyproject.toml: [tool.lrdiag] ignore: unknown rule 'LRD998'",
        "pyproject.toml: [tool.lrdiag.rules.LRD101] window: "
        "The 'window' parameter of LRD101 must be an int in the range [3, inf). Got 0 instead.",
        "pyproject.toml: [tool.lrdiag.rules.LRD101] windoww: LRD101 has no option 'windoww' (did you mean 'window'?); "
        f"its options: severity, {', '.join(BUILTIN_RULES['LRD101'].specs)}",
        "pyproject.toml: [tool.lrdiag.rules.LRD101] severity: must be one of error, warning, info, got 'fatal'",
        "pyproject.toml: [tool.lrdiag.rules.LRD999]: unknown rule 'LRD999'",
    ])


def test_unknown_keys_and_bad_types_in_the_config_are_errors(in_tmp):
    (in_tmp / "lrdiag.toml").write_text('selct = ["LRD1"]\nignore = "LRD101"\nfail-on = "sometimes"\n'
                                        'rule-dirs = ["missing"]\n')
    message = errors_of(lambda: load_config(in_tmp / "lrdiag.toml"))
    assert "lrdiag.toml: selct: unknown key (did you mean 'select'?)" in message
    assert "lrdiag.toml: ignore: must be a list of strings, got 'LRD101'" in message
    assert "lrdiag.toml: fail-on: must be one of error, warning, never, got 'sometimes'" in message
    assert "lrdiag.toml: rule-dirs: no such folder 'missing'" in message


def test_rule_dirs_are_relative_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "ci" / "rules").mkdir(parents=True)
    (tmp_path / "ci" / "rules" / "nan.toml").write_text(ALIASED_RULE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(pyproject(tmp_path, 'rule-dirs = ["ci/rules"]\n'))
    assert "TST901" in engine_codes(config)


def test_a_config_file_that_is_not_toml_is_one_error(in_tmp):
    (in_tmp / "lrdiag.toml").write_text("select = [\n")
    assert errors_of(lambda: load_config(in_tmp / "lrdiag.toml")).startswith("lrdiag.toml: cannot read config:")
    assert errors_of(lambda: load_config(in_tmp / "absent.toml")) == "absent.toml: config file not found"
