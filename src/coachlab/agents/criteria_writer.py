"""The teacher writes a scenario's checklist once, when its author left `success_criteria` empty.

The checklist is what the judge grades, so it is written from what the judge is allowed to know:
the policy, the facts and the persona's private goal and `satisfied_when`. It is saved with the run
(and shown, editable, in the tree page) and never written again for the same scenario silently.
"""

from __future__ import annotations

import re
from typing import Literal

from autogen_agentchat.agents import AssistantAgent
from autogen_core import CancellationToken
from autogen_core.models import LLMMessage, SystemMessage, UserMessage
from pydantic import BaseModel, ConfigDict, Field

from coachlab.agents._structured import ask_structured
from coachlab.schema import Criterion, Scenario

__all__ = ["CriteriaDraft", "CriterionDraft", "ExampleLines", "write_criteria", "write_examples"]

_SYSTEM = (
    "You are an expert customer-service quality analyst. You write checklists of observable actions that "
    "a good agent takes in one case. Answer with one JSON object only."
)


class CriterionDraft(BaseModel):
    """One checklist item as the teacher writes it."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="What the agent does, completing 'In one message, the agent ...'.")
    level: Literal["must", "nice"] = "must"
    forbidden: bool = Field(default=False, description="true when the agent must NOT do it.")
    policy: bool = Field(default=False, description="true when it is a company rule.")
    example: str = Field(description="One line an agent would say that does it.")


class CriteriaDraft(BaseModel):
    """The teacher's checklist for one scenario."""

    model_config = ConfigDict(extra="forbid")

    criteria: list[CriterionDraft] = Field(min_length=1, max_length=8)


def _view(scenario: Scenario, problem: str | None) -> list[LLMMessage]:
    p = scenario.persona
    facts = "\n".join(f"- {k}: {v}" for k, v in scenario.facts.items())
    policy = "\n".join(f"- {rule}" for rule in scenario.policy)
    text = (
        f"Company: {scenario.company}. The problem: {scenario.issue}\nFacts the agent can see:\n{facts}\n"
        f"Policy:\n{policy}\nThe customer wants: {p.goal}\nThe customer is satisfied when: {p.satisfied_when}\n\n"
        "Write the checklist a reviewer uses to grade the agent in this case: 3 to 6 items, each one concrete "
        "action visible in a single agent message ('offers to reship the order by free express', 'gives a "
        "reference number'). Mark the actions that resolve the case per policy as level must. Add one or two "
        "items the agent must NOT do that break the policy (forbidden: true, policy: true), such as promising "
        "what the policy forbids or sending the customer to another team instead of acting. Give each item one "
        "example line an agent would say. "
        'JSON: {"criteria": [{"text": "...", "level": "must", "forbidden": false, "policy": false, '
        '"example": "..."}]}'
    )
    if problem:
        text += f"\n\nYour last answer could not be read ({problem}). Answer with the JSON object only."
    return [SystemMessage(content=_SYSTEM), UserMessage(content=text, source="coach")]


def _slug(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())[:6]
    return "-".join(words) or "item"


async def write_criteria(
    teacher: AssistantAgent,
    scenario: Scenario,
    *,
    retries: int = 2,
    cancellation_token: CancellationToken | None = None,
) -> list[Criterion]:
    """The scenario's checklist, written by `teacher` (built with `output=CriteriaDraft`).

    Raises:
        ModelResponseError: No readable answer after `retries` re-asks.
    """
    draft = await ask_structured(
        teacher,
        lambda problem: _view(scenario, problem),
        CriteriaDraft,
        retries=retries,
        who="the teacher",
        cancellation_token=cancellation_token,
    )
    criteria: list[Criterion] = []
    used: set[str] = set()
    for item in draft.criteria:
        if not item.text.strip():
            continue
        base = _slug(item.text)
        cid = base
        n = 2
        while cid in used:
            cid, n = f"{base}-{n}", n + 1
        used.add(cid)
        criteria.append(
            Criterion(
                id=cid,
                text=item.text.strip().rstrip("."),
                level=item.level,
                forbidden=item.forbidden,
                policy=item.policy or item.forbidden,
                example=item.example.strip() or None,
            )
        )
    return criteria


class ExampleLines(BaseModel):
    """More agent lines for one checklist item, as the teacher writes them."""

    model_config = ConfigDict(extra="forbid")

    lines: list[str] = Field(min_length=1, max_length=6, description="Lines an agent would say, each in other words.")


def _examples_view(scenario: Scenario, criterion: Criterion, count: int, problem: str | None) -> list[LLMMessage]:
    # Rewording one line is a task a small teacher does well; writing lines from the item alone, the
    # embedded 1.5B wrote lines about other items, and customer lines for forbidden ones.
    line = criterion.example or f"I {criterion.text}."
    does = "breaks a rule: the agent" if criterion.forbidden else "does this: the agent"
    text = (
        f"Company: {scenario.company}. The problem: {scenario.issue}\n\n"
        f'A customer-service agent said to the customer: "{line}"\nThat line {does} {criterion.text}.\n\n'
        f"Write {count} other lines the agent could say instead that do exactly the same thing, each in different "
        "words: other verbs, other nouns, another order, as different agents would say it. Keep every amount, "
        "date and name as it is. Each line is spoken by the agent to the customer. "
        f'JSON: {{"lines": ["...", "..."]}} with {count} lines.'
    )
    if problem:
        text += f"\n\nYour last answer could not be read ({problem}). Answer with the JSON object only."
    return [SystemMessage(content=_SYSTEM), UserMessage(content=text, source="coach")]


async def write_examples(
    teacher: AssistantAgent,
    scenario: Scenario,
    criterion: Criterion,
    *,
    count: int = 3,
    retries: int = 2,
    cancellation_token: CancellationToken | None = None,
) -> list[str]:
    """Up to `count` more agent lines that do `criterion` in `scenario`, in other words than its example.

    Lines that repeat the example or each other are dropped. `teacher` is built with `output=ExampleLines`.

    Raises:
        ModelResponseError: No readable answer after `retries` re-asks.
    """
    draft = await ask_structured(
        teacher,
        lambda problem: _examples_view(scenario, criterion, count, problem),
        ExampleLines,
        retries=retries,
        who="the teacher",
        cancellation_token=cancellation_token,
    )
    seen = {" ".join(e.lower().split()) for e in criterion.all_examples}
    lines: list[str] = []
    for line in draft.lines:
        text = " ".join(line.split()).strip()
        key = text.lower()
        if len(text) < 8 or key in seen:
            continue
        seen.add(key)
        lines.append(text)
    return lines[:count]
