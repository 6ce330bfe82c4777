"""Pydantic models shared by every part of coachlab.

The map of the packages is docs/architecture.md.
"""

from coachlab.schema.criterion import Criterion, CriterionLevel, CriterionResult, CriterionStatus
from coachlab.schema.dialogue import Dialogue, GuidanceProvider, Line
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
from coachlab.schema.strategy import (
    Attempt,
    AuditEntry,
    AuditStatus,
    Evidence,
    Guidance,
    MergedOrigin,
    Provenance,
    Strategy,
)
from coachlab.schema.verdict import Satisfaction, SatisfactionScore, Verdict

__all__ = [
    "AgentMessage",
    "Attempt",
    "AuditEntry",
    "AuditStatus",
    "Criterion",
    "CriterionLevel",
    "CriterionResult",
    "CriterionStatus",
    "CustomerMessage",
    "Dialogue",
    "DialogueTurn",
    "Episode",
    "EpisodeEnded",
    "Event",
    "Evidence",
    "Guidance",
    "GuidanceProvider",
    "Line",
    "MergedOrigin",
    "Patience",
    "Persona",
    "Provenance",
    "RoleSlip",
    "RoleUsage",
    "Satisfaction",
    "SatisfactionScore",
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
