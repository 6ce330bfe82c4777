"""Episode: one simulated dialogue with its events, ending, verdict and costs."""

from __future__ import annotations

from typing import TypeVar

from pydantic import Field

from coachlab.schema._base import Frozen
from coachlab.schema.events import AgentMessage, CustomerMessage, Event, RoleSlip, TerminationReason
from coachlab.schema.verdict import Verdict

__all__ = ["Episode", "RoleUsage"]

_Amount = TypeVar("_Amount", int, float)


class RoleUsage(Frozen):
    """Model calls and tokens one role spent in an episode, and what they cost the engine.

    `prompt_tokens` is what was sent; `prompt_processed` is the part the engine had to process (the
    rest came from its prompt cache: the KV prefix an in-process llama.cpp model kept from its last
    call, a server's prompt cache). On CPU, processed prompt tokens are most of an episode's time.
    A call answered from coachlab's response cache counts what it cost when it was made, like its
    tokens. `None` means unknown: the backend does not report it (or the record predates the field).
    """

    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_processed: int | None = Field(
        default=None, description="Prompt tokens the engine processed (not from its prompt cache); null: unknown."
    )
    model_seconds: float | None = Field(
        default=None, description="Wall-clock seconds of the model calls (no wait for a free slot); null: unknown."
    )

    def __add__(self, other: RoleUsage) -> RoleUsage:
        seconds = _plus(self.model_seconds, self.calls, other.model_seconds, other.calls)
        return RoleUsage(
            calls=self.calls + other.calls,
            cached_calls=self.cached_calls + other.cached_calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            prompt_processed=_plus(self.prompt_processed, self.calls, other.prompt_processed, other.calls),
            model_seconds=None if seconds is None else round(seconds, 3),
        )

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


def _plus(a: _Amount | None, a_calls: int, b: _Amount | None, b_calls: int) -> _Amount | None:
    """The sum of two measured amounts; unknown (None) once a side with calls does not know its amount.

    A side without calls adds nothing, known or not, so `RoleUsage()` is the sum's neutral element.
    """
    if a is None:
        return b if a_calls == 0 else None
    if b is None:
        return a if b_calls == 0 else None
    return a + b


class Episode(Frozen):
    """One trial of one scenario under one condition."""

    id: str = Field(description="'<scenario>/<condition>/<agent model>/<trial>'; unique within a run.")
    scenario_id: str
    condition: str = "baseline"
    agent_model: str = Field(description="The model entry that played the service agent.")
    trial: int = Field(ge=0)
    seed: int
    events: list[Event]
    termination: TerminationReason
    termination_detail: str = ""
    verdict: Verdict | None = None
    judge_error: str | None = None
    simulator_fault: str | None = Field(
        default=None,
        description="Why the simulated customer spoiled the episode (out of role, its loop, invented facts): never "
        "judged, scored or taught from; counted in every table.",
    )
    usage: dict[str, RoleUsage] = Field(default_factory=dict[str, RoleUsage])
    duration_s: float = 0.0

    @property
    def dialogue(self) -> list[CustomerMessage | AgentMessage]:
        """The spoken lines in order (prefix included)."""
        return [e for e in self.events if isinstance(e, CustomerMessage | AgentMessage)]

    @property
    def turns(self) -> int:
        """Number of customer lines said in this episode (prefix excluded)."""
        return sum(1 for e in self.events if isinstance(e, CustomerMessage) and e.origin != "prefix")

    @property
    def role_slips(self) -> int:
        """Customer lines rejected by the role guard."""
        return sum(1 for e in self.events if isinstance(e, RoleSlip))

    @property
    def scored(self) -> bool:
        """True when the episode counts as evidence about the agent: judged, and no simulator fault."""
        return self.verdict is not None and self.simulator_fault is None

    @property
    def judged(self) -> bool:
        """True when the episode carries a real verdict (not an infrastructure or judge error)."""
        return self.verdict is not None
