"""Simulator faults: episodes spoiled by the simulated customer, never scored against the agent.

A small customer model sometimes leaves its role, starts a loop, or makes up facts. Such an
episode says nothing about the service agent: it is counted and shown in every table, but never
judged, never used to find a failure point, never taught from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from coachlab.schema import CustomerMessage, Event, Scenario, TerminationReason

__all__ = ["invented_ids", "simulator_fault"]

# Identifiers a customer would quote from a record: letters and digits in one token with a digit run
# (MC-48213, AB1234, #55102), card endings and reference numbers included. Plain amounts and dates are
# left alone: customers round, paraphrase and guess those honestly.
_ID = re.compile(r"\b(?=[A-Za-z0-9-]*\d{3,})(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\b")


def _ids(text: str) -> set[str]:
    return {m.group(0).upper() for m in _ID.finditer(text)}


def invented_ids(scenario: Scenario, events: Sequence[Event]) -> list[str]:
    """Identifiers the customer model said that appear nowhere in the case or in earlier lines."""
    known = _ids(scenario.model_dump_json())
    invented: list[str] = []
    for event in events:
        text = getattr(event, "text", None)
        if not isinstance(text, str):
            continue
        if isinstance(event, CustomerMessage) and event.origin == "model":
            invented += sorted(i for i in _ids(text) if i not in known and i not in invented)
        known |= _ids(text)
    return invented


def simulator_fault(
    scenario: Scenario, events: Sequence[Event], termination: TerminationReason, detail: str
) -> str | None:
    """Why the episode is the simulator's fault, or None when the agent can be judged on it."""
    if termination is TerminationReason.CUSTOMER_OUT_OF_ROLE:
        return f"customer out of role: {detail}" if detail else "customer out of role"
    if termination is TerminationReason.LOOP_DETECTED and "customer" in detail:
        return "the customer looped (repeated its line)"
    invented = invented_ids(scenario, events)
    if invented:
        return f"the customer invented record identifiers not in the case: {', '.join(invented)}"
    return None
