"""Checklists for scenarios that have none: written once by the teacher, saved in the run, editable.

A scenario whose YAML has no `success_criteria` gets a checklist from the teacher the first time a
run needs one. It is saved as `<run>/criteria/<scenario id>.yaml`; from then on that file is the
checklist (edit it to correct the teacher), and it is never written again unless deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from coachlab.agents import CriteriaDraft, build_teacher, write_criteria
from coachlab.errors import ModelResponseError
from coachlab.experiments.results import write_text_atomic
from coachlab.llm import Backend, RoleClient
from coachlab.schema import Criterion, Scenario
from coachlab.yamlio import load_yaml, validate_yaml

__all__ = ["CriteriaFile", "criteria_path", "ensure_criteria", "load_criteria"]

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
