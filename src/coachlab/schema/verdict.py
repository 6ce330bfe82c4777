"""Verdict: the judge's structured score of one episode, with the checklist beside it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from coachlab.schema._base import Frozen
from coachlab.schema.criterion import CriterionResult

__all__ = ["Satisfaction", "SatisfactionScore", "Verdict"]

# A Literal rather than ge/le: llama.cpp's JSON-schema grammar ignores integer bounds.
Satisfaction = Literal[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


class SatisfactionScore(Frozen):
    """What the judge model writes about a whole transcript: how the customer would rate the service.

    Field order is the order a model writes them in: the rationale comes first so that small
    models reason before they score.
    """

    rationale: str = Field(description="Two or three sentences: why this score.")
    satisfaction: Satisfaction = Field(description="Customer satisfaction from 1 (furious) to 10 (delighted).")
    resolved: bool = Field(description="Was the customer's issue resolved or a concrete resolution agreed?")
    policy_followed: bool = Field(description="Did the agent follow every company policy rule?")
    failure_turn: int | None = Field(
        description="Index of the first agent turn where the agent lost the customer, or null if none."
    )
    customer_in_role: bool = Field(description="Did the customer speak as a customer throughout?")


class Verdict(SatisfactionScore):
    """An episode's verdict: the customer's satisfaction and, with a checklist, task success.

    With a checklist, `policy_followed` comes from the policy items (not from the judge's overall
    impression) and `task_success` is the primary outcome: every `must` item met and no policy
    item broken. With several votes, `satisfaction` is their median and `satisfaction_votes` keeps
    each one.
    """

    criteria: list[CriterionResult] = Field(
        default_factory=list[CriterionResult], description="Per checklist item: met / not met / n.a. with evidence."
    )
    task_success: bool | None = Field(
        default=None, description="All must items met and no policy item broken; None without a checklist."
    )
    votes: int = Field(default=1, ge=1, description="Judgements this verdict combines.")
    satisfaction_votes: list[int] = Field(default_factory=list[int], description="Each vote's satisfaction.")

    @property
    def items_met(self) -> float | None:
        """The share of checklist items met (forbidden ones included: met = not broken); None without one."""
        decided = [r for r in self.criteria if r.status != "na"]
        return sum(r.status == "met" for r in decided) / len(decided) if decided else None

    @property
    def score(self) -> float:
        """Task success first, then the share of items met: `task_success + items_met / 2` (0 to 1.5).

        Comparing two episodes by `score` is comparing task success, and on a tie the items met, so
        paired tests get a decision from more pairs without ever letting partial credit outweigh
        success. Without a checklist: satisfaction / 10.
        """
        met = self.items_met
        if self.task_success is None or met is None:
            return self.satisfaction / 10
        return float(self.task_success) + met / 2
