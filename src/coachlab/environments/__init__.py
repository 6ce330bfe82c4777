"""The episode environment: turn order, what each agent observes, termination, events.

The map of the packages is docs/architecture.md.
"""

from coachlab.environments.bus import EventBus, Observer
from coachlab.environments.episode import (
    EnvironmentConfig,
    EpisodeAgents,
    ExpertConfig,
    JudgeResult,
    ReplySearch,
    agent_reply,
    judge_dialogue,
    judge_episode,
    run_episode,
)
from coachlab.environments.grading import JudgePanel
from coachlab.environments.runner import CHECKLIST_CONTEXT, EpisodeRunner, mixed_turns

__all__ = [
    "CHECKLIST_CONTEXT",
    "EnvironmentConfig",
    "EpisodeAgents",
    "EpisodeRunner",
    "EventBus",
    "ExpertConfig",
    "JudgePanel",
    "JudgeResult",
    "Observer",
    "ReplySearch",
    "agent_reply",
    "judge_dialogue",
    "judge_episode",
    "mixed_turns",
    "run_episode",
]
