"""Episode: one simulated dialogue with its events, ending, verdict and costs."""

from __future__ import annotations

from pydantic import Field

from coachlab.schema._base import Frozen
from coachlab.schema.events import AgentMessage, CustomerMessage, Event, RoleSlip, TerminationReason
from coachlab.schema.verdict import Verdict

__all__ = ["Episode", "RoleUsage"]


class RoleUsage(Frozen):
    """Model calls and tokens one role spent in an episode."""

    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: RoleUsage) -> RoleUsage:
        return RoleUsage(
            calls=self.calls + other.calls,
            cached_calls=self.cached_calls + other.cached_calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


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
