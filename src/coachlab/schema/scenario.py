"""Scenario: a persona, an issue, the facts and the company policy that apply."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue, field_validator

from coachlab.schema._base import Frozen, Slug, Text
from coachlab.schema.criterion import Criterion
from coachlab.schema.persona import Persona

__all__ = ["DialogueTurn", "Scenario", "ScenarioSpec", "Speaker"]

Speaker = Literal["customer", "agent"]


class DialogueTurn(Frozen):
    """One line of a dialogue prefix (the conversation so far when the scenario starts)."""

    role: Speaker
    text: Text


class _ScenarioFields(Frozen):
    id: Slug = Field(description="Unique identifier of the scenario.")
    domain: Text = Field(description="Business domain: retail, travel, telecom, banking...")
    title: Text = Field(description="One line a person reads in tables and trees.")
    company: Text = Field(default="the company", description="The company the agent works for.")
    issue: Text = Field(description="What went wrong, as the customer experiences it.")
    facts: dict[str, JsonValue] = Field(
        default_factory=dict[str, JsonValue],
        description="Account or order records the agent can see (and the customer knows).",
    )
    policy: list[Text] = Field(description="Company rules the agent must follow.")
    opening_line: Text | None = Field(default=None, description="The customer's first line, if fixed.")
    prefix: list[DialogueTurn] = Field(
        default_factory=list[DialogueTurn], description="Dialogue that already happened."
    )
    difficulty: Text | None = Field(default=None, description="Notes on what makes this scenario hard.")
    tags: list[Slug] = Field(default_factory=list[str], description="Free labels (hard, policy-conflict...).")
    situation: Slug | None = Field(
        default=None,
        description="The recurring customer-service situation this scenario is a case of (stalled-tracking, "
        "bill-shock...): scenarios of one situation share it, so evaluate can tell whether a held-out scenario "
        "retrieved a strategy learned on a training scenario of the same situation (retrieval hit rate). Child "
        "scenarios keep their parent's.",
    )
    success_criteria: list[Criterion] = Field(
        default_factory=list[Criterion],
        description="The checklist the judge grades: observable must/nice items (written by the teacher when empty).",
    )

    @field_validator("success_criteria")
    @classmethod
    def _unique_criteria(cls, value: list[Criterion]) -> list[Criterion]:
        seen: set[str] = set()
        for criterion in value:
            if criterion.id in seen:
                raise ValueError(f"criterion id {criterion.id!r} is used twice")
            seen.add(criterion.id)
        return value


class ScenarioSpec(_ScenarioFields):
    """A scenario as written in YAML: the persona is an id (from `personas/`) or written inline."""

    persona: Slug | Persona = Field(description="A persona id, or a persona written inline.")


class Scenario(_ScenarioFields):
    """A scenario with its persona resolved: what the environment runs."""

    persona: Persona

    def public_view(self) -> dict[str, JsonValue]:
        """What the service agent may know: everything except the persona's private fields."""
        return {
            "company": self.company,
            "customer_name": self.persona.name,
            "facts": self.facts,
            "policy": list(self.policy),
        }
