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
from coachlab.schema.strategy import AuditEntry, AuditStatus, Evidence, Guidance, Provenance, Strategy
from coachlab.schema.verdict import Satisfaction, Verdict

__all__ = [
    "AgentMessage",
    "AuditEntry",
    "AuditStatus",
    "CustomerMessage",
    "DialogueTurn",
    "Episode",
    "EpisodeEnded",
    "Event",
    "Evidence",
    "Guidance",
    "Patience",
    "Persona",
    "Provenance",
    "RoleSlip",
    "RoleUsage",
    "Satisfaction",
    "Scenario",
    "ScenarioSpec",
    "Speaker",
    "Strategy",
    "StrategyShown",
    "TerminationReason",
    "ToolCall",
    "ToolResult",
    "Verdict",
]
