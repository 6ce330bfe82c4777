"""Verdict: the judge's structured score of one episode."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from coachlab.schema._base import Frozen

__all__ = ["Satisfaction", "Verdict"]

# A Literal rather than ge/le: llama.cpp's JSON-schema grammar ignores integer bounds.
Satisfaction = Literal[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


class Verdict(Frozen):
    """How the customer would rate the service, as the judge reads the transcript.

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
