"""Every bad input gets one clear error naming file, field and line; every shipped YAML is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from coachlab.errors import ConfigError
from coachlab.experiments.config import load_experiment, load_personas, load_scenarios
from coachlab.schema import Persona
from coachlab.yamlio import load_yaml, validate_yaml

ROOT = Path(__file__).resolve().parents[1]
GOOD_PERSONA = """\
id: dana
name: Dana
description: a commuter
goal: a refund
satisfied_when: refund confirmed
"""


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def persona_error(tmp_path: Path, text: str | bytes) -> str:
    path = write(tmp_path, "p.yaml", text)
    with pytest.raises(ConfigError) as info:
        validate_yaml(Persona, load_yaml(path, what="persona file"))
    return str(info.value)


def test_unknown_field_names_file_line_and_suggests_the_right_name(tmp_path: Path) -> None:
    msg = persona_error(tmp_path, GOOD_PERSONA + "patiense: low\n")
    assert "p.yaml:6: patiense: unknown field. Did you mean 'patience'?" in msg


def test_wrong_type_names_the_field_and_what_was_given(tmp_path: Path) -> None:
    msg = persona_error(tmp_path, GOOD_PERSONA + "patience: extreme\n")
    assert "p.yaml:6: patience:" in msg and "'very low', 'low', 'medium' or 'high'" in msg and "'extreme'" in msg


def test_missing_required_field(tmp_path: Path) -> None:
    msg = persona_error(tmp_path, GOOD_PERSONA.replace("goal: a refund\n", ""))
    assert "goal: required field is missing" in msg


def test_invalid_yaml_gives_line_and_column(tmp_path: Path) -> None:
    msg = persona_error(tmp_path, "id: dana\nname: [unclosed\n")
    assert "p.yaml: line" in msg and "not valid YAML" in msg


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "is empty"),
        ("   \n# only a comment\n", "has no content"),
        (b"id: caf\xe9\n", "not UTF-8"),
        ("- a\n- b\n", "expected a mapping of fields"),
        ("~\n", "has no content"),
    ],
)
def test_degenerate_files(tmp_path: Path, content: str | bytes, expected: str) -> None:
    assert expected in persona_error(tmp_path, content)


def test_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_yaml(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")


def test_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(12)
    )
    path = write(tmp_path, "bomb.yaml", bomb)
    with pytest.raises(ConfigError, match="aliases"):
        load_yaml(path)


def test_huge_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "big.yaml", "x: " + "a" * 3_000_000 + "\n")
    with pytest.raises(ConfigError, match="too large"):
        load_yaml(path)


def test_scenario_naming_a_missing_persona(tmp_path: Path) -> None:
    write(tmp_path, "personas/dana.yaml", GOOD_PERSONA)
    sc = write(
        tmp_path,
        "scenarios/s.yaml",
        "scenarios:\n  - id: s1\n    domain: retail\n    title: t\n    issue: i\n    policy: [p]\n    persona: danna\n",
    )
    personas, _ = load_personas([tmp_path / "personas"])
    with pytest.raises(ConfigError) as info:
        load_scenarios([sc], personas)
    msg = str(info.value)
    assert "s.yaml:7: scenarios.0.persona: no persona 'danna' (did you mean 'dana'?)" in msg


def test_duplicate_persona_ids_name_both_files(tmp_path: Path) -> None:
    write(tmp_path, "personas/a.yaml", GOOD_PERSONA)
    write(tmp_path, "personas/b.yaml", GOOD_PERSONA)
    with pytest.raises(ConfigError, match=r"b.yaml: id: persona 'dana' is already defined in .*a.yaml"):
        load_personas([tmp_path / "personas"])


def test_experiment_errors_name_the_field(tmp_path: Path) -> None:
    write(tmp_path, "personas/dana.yaml", GOOD_PERSONA)
    write(
        tmp_path,
        "scenarios/s.yaml",
        "scenarios:\n  - {id: s1, domain: r, title: t, issue: i, policy: [p], persona: dana}\n",
    )
    base = "name: x\npersonas: [personas]\nscenarios: [scenarios/s.yaml]\n"
    ok_models = (
        "models:\n  student: {provider: openai, config: {model: m}}\n"
        "  customer: {provider: openai}\n  judge: {provider: openai}\n"
    )
    exp = write(tmp_path, "e.yaml", base + ok_models)
    assert load_experiment(exp).scenarios["s1"].persona.name == "Dana"
    bad = write(tmp_path, "e2.yaml", base + "models:\n  student: {provider: openai}\n")
    with pytest.raises(ConfigError, match="needs entries for customer, judge"):
        load_experiment(bad)
    bad = write(tmp_path, "e3.yaml", base + ok_models + "simulate: {trials: 0}\n")
    with pytest.raises(ConfigError, match=r"e3.yaml:8: simulate.trials: Input should be greater than or equal to 1"):
        load_experiment(bad)
    bad = write(tmp_path, "e4.yaml", base.replace("scenarios/s.yaml", "scenarios/missing.yaml") + ok_models)
    with pytest.raises(ConfigError, match=r"e4.yaml:3: scenarios\[0\]: .*missing.yaml does not exist"):
        load_experiment(bad)
    bad = write(tmp_path, "e5.yaml", base + ok_models + "simulate: {scenarios: [s2]}\n")
    with pytest.raises(ConfigError, match=r"e5.yaml:8: simulate.scenarios\[0\]: unknown scenario 's2'. Known: s1."):
        load_experiment(bad)


@pytest.mark.parametrize("path", sorted((ROOT / "personas").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_personas_are_valid(path: Path) -> None:
    persona = validate_yaml(Persona, load_yaml(path))
    assert persona.id == path.stem


def test_shipped_scenarios_are_valid_and_diverse() -> None:
    personas, _ = load_personas([ROOT / "personas"])
    scenarios, _ = load_scenarios(sorted((ROOT / "scenarios").glob("*.yaml")), personas)
    assert len(personas) >= 8 and len(scenarios) >= 6
    assert len({s.domain for s in scenarios.values()}) >= 3
    tags = {t for s in scenarios.values() for t in s.tags}
    assert {"hard", "policy-conflict", "impatient"} <= tags
