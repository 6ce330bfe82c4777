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
from coachlab.agents.judge import JUDGE_SYSTEM_PROMPT, build_judge, judge_view
from coachlab.agents.persona_writer import build_persona_writer, draft_persona
from coachlab.agents.service import (
    build_service_agent,
    parse_agent_line,
    service_system_prompt,
    service_view,
)

__all__ = [
    "JUDGE_SYSTEM_PROMPT",
    "CustomerEnding",
    "ObservedContext",
    "build_customer",
    "build_judge",
    "build_persona_writer",
    "build_service_agent",
    "customer_system_prompt",
    "customer_view",
    "draft_persona",
    "judge_view",
    "parse_agent_line",
    "parse_customer_line",
    "role_slip",
    "service_system_prompt",
    "service_view",
]
