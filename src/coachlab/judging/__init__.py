"""Judging an episode against its scenario's checklist: criteria, votes, task success, calibration.

The model calls live in `coachlab.agents.checklist` (one yes/no question per agent message and
criterion) and are orchestrated by `coachlab.environments.grading`; this package holds what needs
no model: which lines are graded, the similarity gate, majority votes, task success, simulator
faults and the calibration set.

The map of the packages is docs/architecture.md.
"""

from coachlab.judging.checklist import (
    GradedLine,
    JudgeConfig,
    LineVotes,
    decide_criterion,
    graded_lines,
    policy_followed,
    task_success,
)
from coachlab.judging.faults import simulator_fault

__all__ = [
    "GradedLine",
    "JudgeConfig",
    "LineVotes",
    "decide_criterion",
    "graded_lines",
    "policy_followed",
    "simulator_fault",
    "task_success",
]
