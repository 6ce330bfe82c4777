"""A dialogue as the roles pass it around: lines of (speaker, text), and the guidance the agent reads each turn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from coachlab.schema.scenario import Scenario, Speaker
from coachlab.schema.strategy import Guidance

__all__ = ["Dialogue", "GuidanceProvider", "Line"]

Line = tuple[Speaker, str]
"""One line of a dialogue: who said it ("customer" or "agent") and what was said."""

Dialogue = Sequence[Line]
"""The dialogue so far, oldest line first."""

GuidanceProvider = Callable[[Scenario, Dialogue], Awaitable[Sequence[Guidance]]]
"""Gives the strategies the service agent reads this turn (per-turn retrieval), from the case and the dialogue."""
