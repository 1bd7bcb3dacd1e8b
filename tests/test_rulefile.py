"""Rule files load strictly: every mistake is reported at once, naming file, rule and key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lrdiag.detect.rulefile import DOC_HEADINGS, builtin_rules_dir, load_rules
from lrdiag.errors import LrdiagError

REPO_RULES = Path(__file__).resolve().parents[1] / "rules"

DOCS = """
[docs]
what = "w"
why = "y"
example = "e"
fix = "f"
options = "o"
"""


def rule_text(code="TST101", name="test.nan", detector="nonfinite", severity="error", category="nonfinite",
              roles='["train_loss"]', top="", extra="", docs=DOCS) -> str:
    """A rule file: `top` holds more top-level keys, `extra` more tables ([params.x])."""
    return (f'code = "{code}"\nname = "{name}"\ncategory = "{category}"\ndetector = "{detector}"\n'
            f'roles = {roles}\nseverity = "{severity}"\nmessage = "{{metric}} went bad at step {{step}}"\n'
            f"{top}\n{extra}\n{docs}")


SPIKE_PARAMS = """
[params.window]
default = {window}
type = "int"
min = 3
doc = "points before a point that set its level"
"""


def write(folder: Path, filename: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_text(text)
    return folder


def load_errors(folder: Path) -> list[str]:
    with pytest.raises(LrdiagError) as caught:
        load_rules([folder])
    return str(caught.value).splitlines()


def test_a_valid_rule_loads_with_its_defaults_resolved(tmp_path):
    write(tmp_path, "b.toml", rule_text(code="TST102", name="test.spike", detector="spike", category="spike",
                                        top='aliases = ["TST002"]', extra=SPIKE_PARAMS.format(window=7)))
    write(tmp_path, "a.toml", rule_text())
    rules = load_rules([tmp_path])
    assert [rule.code for rule in rules] == ["TST101", "TST102"]  # code order, not file order
    spike = rules[1]
    assert spike.params == {"window": 7}
    assert spike.specs["window"].expected() == "an int in the range [3, inf)"
    assert spike.aliases == ("TST002",) and spike.selectors() == ("TST102", "test.spike", "TST002")
    assert spike.docs["what"] == "w"


def test_a_float_parameter_written_as_an_integer_reaches_the_detector_as_a_float(tmp_path):
    params = '[params.z]\ndefault = 8\ntype = "float"\nmin = 3\ndoc = "sigmas"\n'
    write(tmp_path, "a.toml", rule_text(detector="spike", category="spike", extra=params))
    assert load_rules([tmp_path])[0].params == {"z": 8.0}
    assert isinstance(load_rules([tmp_path])[0].params["z"], float)


def test_every_error_of_every_file_is_reported_at_once_naming_file_rule_and_key(tmp_path):
    write(tmp_path, "one.toml", rule_text(code="TST101", severity="fatal", roles='["train_loss", "weights"]',
                                          top='colour = "red"'))
    write(tmp_path, "two.toml", rule_text(code="TST102", name="test.other", category="wobble",
                                          detector="no_such_detector"))
    write(tmp_path, "three.toml", rule_text(code="TST103", name="test.third").replace('severity = "error"\n', ""))
    errors = load_errors(tmp_path)
    assert errors[0] == "6 errors:"
    body = "\n".join(errors)
    assert "one.toml: rule TST101: colour: unknown key" in body
    assert "one.toml: rule TST101: severity: 'fatal' is not one of error, warning, info" in body
    assert "one.toml: rule TST101: roles: unknown role 'weights'" in body
    assert "two.toml: rule TST102: category: 'wobble' is not one of" in body
    assert "two.toml: rule TST102: detector: 'no_such_detector' is neither a built-in detector" in body
    assert "three.toml: rule TST103: severity: missing key" in body


def test_an_out_of_range_default_reads_like_scikit_learn(tmp_path):
    write(tmp_path, "a.toml", rule_text(code="LRD901", detector="spike", category="spike",
                                        extra=SPIKE_PARAMS.format(window=0)))
    assert load_errors(tmp_path) == [
        f"{tmp_path / 'a.toml'}: rule LRD901: params.window.default: "
        "The 'window' parameter of LRD901 must be an int in the range [3, inf). Got 0 instead."]


@pytest.mark.parametrize("value, shown", [("true", "True"), ("3.5", "3.5"), ('"five"', "'five'")])
def test_a_default_of_the_wrong_type_is_named_with_the_type_expected(tmp_path, value, shown):
    write(tmp_path, "a.toml", rule_text(detector="spike", category="spike", extra=SPIKE_PARAMS.format(window=value)))
    (error,) = load_errors(tmp_path)
    assert error.endswith(f"The 'window' parameter of TST101 must be an int in the range [3, inf). Got {shown} instead.")


def test_choices_and_upper_bounds_are_described_like_scikit_learn(tmp_path):
    params = ('[params.min_ratio]\ndefault = 1.5\ntype = "float"\nmin = 1.0\nmax = 1.2\ndoc = "d"\n'
              '[params.window]\ndefault = 4\ntype = "int"\nchoices = [3, 5]\ndoc = "d"\n')
    write(tmp_path, "a.toml", rule_text(detector="spike", category="spike", extra=params))
    body = "\n".join(load_errors(tmp_path))
    assert "The 'min_ratio' parameter of TST101 must be a float in the range [1.0, 1.2]. Got 1.5 instead." in body
    assert "The 'window' parameter of TST101 must be an int among {3, 5}. Got 4 instead." in body


def test_a_parameter_the_detector_does_not_take_is_an_error(tmp_path):
    write(tmp_path, "a.toml", rule_text(extra=SPIKE_PARAMS.format(window=5)))  # nonfinite takes no parameters
    (error,) = load_errors(tmp_path)
    assert error.endswith("rule TST101: params.window: the detector takes no parameter 'window'")


def test_a_parameter_without_doc_type_or_default_is_an_error(tmp_path):
    write(tmp_path, "a.toml", rule_text(detector="spike", category="spike", extra="[params.window]\nmin = 3\n"))
    body = "\n".join(load_errors(tmp_path))
    for key in ("default", "type", "doc"):
        assert f"params.window.{key}: missing key" in body


def test_a_missing_doc_heading_is_an_error(tmp_path):
    write(tmp_path, "a.toml", rule_text(docs=DOCS.replace('fix = "f"\n', "")))
    (error,) = load_errors(tmp_path)
    assert error.endswith("rule TST101: docs.fix: missing the 'What to do' text")


def test_a_broken_message_template_is_an_error(tmp_path):
    write(tmp_path, "a.toml", rule_text().replace("at step {step}", "at step {step"))
    (error,) = load_errors(tmp_path)
    assert "rule TST101: message: not a valid str.format template" in error


def test_codes_and_names_must_follow_the_house_form(tmp_path):
    write(tmp_path, "a.toml", rule_text(code="tst-1", name="Spike"))
    body = "\n".join(load_errors(tmp_path))
    assert "code: 'tst-1' must be capital letters then digits" in body
    assert "name: 'Spike' must be dotted lower-case words" in body


def test_a_code_name_or_alias_used_twice_is_an_error_naming_both_files(tmp_path):
    write(tmp_path, "a.toml", rule_text(code="TST101", name="test.one"))
    write(tmp_path, "b.toml", rule_text(code="TST101", name="test.two"))
    write(tmp_path, "c.toml", rule_text(code="TST103", name="test.three", top='aliases = ["test.one"]'))
    body = "\n".join(load_errors(tmp_path))
    assert "b.toml: rule TST101: 'TST101' is already used by TST101 in" in body
    assert "c.toml: rule TST103: 'test.one' is already used by TST101 in" in body


def test_unreadable_toml_and_a_missing_folder_are_errors(tmp_path):
    write(tmp_path / "rules", "a.toml", "code = \n")
    (error,) = load_errors(tmp_path / "rules")
    assert "a.toml: cannot read rule file" in error
    with pytest.raises(LrdiagError, match="no such rules folder"):
        load_rules([tmp_path / "nowhere"])


def test_the_same_folder_given_twice_is_read_once(tmp_path):
    write(tmp_path / "rules", "a.toml", rule_text())
    (tmp_path / "other").mkdir()
    assert len(load_rules([tmp_path / "rules", tmp_path / "other" / ".." / "rules"])) == 1


def test_a_checkout_finds_the_top_level_rules_folder():
    # In the repository (and an editable install) there is no lrdiag/_rules: the wheel adds it.
    assert builtin_rules_dir() == REPO_RULES


def _real_rule_files() -> list[Path]:
    return sorted(REPO_RULES.glob("*.toml"))


@pytest.mark.skipif(not _real_rule_files(), reason="no rule files in rules/ yet")
@pytest.mark.parametrize("path", _real_rule_files(), ids=lambda path: path.stem)
def test_every_rule_documents_the_five_headings_and_every_parameter(path):
    # sqlfluff's docstring test: read the raw file, so the message names what is missing.
    rule = tomllib.loads(path.read_text())
    docs = rule.get("docs", {})
    missing = [heading for key, heading in DOC_HEADINGS.items() if not str(docs.get(key, "")).strip()]
    assert not missing, f"{path.name} lacks the doc headings {missing}"
    undocumented = [name for name, spec in rule.get("params", {}).items() if not str(spec.get("doc", "")).strip()]
    assert not undocumented, f"{path.name}: parameters without doc: {undocumented}"


@pytest.mark.skipif(not _real_rule_files(), reason="no rule files in rules/ yet")
def test_the_shipped_rules_load_without_errors():
    rules = load_rules([builtin_rules_dir()])
    assert len(rules) == len(_real_rule_files())
