"""Pydantic models shared by every part of coachlab."""

from coachlab.schema.episode import Episode, RoleUsage
from coachlab.schema.events import (
    AgentMessage,
    CustomerMessage,
    EpisodeEnded,
    Event,
    RoleSlip,
    StrategyShown,
    TerminationReason,
    ToolCall,
    ToolResult,
)
from coachlab.schema.persona import Patience, Persona
from coachlab.schema.scenario import DialogueTurn, Scenario, ScenarioSpec, Speaker
from coachlab.schema.verdict import Satisfaction, Verdict

__all__ = [
    "AgentMessage",
    "CustomerMessage",
    "DialogueTurn",
    "Episode",
    "EpisodeEnded",
    "Event",
    "Patience",
    "Persona",
    "RoleSlip",
    "RoleUsage",
    "Satisfaction",
    "Scenario",
    "ScenarioSpec",
    "Speaker",
    "StrategyShown",
    "TerminationReason",
    "ToolCall",
    "ToolResult",
    "Verdict",
]
