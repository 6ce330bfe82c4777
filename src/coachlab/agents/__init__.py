"""Agent factories over AutoGen's AssistantAgent (customer, service agent, judge, teacher), and draft checks.

The map of the packages is docs/architecture.md.
"""

from coachlab.agents._context import ObservedContext
from coachlab.agents.checklist import CHECKLIST_SYSTEM_PROMPT, LineAnswer, ask_line, build_line_grader, line_view
from coachlab.agents.criteria_writer import CriteriaDraft, CriterionDraft, ExampleLines, write_criteria, write_examples
from coachlab.agents.customer import (
    CustomerEnding,
    build_customer,
    customer_system_prompt,
    customer_view,
    parse_customer_line,
    role_slip,
)
from coachlab.agents.drafts import (
    StrategyDraft,
    StrategyDrafts,
    draft_problem,
    leaked_detail,
    private_details,
    redact_case_details,
)
from coachlab.agents.judge import (
    JUDGE_SYSTEM_PROMPT,
    ReplyComparison,
    build_comparer,
    build_judge,
    compare_replies,
    compare_view,
    judge_view,
    quote_data,
    survey_view,
)
from coachlab.agents.memory import CoachingMemory, CoachingMemoryConfig
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
    Hindsight,
    build_teacher,
    propose_children,
    propose_strategies,
    refine_strategy,
)

__all__ = [
    "CHECKLIST_SYSTEM_PROMPT",
    "JUDGE_SYSTEM_PROMPT",
    "ChildScenario",
    "ChildScenarios",
    "CoachingMemory",
    "CoachingMemoryConfig",
    "CriteriaDraft",
    "CriterionDraft",
    "CustomerEnding",
    "ExampleLines",
    "Hindsight",
    "LineAnswer",
    "ObservedContext",
    "ReplyComparison",
    "StrategyDraft",
    "StrategyDrafts",
    "ask_line",
    "build_comparer",
    "build_customer",
    "build_judge",
    "build_line_grader",
    "build_persona_writer",
    "build_service_agent",
    "build_teacher",
    "compare_replies",
    "compare_view",
    "customer_system_prompt",
    "customer_view",
    "draft_persona",
    "draft_problem",
    "judge_view",
    "leaked_detail",
    "line_view",
    "parse_agent_line",
    "parse_customer_line",
    "private_details",
    "propose_children",
    "propose_strategies",
    "quote_data",
    "redact_case_details",
    "refine_strategy",
    "role_slip",
    "service_system_prompt",
    "service_view",
    "survey_view",
    "write_criteria",
    "write_examples",
]
