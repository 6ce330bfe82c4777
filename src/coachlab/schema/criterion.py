"""Criterion: one observable yes/no item of a scenario's checklist, and how an episode fared on it."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from coachlab.schema._base import Frozen, Slug, Text

__all__ = ["Criterion", "CriterionLevel", "CriterionResult", "CriterionStatus"]

CriterionLevel = Literal["must", "nice"]
CriterionStatus = Literal["met", "not_met", "na"]


class Criterion(Frozen):
    """One observable item of a scenario's checklist ("offers the free express reship").

    `text` is what the agent does, written so that "the agent <text>" reads as a sentence about
    one message ("gives a reference number for the refund"). A `forbidden` item is something the
    agent must not do ("promises an exact delivery day"): it is met when no agent line does it. A
    `policy` item is a company rule: breaking it breaks policy, and task success needs every policy
    item met. `example` is one agent line that does the thing (for a forbidden item: one that
    breaks it); `examples` are more such lines in other words. coachlab only believes a judge's "yes"
    for a line that resembles one of them, and the grader is shown them as illustrations. A `pattern`
    (a regular expression, case-insensitive) decides without the judge: a line it matches shows the
    item. Use it for what words alone give away ("contact (our|the) .* team" for a hand-off), since
    the small judge misses some plain cases.
    """

    id: Slug = Field(description="Identifier, unique within the scenario.")
    text: Text = Field(description="What the agent does, as in 'the agent <text>' (one message can show it).")
    level: CriterionLevel = Field(default="must", description="must: needed for task success; nice: reported only.")
    forbidden: bool = Field(default=False, description="The agent must NOT do this; met when no agent line does it.")
    policy: bool = Field(default=False, description="A company rule: not met means the policy was broken.")
    example: Text | None = Field(
        default=None, description="One agent line that does it (for a forbidden item: one that breaks it)."
    )
    examples: list[Text] = Field(
        default_factory=lambda: [],
        description="More agent lines that do it (for a forbidden item: that break it), in other words than `example`.",
    )
    pattern: str | None = Field(
        default=None,
        description="A regular expression (case-insensitive): an agent line it matches shows the item, no judge asked.",
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @property
    def all_examples(self) -> tuple[str, ...]:
        """`example` (when set) and then `examples`, without repeats."""
        lines = ([self.example] if self.example else []) + list(self.examples)
        return tuple(dict.fromkeys(lines))

    def matches(self, line: str) -> bool:
        """True when `pattern` is set and finds a match in `line`."""
        return self.pattern is not None and re.search(self.pattern, line, re.IGNORECASE) is not None


class CriterionResult(Frozen):
    """How one episode fared on one criterion, with the agent's own words as evidence."""

    id: str
    status: CriterionStatus = Field(description="met / not_met / na (no agent line of the graded agent to judge).")
    turn: int | None = Field(
        default=None,
        description="The agent turn (numbered like the judge's transcript, from 0) that shows it: for a met item the "
        "line that does it, for a broken forbidden item the line that breaks it.",
    )
    quote: str | None = Field(default=None, description="That turn's words, checked to be in the transcript.")
    votes: int = Field(default=1, ge=0, description="Judge votes cast on this item.")
    votes_met: int = Field(default=0, ge=0, description="Votes that found the item met.")

    @property
    def split(self) -> bool:
        """True when the votes disagreed."""
        return 0 < self.votes_met < self.votes
