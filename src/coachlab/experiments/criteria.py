"""Checklists for scenarios that have none, and more example lines for every item: written once, editable.

A scenario whose YAML has no `success_criteria` gets a checklist from the teacher the first time a
run needs one. It is saved as `<run>/criteria/<scenario id>.yaml`; from then on that file is the
checklist (edit it to correct the teacher), and it is never written again unless deleted.

Each item's `example` is one way of saying it, and the judge's similarity gate and its question
compare an agent's line with the item's example lines: with one line, good service in other words
is missed. So the teacher also writes `judge.examples` more lines per item, in other words, once
per scenario (`<run>/examples/<scenario id>.yaml`, read on every run, never rewritten, editable like
a written checklist). Items whose author already gave `examples` keep them as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from coachlab.agents import CriteriaDraft, ExampleLines, build_teacher, write_criteria, write_examples
from coachlab.errors import ModelResponseError
from coachlab.experiments.results import write_text_atomic
from coachlab.llm import Backend, BackendError, RoleClient
from coachlab.schema import Criterion, Scenario
from coachlab.schema._base import Text
from coachlab.yamlio import load_yaml, validate_yaml

__all__ = [
    "CriteriaFile",
    "ExamplesFile",
    "criteria_path",
    "ensure_criteria",
    "ensure_examples",
    "examples_path",
    "load_criteria",
    "with_saved_examples",
]

logger = logging.getLogger(__name__)


class CriteriaFile(BaseModel):
    """`<run>/criteria/<scenario id>.yaml`: a scenario's checklist written by the teacher."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str
    written_by: str = ""
    success_criteria: list[Criterion] = Field(min_length=1)

    @field_validator("success_criteria")
    @classmethod
    def _unique(cls, value: list[Criterion]) -> list[Criterion]:
        ids = [c.id for c in value]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"criterion id(s) {', '.join(twice)} used twice")
        return value


def criteria_path(run_dir: Path, scenario_id: str) -> Path:
    """Where the run keeps the checklist of `scenario_id`."""
    return run_dir / "criteria" / f"{scenario_id}.yaml"


def load_criteria(path: Path) -> list[Criterion]:
    """A saved checklist.

    Raises:
        ConfigError: The file is not a valid checklist (names the file, line and field).
    """
    return validate_yaml(CriteriaFile, load_yaml(path, what="criteria file")).success_criteria


def _dump(scenario: Scenario, criteria: Sequence[Criterion], written_by: str) -> str:
    header = (
        f"# The checklist the judge grades for scenario {scenario.id}, written by the teacher ({written_by}).\n"
        "# Edit it freely: coachlab reads this file on every run and never rewrites it (delete it to have it\n"
        "# written again). Items: text (as in 'the agent <text>'), level must|nice, forbidden, policy, example.\n"
    )
    payload = {
        "scenario": scenario.id,
        "written_by": written_by,
        "success_criteria": [c.model_dump(exclude_defaults=True) for c in criteria],
    }
    return header + yaml.safe_dump(payload, sort_keys=False, allow_unicode=True, width=110)


async def ensure_criteria(
    scenarios: Sequence[Scenario],
    *,
    run_dir: Path,
    backends: Mapping[str, Backend],
    teacher: str | None,
    seed: int = 0,
) -> dict[str, Scenario]:
    """Give every scenario without `success_criteria` its checklist: the saved one, else the teacher's.

    Returns the scenarios that changed, by id. Without a teacher backend, or when the teacher's
    answer stays unreadable, the scenario keeps no checklist (satisfaction only) and a warning says so.

    Raises:
        ConfigError: A saved checklist is not valid.
    """
    changed: dict[str, Scenario] = {}
    for scenario in scenarios:
        if scenario.success_criteria or scenario.id in changed:
            continue
        path = criteria_path(run_dir, scenario.id)
        if path.exists():
            criteria = load_criteria(path)
        elif teacher is None or teacher not in backends:
            logger.warning(
                "Scenario %s has no success_criteria and no teacher to write them: no task success.", scenario.id
            )
            continue
        else:
            backend = backends[teacher]
            client = RoleClient(backend, role="teacher-criteria", seed=seed)
            try:
                criteria = await write_criteria(build_teacher(model_client=client, output=CriteriaDraft), scenario)
            except ModelResponseError as exc:
                logger.warning(
                    "Scenario %s: the teacher wrote no readable checklist (%s): no task success.", scenario.id, exc
                )
                continue
            write_text_atomic(path, _dump(scenario, criteria, backend.identity))
            logger.info("Scenario %s: the teacher wrote %d checklist items -> %s", scenario.id, len(criteria), path)
        changed[scenario.id] = scenario.model_copy(update={"success_criteria": criteria})
    return changed


class ExamplesFile(BaseModel):
    """`<run>/examples/<scenario id>.yaml`: more example lines per checklist item, written by the teacher."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str
    written_by: str = ""
    examples: dict[str, list[Text]] = Field(description="Per criterion id, more agent lines that do it.")


def examples_path(run_dir: Path, scenario_id: str) -> Path:
    """Where the run keeps the teacher's extra example lines for `scenario_id`."""
    return run_dir / "examples" / f"{scenario_id}.yaml"


def _merged(scenario: Scenario, examples: Mapping[str, Sequence[str]]) -> Scenario:
    items = [
        c.model_copy(update={"examples": [*c.examples, *examples.get(c.id, ())]}) if not c.examples else c
        for c in scenario.success_criteria
    ]
    return scenario.model_copy(update={"success_criteria": items})


def with_saved_examples(scenario: Scenario, run_dir: Path) -> Scenario:
    """`scenario` with the example lines this run saved for it (a read: no teacher is asked).

    Raises:
        ConfigError: The saved file is not valid.
    """
    path = examples_path(run_dir, scenario.id)
    if not scenario.success_criteria or not path.exists():
        return scenario
    saved = validate_yaml(ExamplesFile, load_yaml(path, what="examples file"))
    return _merged(scenario, saved.examples)


def _dump_examples(scenario: Scenario, examples: Mapping[str, Sequence[str]], written_by: str) -> str:
    header = (
        f"# More example lines per checklist item of scenario {scenario.id}, written by the teacher ({written_by}).\n"
        "# The judge compares an agent's line with all of an item's example lines (the scenario's `example` and\n"
        "# these). Edit freely: coachlab reads this file on every run and never rewrites it (delete it to have\n"
        "# it written again).\n"
    )
    payload = {"scenario": scenario.id, "written_by": written_by, "examples": {k: list(v) for k, v in examples.items()}}
    return header + yaml.safe_dump(payload, sort_keys=False, allow_unicode=True, width=110)


async def ensure_examples(
    scenarios: Sequence[Scenario],
    *,
    run_dir: Path,
    backends: Mapping[str, Backend],
    teacher: str | None,
    count: int,
    seed: int = 0,
) -> dict[str, Scenario]:
    """Give every item of every scenario's checklist `count` more example lines: the saved ones, else the teacher's.

    Returns the scenarios that changed, by id. Items with authored `examples` are left as they are.
    Without a teacher backend, or when its answer stays unreadable, an item keeps the lines it has (logged).

    Raises:
        ConfigError: A saved examples file is not valid.
    """
    changed: dict[str, Scenario] = {}
    for scenario in scenarios:
        todo = [c for c in scenario.success_criteria if not c.examples]
        if count <= 0 or not todo or scenario.id in changed:
            continue
        path = examples_path(run_dir, scenario.id)
        if path.exists():
            changed[scenario.id] = with_saved_examples(scenario, run_dir)
            continue
        if teacher is None or teacher not in backends:
            logger.info("Scenario %s: no teacher to write more example lines; the judge has one per item.", scenario.id)
            continue
        backend = backends[teacher]
        agent = build_teacher(model_client=RoleClient(backend, role="teacher-examples", seed=seed), output=ExampleLines)
        written: dict[str, list[str]] = {}
        try:
            for criterion in todo:
                try:
                    written[criterion.id] = await write_examples(agent, scenario, criterion, count=count)
                except ModelResponseError as exc:
                    logger.warning(
                        "Scenario %s, item %s: no readable example lines (%s).", scenario.id, criterion.id, exc
                    )
        except BackendError as exc:  # nothing saved: the next run asks again
            logger.warning(
                "Scenario %s: the teacher could not write example lines (%s); one per item.", scenario.id, exc
            )
            continue
        if not any(written.values()):  # nothing to keep: the next run asks again
            continue
        write_text_atomic(path, _dump_examples(scenario, written, backend.identity))
        logger.info("Scenario %s: the teacher wrote example lines for %d items -> %s", scenario.id, len(written), path)
        changed[scenario.id] = _merged(scenario, written)
    return changed
