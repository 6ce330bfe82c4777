"""Persona: who the customer is, including what the service agent must never see."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from coachlab.schema._base import Frozen, Slug, Text

__all__ = ["Patience", "Persona"]

Patience = Literal["very low", "low", "medium", "high"]


class Persona(Frozen):
    """A simulated customer, authored in YAML (one file per persona under `personas/`).

    The fields `goal`, `hidden_constraints` and `satisfied_when` are private: only the customer
    agent and the judge read them, never the service agent.
    """

    id: Slug = Field(description="Identifier that scenarios use to refer to this persona.")
    name: Text = Field(description="The customer's name as they would give it.")
    description: Text = Field(description="One line: who they are.")
    traits: list[Text] = Field(default_factory=list[str], description="Personality traits.")
    mood: Text = Field(default="neutral", description="Mood at the start of the conversation.")
    patience: Patience = Field(default="medium", description="How long they keep trying.")
    style: Text = Field(default="plain, short sentences", description="How they write.")
    goal: Text = Field(description="Private: what they want out of the conversation.")
    hidden_constraints: list[Text] = Field(
        default_factory=list[str], description="Private: facts or limits they reveal only if asked, or never."
    )
    satisfied_when: Text = Field(description="Private: what would make them leave satisfied.")
    gives_up_when: Text | None = Field(default=None, description="Private: what would make them give up.")
