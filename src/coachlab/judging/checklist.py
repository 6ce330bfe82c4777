"""Checklist verdicts without a model: graded lines, the vote count per item, task success.

An item is decided from per-line answers: for each agent line the judge was asked "does the agent
<item> in this message?". In one vote a line counts when the judge said yes AND (with the gate on)
the line resembles the item's example, or when it is so alike that no question is needed. A
positive item is met in a vote when some line counts, a forbidden item when none does (the
counting line is then the evidence of the breach); the item is decided by a strict majority of
votes. The evidence quote is always the agent's own line, taken from the transcript, so
an item can never be credited with words nobody said.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from coachlab.schema import AgentMessage, Criterion, CriterionResult, Event

__all__ = [
    "GradedLine",
    "JudgeConfig",
    "LineVotes",
    "decide_criterion",
    "graded_lines",
    "policy_followed",
    "task_success",
]


class JudgeConfig(BaseModel):
    """The `judge:` section of an experiment file: how verdicts are made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    votes: int = Field(
        default=1,
        ge=1,
        le=15,
        description="Judgements per episode (different seeds); items by majority, satisfaction by median.",
    )
    checklist: Literal["per_line", "off"] = Field(
        default="per_line",
        description="per_line: one yes/no question per agent line and criterion (what small judges do well); "
        "off: satisfaction only (no task success).",
    )
    gate: Literal["auto", "embedding", "off"] = Field(
        default="auto",
        description="Believe a 'yes' only for a line similar to one of the criterion's example lines (MiniLM "
        "cosine). auto: "
        "when the offline embedding model is fetched; embedding: required; off: never.",
    )
    gate_floor: float = Field(default=0.40, ge=-1, le=1, description="The cosine a line needs to count.")
    gate_sure: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="A cosine at which a line counts without the judge's yes (None: never).",
    )
    # gate_sure was 0.75 (the 1.5B judge said no to plain hand-off lines at 0.75-0.86); the items' patterns
    # decide hand-offs now, and on the labelled set with near-misses a line that close to the example but
    # doing the opposite ("I can't offer free express shipping") was credited: near-misses called met 65%
    # with it, 12% without (benchmarks/checklist_sweep.py; docs/measurements.md).
    question: Literal["statement", "meaning", "meaning-examples"] = Field(
        default="meaning-examples",
        description="How each per-line question is put. statement: is 'in this message, the agent <item>' true; "
        "meaning: does the message do the item's action, in any words; meaning-examples: the same, shown the "
        "item's example lines as illustrations.",
    )
    # Greedy by default: at the judge's 0.2, three identical student replies got two different answers
    # on one item. Several votes keep the entry's temperature, since votes differ only by sampling.
    grader_temperature: float | None = Field(
        default=0.0,
        ge=0,
        le=2,
        description="Sampling temperature of the yes/no checklist questions with one vote (0: greedy; None: the "
        "judge entry's). Several votes use the judge entry's temperature.",
    )
    satisfaction: Literal["judge", "customer"] = Field(
        default="judge",
        description="Who rates satisfaction. judge: the judge model reads the transcript; customer: the "
        "customer's model answers a post-chat survey as the persona, in its own context. The checklist is always "
        "graded by the judge model.",
    )
    # The survey saves the judge's largest cost on embedded models (the chat is already in the customer's
    # context), but on the calibration set (embedded 1.5B) it orders good above degraded chats in 26% against
    # the judge's 81%: the default stays judge.

    examples: int = Field(
        default=0,
        ge=0,
        le=6,
        description="More example lines per checklist item that the teacher writes once per scenario, in other "
        "words than `example` (saved in the run as examples/<scenario>.yaml, editable); 0: the authored ones only.",
    )
    write_criteria: bool = Field(
        default=True,
        description="The teacher writes a checklist for scenarios without success_criteria (once, saved in the run).",
    )

    @field_validator("checklist", "gate", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML 1.1 reads a bare `off` as false: take it as the word."""
        return "off" if value is False else value


@dataclass(frozen=True)
class GradedLine:
    """An agent line the graded agent wrote itself (prefix and mentor lines are never graded)."""

    turn: int
    """Its number among all agent lines of the transcript (as the judge's transcript numbers them)."""
    text: str


def graded_lines(events: Sequence[Event]) -> list[GradedLine]:
    """The agent lines to grade: those the service agent of this episode wrote (origin `model`)."""
    lines: list[GradedLine] = []
    turn = 0
    for event in events:
        if isinstance(event, AgentMessage):
            if event.origin == "model":
                lines.append(GradedLine(turn=turn, text=event.text))
            turn += 1
    return lines


@dataclass(frozen=True)
class LineVotes:
    """What the votes said about one (line, criterion) pair."""

    yes: tuple[int, ...]
    """The votes (by index) in which the judge said yes about this line; votes not asked are absent."""
    similarity: float | None = None
    """The line's best cosine to the criterion's example lines; None when the gate is off."""
    matched: bool = False
    """The criterion's `pattern` matches the line."""
    fits: bool = True
    """The line's own words do not rule the item out (`coachlab.judging.evidence.fits`)."""

    def gated(self, floor: float) -> bool:
        """The line may count: the pattern matches, or its words fit and (gate on) it resembles an example."""
        if self.matched:
            return True
        return self.fits and (self.similarity is None or self.similarity >= floor)

    def sure(self, threshold: float | None) -> bool:
        """The line counts without the judge's yes: the pattern matches, or it fits and is that close to an example."""
        if self.matched:
            return True
        return self.fits and threshold is not None and self.similarity is not None and self.similarity >= threshold


def decide_criterion(
    criterion: Criterion,
    lines: Sequence[GradedLine],
    answers: Mapping[int, LineVotes],
    *,
    votes: int,
    floor: float,
    sure: float | None = None,
) -> CriterionResult:
    """Decide one item by a strict majority of votes from the answers about each line (by `turn`).

    In one vote, a positive item is met when some gated line got a yes; a forbidden item is met when
    none did. A line the gate rejects cannot count, so it need not be asked; nor need later lines
    once a vote has found its yes. The evidence is the gated line with the most yes votes (the
    earliest on a tie): for a met item the line that does it, for a broken forbidden item the line
    that breaks it. With `sure`, a line at least that similar to the example counts in every vote
    without the judge's yes (the small judge misses some plain cases, such as a hand-off line).
    """
    if not lines:
        return CriterionResult(id=criterion.id, status="na", votes=votes, votes_met=0)
    gated = [line for line in lines if line.turn in answers and answers[line.turn].gated(floor)]
    close = [line for line in gated if answers[line.turn].sure(sure)]
    found = sum(1 for v in range(votes) if close or any(v in answers[line.turn].yes for line in gated))
    votes_met = votes - found if criterion.forbidden else found
    met = 2 * votes_met > votes
    show = met != criterion.forbidden  # a met positive item, or a broken forbidden one
    ranked = sorted(
        (line for line in gated if answers[line.turn].yes or line in close),
        key=lambda x: (-(x in close), -len(answers[x.turn].yes)),
    )
    evidence = ranked[0] if show and ranked else None
    return CriterionResult(
        id=criterion.id,
        status="met" if met else "not_met",
        turn=None if evidence is None else evidence.turn,
        quote=None if evidence is None else evidence.text,
        votes=votes,
        votes_met=votes_met,
    )


def task_success(criteria: Sequence[Criterion], results: Sequence[CriterionResult]) -> bool | None:
    """All `must` items met and no policy item broken; None with no checklist or nothing to grade."""
    if not criteria:
        return None
    by_id = {r.id: r for r in results}
    decided = [by_id.get(c.id) for c in criteria]
    if any(r is None or r.status == "na" for r in decided):
        return None
    return all(
        r is not None and r.status == "met"
        for c, r in zip(criteria, decided, strict=True)
        if c.level == "must" or c.policy
    )


def policy_followed(criteria: Sequence[Criterion], results: Sequence[CriterionResult]) -> bool | None:
    """False when a policy item is not met, True when all are; None when the checklist has no policy item."""
    items = [c for c in criteria if c.policy]
    if not items:
        return None
    by_id = {r.id: r for r in results}
    return all(by_id[c.id].status != "not_met" for c in items if c.id in by_id)
