"""Authoring helpers behind `coachlab persona ...` and `coachlab validate`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from rich.console import Console

from coachlab.errors import ConfigError, UsageError
from coachlab.schema import Persona, Scenario

__all__ = ["draft_persona_file", "persona_skeleton", "persona_to_yaml", "validate_files"]

_SKELETON = """\
# Persona {id}: who this customer is, in one line.
# Fields marked (private) are seen by the customer agent and the judge, never by the service agent.
# Check it with: coachlab persona validate personas/{id}.yaml

id: {id}                      # what scenarios write after `persona:`
name: Jordan Lee              # the customer's name as they give it
description: A 35-year-old nurse on night shifts who has already called twice about this.
traits: [direct, tired, fair]  # a few adjectives
mood: frustrated               # mood at the start
patience: low                  # very low | low | medium | high
style: Short sentences, no greetings, sometimes all lowercase.

# (private) what they want out of the conversation
goal: Get the problem fixed today without paying anything extra.
# (private) facts they reveal only if asked, or never
hidden_constraints:
  - Works nights, so any callback must be before 10 am.
# (private) what would make them leave satisfied
satisfied_when: The agent fixes it now, or gives a concrete date and a reference number.
# (private) what would make them give up (optional)
gives_up_when: The agent repeats the same apology twice without a next step.
"""


def persona_skeleton(persona_id: str) -> str:
    """A commented persona file to fill in.

    Raises:
        UsageError: `persona_id` is not a valid id.
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", persona_id):
        raise UsageError(
            f"{persona_id!r} is not a valid persona id: use lowercase letters, digits, '-' and '_' "
            "(e.g. angry-commuter)."
        )
    text = _SKELETON.format(id=persona_id)
    Persona.model_validate(yaml.safe_load(text))  # the skeleton itself must be valid
    return text


def persona_to_yaml(persona: Persona) -> str:
    """A persona as a YAML file."""
    return f"# {persona.name}: {persona.description}\n" + yaml.safe_dump(
        persona.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True, width=100
    )


def _kind_of(path: Path) -> Literal["experiment", "scenario", "persona"]:
    from coachlab.yamlio import load_yaml

    data = load_yaml(path).data
    if isinstance(data, dict):
        if "models" in data:
            return "experiment"
        if "scenarios" in data or "issue" in data:
            return "scenario"
    return "persona"


def _expand(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        try:
            is_dir = p.is_dir()
        except OSError as exc:  # a name too long for the file system, say
            raise ConfigError(f"{p}: cannot open: {exc.strerror or exc}.") from None
        if is_dir:
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                raise UsageError(f"{p}: no .yaml files in this folder.")
            out += found
        else:
            out.append(p)
    return out


def scenario_warnings(scenarios: Iterable[Scenario]) -> list[str]:
    """What is legal but likely wrong in scenarios: a title that gives away a private fact, no checklist."""
    from coachlab.agents import private_details

    warnings: list[str] = []
    for scenario in scenarios:
        title = scenario.title.lower()
        leaks = [d for d in private_details(scenario, pairs=True) if d.lower() in title]
        if leaks:
            warnings.append(
                f"scenario {scenario.id}: the title repeats the persona's private {', '.join(repr(x) for x in leaks)} "
                "(the service agent and retrieval read titles; keep private facts out of them)"
            )
        if not scenario.success_criteria:
            warnings.append(
                f"scenario {scenario.id}: no success_criteria; the teacher writes a checklist once per run "
                "(saved in <run>/criteria/, editable)"
            )
    return warnings


def validate_files(
    paths: Iterable[Path],
    *,
    kind: Literal["auto", "experiment", "scenario", "persona"],
    console: Console,
    err: Console,
) -> int:
    """Validate files, print one line per file; returns how many were bad.

    Scenario files are checked for their own content; persona references are resolved against
    the `personas/` folder beside the scenario folder when there is one.
    """
    from coachlab.experiments.config import load_experiment, load_personas, load_scenarios
    from coachlab.yamlio import load_yaml, validate_yaml

    bad = 0
    for path in _expand(paths):
        try:
            what = kind if kind != "auto" else _kind_of(path)
            scenarios: list[Scenario] = []
            if what == "persona":
                validate_yaml(Persona, load_yaml(path, what="persona file"))
            elif what == "experiment":
                scenarios = list(load_experiment(path).scenarios.values())
            else:
                folder = path.parent.parent / "personas"
                personas = load_personas([folder])[0] if folder.is_dir() else {}
                scenarios = list(load_scenarios([path], personas)[0].values())
            console.print(f"[green]ok[/green] {path} ({what})")
            for warning in scenario_warnings(scenarios):
                err.print(f"warning: {path}: {warning}", markup=False, highlight=False, soft_wrap=True)
        except ConfigError as exc:
            bad += 1
            err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
    return bad


async def draft_persona_file(
    description: str,
    *,
    experiment: Path,
    model: str,
    persona_id: str | None,
    folder: Path,
    force: bool,
) -> Path:
    """Have a model from `experiment` draft a persona, validate it and save it."""
    from coachlab.agents import build_persona_writer, draft_persona
    from coachlab.experiments.config import load_experiment
    from coachlab.llm import Backend, RoleClient, close_backends

    if not description.strip():
        raise UsageError(
            'Give a one-line description, e.g. coachlab persona draft "retired teacher, polite, hates chatbots".'
        )
    exp = load_experiment(experiment)
    if model not in exp.config.models:
        raise UsageError(
            f"{experiment}: models: no entry {model!r}; pick one of {', '.join(exp.config.models)} with --model."
        )
    pid = persona_id or "-".join(re.findall(r"[a-z0-9]+", description.lower())[:3]) or "drafted"
    path = folder / f"{pid}.yaml"
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; pass --force to replace it, or --id to choose another id.")
    backend = Backend.from_entry(model, exp.config.models[model], where=exp.where(f"models.{model}"))
    try:
        writer = build_persona_writer(model_client=RoleClient(backend, role="persona_writer"))
        persona = await draft_persona(writer, description, persona_id=pid)
    finally:
        await close_backends([backend])
    await asyncio.to_thread(_save, path, persona_to_yaml(persona))
    return path


def _save(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
