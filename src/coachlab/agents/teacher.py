"""The teacher: replies where the student failed, writes strategies, refines them, writes harder scenarios.

Every teacher output except its own reply is structured (pydantic via JSON-schema output) and
re-asked on a parse failure, like the judge. The teacher sees only what the service agent saw
(public scenario view and the dialogue), so its strategies cannot lean on the persona's private
goal; it is told never to name the persona or quote account facts, so strategies generalise.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Sequence
from typing import TypeVar

from autogen_agentchat.agents import AssistantAgent
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, LLMMessage, SystemMessage, UserMessage
from pydantic import BaseModel, ConfigDict, Field

from coachlab.agents._structured import ask_structured, structured_agent
from coachlab.errors import ModelResponseError
from coachlab.schema import Scenario

__all__ = [
    "ChildScenario",
    "ChildScenarios",
    "Hindsight",
    "StrategyDraft",
    "StrategyDrafts",
    "build_teacher",
    "leaked_detail",
    "private_details",
    "propose_children",
    "propose_strategies",
    "refine_strategy",
]

logger = logging.getLogger(__name__)

OutT = TypeVar("OutT", bound=BaseModel)

TEACHER_SYSTEM_PROMPT = (
    "You are an expert customer-service coach. You study chats between a customer and a junior agent "
    "and write short, general guidance that makes the agent better. Answer with one JSON object only."
)


class StrategyDraft(BaseModel):
    """A candidate strategy as the teacher writes it."""

    model_config = ConfigDict(extra="forbid")

    situation: str = Field(description="When it applies, starting 'When the customer ...'.")
    guidance: str = Field(description="What the agent should do, in one or two sentences.")


class StrategyDrafts(BaseModel):
    """The teacher's candidate strategies for one failure."""

    model_config = ConfigDict(extra="forbid")

    strategies: list[StrategyDraft] = Field(min_length=1, max_length=5)


class ChildScenario(BaseModel):
    """A harder variant of a scenario, written from its failure point."""

    model_config = ConfigDict(extra="forbid")

    mutation: str = Field(description="One line: how this variant is harder.")
    mood: str = Field(description="The customer's new mood.")
    patience: str = Field(description="very low, low, medium or high.")
    extra_constraint: str | None = Field(default=None, description="A new private constraint, if any.")
    issue: str | None = Field(default=None, description="A reworded issue, if it changes.")


class ChildScenarios(BaseModel):
    """The teacher's harder variants."""

    model_config = ConfigDict(extra="forbid")

    children: list[ChildScenario] = Field(min_length=1, max_length=5)


def build_teacher(
    *, model_client: ChatCompletionClient, output: type[BaseModel], name: str = "teacher"
) -> AssistantAgent:
    """Build a teacher agent that answers with `output` (one agent per kind of output)."""
    return structured_agent(
        model_client=model_client, name=name, output=output, description="A strong model that coaches the student."
    )


def _dialogue_text(dialogue: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f"{'Customer' if who == 'customer' else 'Agent'}: {text}" for who, text in dialogue)


def _public_case(scenario: Scenario) -> str:
    policy = "\n".join(f"- {rule}" for rule in scenario.policy)
    return f"Company: {scenario.company}. Case: {scenario.title}.\nPolicy:\n{policy}"


async def _ask_structured(
    agent: AssistantAgent, prompt: str, output: type[OutT], *, retries: int, token: CancellationToken | None
) -> OutT:
    def view(problem: str | None) -> list[LLMMessage]:
        note = f"\n\nYour last answer could not be read ({problem}). Answer with the JSON object only."
        text = prompt + (note if problem else "")
        return [SystemMessage(content=TEACHER_SYSTEM_PROMPT), UserMessage(content=text, source="coach")]

    return await ask_structured(agent, view, output, retries=retries, who="the teacher", cancellation_token=token)


_WORDS = re.compile(r"[a-z][a-z'-]+|\d[\d.,/:-]*\d|\d")
_FILLER = frozenset(("a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "for", "with", "by", "from", "is"))


def _detail_phrases(value: str) -> list[str]:
    """The fragments of a case fact that only this case would mention.

    The whole value; every number of three or more digits; and every pair of adjacent content
    words ("cookware set", "sage green") - single words are left alone, since a general strategy
    may well say "delayed" or "refund".
    """
    words = [w for w in _WORDS.findall(value.lower()) if w not in _FILLER]
    numbers = [w for w in words if sum(c.isdigit() for c in w) >= 3]
    pairs = [f"{a} {b}" for a, b in itertools.pairwise(words) if not (a[0].isdigit() or b[0].isdigit())]
    return [value.lower().strip(), *numbers, *pairs]


_CAPITALISED = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]{2,}\b")
_NUMBER = re.compile(r"\$?\d+(?:[.,:]\d+)*(?:\s?(?:am|pm))?", re.IGNORECASE)


def private_details(scenario: Scenario, *, pairs: bool = False) -> list[str]:
    """Fragments of the persona's private fields that the public case does not also say.

    Names and days (capitalised words inside a sentence: "Saturday", "Boston") and numbers ("$20",
    "9am"); with `pairs`, also adjacent content-word pairs ("family event", "birthday gift"), which
    are too common to refuse in a strategy but give a title away.
    """
    p = scenario.persona
    private = [p.goal, p.satisfied_when, p.gives_up_when or "", *p.hidden_constraints]
    public = " ".join(
        [
            scenario.issue,
            scenario.company,
            scenario.opening_line or "",
            *scenario.policy,
            *map(str, scenario.facts.values()),
        ]
    ).lower()
    found: list[str] = []
    for text in private:
        for sentence in re.split(r"(?<=[.!?;])\s+", text):
            found += [m.group(0) for m in _CAPITALISED.finditer(sentence)]
            found += [m.group(0).strip() for m in _NUMBER.finditer(sentence)]
            if pairs:
                found += _detail_phrases(sentence)[1:]
    return [f for f in dict.fromkeys(found) if len(f) >= 2 and f.lower() not in public]


def leaked_detail(draft: StrategyDraft, scenario: Scenario) -> str | None:
    """A case detail that a strategy quotes, or None.

    Strategies must generalise: one that names the customer or the company (or its first word, the
    brand), quotes a fact of the case (an order number, an amount, "sage green"), or names a private
    fact of the persona (a day, a place, an amount) is rejected.
    """
    text = " ".join(w for w in _WORDS.findall(f"{draft.situation} {draft.guidance}".lower()) if w not in _FILLER)
    details = [
        *(n.lower() for n in scenario.persona.name.split()),
        *([scenario.company.lower(), scenario.company.split()[0].lower()] if scenario.company != "the company" else []),
        *(p for v in scenario.facts.values() if not isinstance(v, bool) for p in _detail_phrases(str(v))),
        *(d.lower() for d in private_details(scenario)),
    ]
    for detail in details:
        d = " ".join(w for w in _WORDS.findall(detail) if w not in _FILLER)
        if len(d) >= 4 and re.search(rf"(?<![\w-]){re.escape(d)}(?![\w-])", text):
            return detail
    return _copied_private(text, scenario)


_SPAN = 4
"""Content words in a row that a strategy may not copy from a private field of the persona."""


def _copied_private(text: str, scenario: Scenario) -> str | None:
    """A run of `_SPAN` content words copied from the persona's goal, constraints or `satisfied_when`.

    The hindsight teacher reads them; a strategy that repeats them ("a date that fits her deadline and a
    reference number") is written for this customer, not for a situation the agent can see.
    """
    p = scenario.persona
    words = f" {text} "
    for field in [p.goal, p.satisfied_when, p.gives_up_when or "", *p.hidden_constraints]:
        content = [w for w in _WORDS.findall(field.lower()) if w not in _FILLER]
        for i in range(len(content) - _SPAN + 1):
            run = " ".join(content[i : i + _SPAN])
            if f" {run} " in words:
                return run
    return None


class Hindsight(BaseModel):
    """What the teacher learns after the fact about a failure: what the student could never see."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    missed: list[str] = Field(default_factory=list[str], description="Checklist items the student did not meet.")
    broken: list[str] = Field(default_factory=list[str], description="Forbidden items the student did.")
    rationale: str = Field(default="", description="The judge's rationale on the failed rollout.")
    goal: str = ""
    satisfied_when: str = ""
    best_reply: str | None = Field(default=None, description="The student's best rollout's line at the same point.")


def _hindsight_text(h: Hindsight) -> str:
    lines = ["What we know in hindsight (the junior agent could not see this):"]
    if h.goal:
        lines.append(f"- The customer wanted: {h.goal}")
    if h.satisfied_when:
        lines.append(f"- The customer would have been satisfied when: {h.satisfied_when}")
    if h.missed:
        lines.append("- The junior agent never did: " + "; ".join(h.missed))
    if h.broken:
        lines.append("- The junior agent broke the rule: " + "; ".join(h.broken))
    if h.rationale:
        lines.append(f"- The reviewer said: {h.rationale}")
    if h.best_reply:
        lines.append(f"- In its best attempt at this case the junior agent said instead: {h.best_reply}")
    return "\n".join(lines)


async def propose_strategies(
    teacher: AssistantAgent,
    scenario: Scenario,
    dialogue: Sequence[tuple[str, str]],
    *,
    student_reply: str,
    teacher_reply: str,
    count: int = 2,
    hindsight: Hindsight | None = None,
    retries: int = 2,
    cancellation_token: CancellationToken | None = None,
) -> list[StrategyDraft]:
    """Contrast the student's reply at the failure point with the teacher's and write strategies.

    With `hindsight`, the teacher also reads what only hindsight shows (the missed checklist items,
    the judge's rationale, the customer's private goal, the student's best attempt); strategies
    that quote a private fact are refused like any other case detail.

    Raises:
        ModelResponseError: No readable answer after `retries` re-asks.
    """
    context = f"\n\n{_hindsight_text(hindsight)}" if hindsight is not None else ""
    prompt = (
        f"{_public_case(scenario)}\n\nThe chat up to the point where the junior agent lost the customer:\n"
        f"{_dialogue_text(dialogue)}\n\nThe junior agent replied: {student_reply}\nAn expert replied instead: "
        f"{teacher_reply}{context}\n\nWrite {count} strategies that make the junior agent do what was missing in "
        "situations like this one. Each has a situation the agent can recognise from the chat alone ('When the "
        "customer says ...', describing the kind of moment, not this case) and guidance: ONE action in the "
        "imperative that the agent takes in its next reply ('Offer ... and give ...'), never a description of what "
        "the expert did. Keep them general: never use names, products, order numbers, dates or amounts from this "
        "chat, and never tell the agent to send the customer elsewhere. "
        'JSON: {"strategies": [{"situation": "...", "guidance": "..."}]}'
    )
    why = ""
    for _ in range(retries + 1):
        drafts = await _ask_structured(teacher, prompt, StrategyDrafts, retries=retries, token=cancellation_token)
        general = [d for d in drafts.strategies if leaked_detail(d, scenario) is None and not _descriptive(d)]
        if general:
            return general[:count]
        first = drafts.strategies[0]
        leaked = leaked_detail(first, scenario)
        why = f"quoted {leaked!r}" if leaked is not None else "described the expert"
        logger.debug("refused strategy drafts (%s): %s", why, [d.model_dump() for d in drafts.strategies])
        if leaked is not None:
            prompt += f"\n\nYour strategies quoted a detail of this case ({leaked!r}). Write them without case details."
        else:
            prompt += "\n\nYour guidance described what the expert did. Write it as one action: 'Do ...'."
    raise ModelResponseError(
        f"every strategy the teacher wrote quoted case details or described the expert after {retries + 1} tries "
        f"(the last: {why})"
    )


_DESCRIPTIVE = re.compile(
    r"\b(the expert|the junior|the agent (did|could have|should have)|could have)\b", re.IGNORECASE
)


def _descriptive(draft: StrategyDraft) -> bool:
    """Guidance that narrates ("The expert provided ...", "the junior could have ...") instead of instructing."""
    return bool(_DESCRIPTIVE.search(draft.guidance))


async def refine_strategy(
    teacher: AssistantAgent,
    scenario: Scenario,
    draft: StrategyDraft,
    *,
    result: str,
    retries: int = 2,
    cancellation_token: CancellationToken | None = None,
) -> StrategyDraft:
    """Rewrite a strategy that did not pass verification, given what was measured.

    Raises:
        ModelResponseError: No readable answer after `retries` re-asks.
    """
    prompt = (
        f"{_public_case(scenario)}\n\nThis strategy was tested on the junior agent and did not help enough:\n"
        f"Situation: {draft.situation}\nGuidance: {draft.guidance}\nResult: {result}\n\n"
        "Rewrite it so that a small model follows it: concrete, one action, general (no names or numbers). "
        'JSON: {"situation": "...", "guidance": "..."}'
    )
    return await _ask_structured(teacher, prompt, StrategyDraft, retries=retries, token=cancellation_token)


async def propose_children(
    teacher: AssistantAgent,
    scenario: Scenario,
    dialogue: Sequence[tuple[str, str]],
    *,
    count: int = 2,
    retries: int = 2,
    cancellation_token: CancellationToken | None = None,
) -> list[ChildScenario]:
    """Write harder variants that start from the failure point (angrier, less patient, a new constraint).

    Raises:
        ModelResponseError: No readable answer after `retries` re-asks.
    """
    persona = scenario.persona
    prompt = (
        f"{_public_case(scenario)}\nThe customer: {persona.description} Mood: {persona.mood}. Patience: "
        f"{persona.patience}. Wants: {persona.goal}\n\nThe chat so far:\n{_dialogue_text(dialogue)}\n\n"
        f"Write {count} harder variants of this customer for the same chat: angrier, less patient, an extra "
        "constraint, or a request the policy forbids. Each has a one-line mutation, the new mood and patience "
        '(very low, low, medium or high), and optionally an extra private constraint. JSON: {"children": '
        '[{"mutation": "...", "mood": "...", "patience": "low", "extra_constraint": null, "issue": null}]}'
    )
    result = await _ask_structured(teacher, prompt, ChildScenarios, retries=retries, token=cancellation_token)
    return result.children[:count]
