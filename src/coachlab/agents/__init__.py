"""Agent factories over AutoGen's AssistantAgent: customer, service agent, judge."""

from coachlab.agents._context import ObservedContext
from coachlab.agents.customer import (
    CustomerEnding,
    build_customer,
    customer_system_prompt,
    customer_view,
    parse_customer_line,
    role_slip,
)
from coachlab.agents.judge import (
    JUDGE_SYSTEM_PROMPT,
    ReplyComparison,
    build_comparer,
    build_judge,
    compare_replies,
    compare_view,
    judge_view,
)
from coachlab.agents.persona_writer import build_persona_writer, draft_persona
from coachlab.agents.service import (
    build_service_agent,
    parse_agent_line,
    service_system_prompt,
    service_view,
)
from coachlab.agents.teacher import (
    ChildScenario,
    ChildScenarios,
    StrategyDraft,
    StrategyDrafts,
    build_teacher,
    leaked_detail,
    propose_children,
    propose_strategies,
    refine_strategy,
)

__all__ = [
    "JUDGE_SYSTEM_PROMPT",
    "ChildScenario",
    "ChildScenarios",
    "CustomerEnding",
    "ObservedContext",
    "ReplyComparison",
    "StrategyDraft",
    "StrategyDrafts",
    "build_comparer",
    "build_customer",
    "build_judge",
    "build_persona_writer",
    "build_service_agent",
    "build_teacher",
    "compare_replies",
    "compare_view",
    "customer_system_prompt",
    "customer_view",
    "draft_persona",
    "judge_view",
    "leaked_detail",
    "parse_agent_line",
    "parse_customer_line",
    "propose_children",
    "propose_strategies",
    "refine_strategy",
    "role_slip",
    "service_system_prompt",
    "service_view",
]
