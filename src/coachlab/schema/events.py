"""Events of an episode: a discriminated union on `type`, like AutoGen's messages."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, JsonValue

from coachlab.schema._base import Frozen

__all__ = [
    "AgentMessage",
    "CustomerMessage",
    "EpisodeEnded",
    "Event",
    "RoleSlip",
    "StrategyShown",
    "TerminationReason",
    "ToolCall",
    "ToolResult",
]


class TerminationReason(StrEnum):
    """Why an episode ended."""

    CUSTOMER_SATISFIED = "customer_satisfied"
    CUSTOMER_GAVE_UP = "customer_gave_up"
    MAX_TURNS = "max_turns"
    LOOP_DETECTED = "loop_detected"
    CUSTOMER_OUT_OF_ROLE = "customer_out_of_role"
    INFRASTRUCTURE_ERROR = "infrastructure_error"

    @property
    def is_dialogue_outcome(self) -> bool:
        """True when the dialogue itself ended the episode (it can be judged)."""
        return self is not TerminationReason.INFRASTRUCTURE_ERROR


class _Event(Frozen):
    turn: int = Field(ge=0, description="Dialogue turn index (one customer line + one agent line).")


class CustomerMessage(_Event):
    """A line the customer said."""

    type: Literal["customer_message"] = "customer_message"
    text: str
    origin: Literal["model", "prefix", "opening"] = Field(
        default="model",
        description="Who wrote it: the customer model, the scenario's prefix, or its opening line.",
    )


class AgentMessage(_Event):
    """A line the service agent said."""

    type: Literal["agent_message"] = "agent_message"
    text: str
    origin: Literal["model", "prefix", "mentor"] = Field(
        default="model",
        description="The agent model, the scenario's prefix, or the mentor (the teacher playing a turn of a "
        "mixed rollout in training).",
    )


class RoleSlip(_Event):
    """A customer line that was rejected because it read like the agent's (the customer was re-asked)."""

    type: Literal["role_slip"] = "role_slip"
    text: str
    rule: str


class ToolCall(_Event):
    """The agent called a tool."""

    type: Literal["tool_call"] = "tool_call"
    name: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue])


class ToolResult(_Event):
    """What a tool returned."""

    type: Literal["tool_result"] = "tool_result"
    name: str
    result: str


class StrategyShown(_Event):
    """Strategies placed in the service agent's prompt for this turn."""

    type: Literal["strategy_shown"] = "strategy_shown"
    strategy_ids: list[str]
    scores: list[float] = Field(default_factory=list[float])


class EpisodeEnded(_Event):
    """The episode ended."""

    type: Literal["episode_ended"] = "episode_ended"
    reason: TerminationReason
    detail: str = ""


Event = Annotated[
    CustomerMessage | AgentMessage | RoleSlip | ToolCall | ToolResult | StrategyShown | EpisodeEnded,
    Field(discriminator="type"),
]
