"""The teacher: replies where the student failed, writes strategies, refines them, writes harder scenarios.

Every teacher output except its own reply is structured (pydantic via JSON-schema output) and
re-asked on a parse failure, like the judge. Writing strategies, the teacher sees the public case
and the dialogue, and in hindsight what the student missed (checklist items, the judge's words,
optionally the persona's private goal). A strategy is a situation, one action and the words to say
for it; the case's facts in it are replaced by what they are, and one that still quotes the case,
the chat or a private fact, or orders a forbidden item, is refused, so strategies generalise.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from autogen_agentchat.agents import AssistantAgent
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, LLMMessage, SystemMessage, UserMessage
from pydantic import BaseModel, ConfigDict, Field

from coachlab.agents._structured import ask_structured, structured_agent
from coachlab.agents.drafts import StrategyDraft, StrategyDrafts, draft_problem, redact_case_details
from coachlab.errors import ModelResponseError
from coachlab.schema import Dialogue, Scenario

__all__ = [
    "ChildScenario",
    "ChildScenarios",
    "Hindsight",
    "build_teacher",
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


def _dialogue_text(dialogue: Dialogue) -> str:
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


class Hindsight(BaseModel):
    """What the teacher learns after the fact about a failure: what the student could never see."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    missed: list[str] = Field(default_factory=list[str], description="Checklist items the student did not meet.")
    examples: list[str] = Field(
        default_factory=list[str],
        # The words a strategy's `say` can teach: the 0.5B student given such words as a strategy met
        # +0.72 items per reply, given the item as an order +0.11 (benchmarks/follows_guidance.py).
        description="What a good agent says for the missed items (their checklist examples).",
    )
    broken: list[str] = Field(default_factory=list[str], description="Forbidden items the student did.")
    rationale: str = Field(default="", description="The judge's rationale on the failed rollout.")
    goal: str = ""
    satisfied_when: str = ""
    best_reply: str | None = Field(default=None, description="The student's best rollout's line at the same point.")


def _hindsight_text(h: Hindsight) -> str:
    # What the agent must do comes first; the private side last and marked, since a small teacher
    # copies whatever it read first into the strategy (measured: the goal's words, every draft).
    lines = ["What we know in hindsight (the junior agent could not see this):"]
    if h.missed:
        lines.append("- The junior agent never did: " + "; ".join(h.missed))
    if h.examples:
        lines.append("- A good agent would have said, for example: " + " ".join(f'"{e}"' for e in h.examples))
    if h.broken:
        lines.append("- The junior agent did what it must NEVER do (avoid this): " + "; ".join(h.broken))
    if h.rationale:
        lines.append(f"- The reviewer said: {h.rationale}")
    if h.best_reply:
        lines.append(f"- In its best attempt at this case the junior agent said instead: {h.best_reply}")
    if h.goal:
        lines.append(f"- Private to this customer, never repeat these words: the customer wanted {h.goal}")
    if h.satisfied_when:
        lines.append(f"- Private too: the customer would have been satisfied when {h.satisfied_when}")
    return "\n".join(lines)


async def propose_strategies(
    teacher: AssistantAgent,
    scenario: Scenario,
    dialogue: Dialogue,
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
    the forbidden ones done, the judge's rationale, the student's best attempt, and the customer's
    private goal when given). Each draft's words to say are folded into its guidance, case facts
    are redacted (`redact_case_details`), and drafts that still quote the case, the chat or a
    private fact, order a forbidden item or narrate are refused and re-asked; good guidance under a
    bad situation gets a situation restated from the public chat alone.

    Raises:
        ModelResponseError: No readable answer after `retries` re-asks.
    """
    context = f"\n\n{_hindsight_text(hindsight)}" if hindsight is not None else ""
    prompt = (
        f"{_public_case(scenario)}\n\nThe chat up to the point where the junior agent lost the customer:\n"
        f"{_dialogue_text(dialogue)}\n\nThe junior agent replied: {student_reply}\nAn expert replied instead: "
        f"{teacher_reply}{context}\n\nWrite {count} strategies that make the junior agent do what was missing in "
        "situations like this one. Each has a situation the agent can recognise from the chat alone ('When the "
        "customer says ...', describing the kind of moment, not this case), guidance: ONE action in the "
        "imperative that the agent takes in its next reply, never a description of what the expert did, and say: "
        "the words the agent says for it. Keep them general: never use names, products, order numbers, dates or "
        "amounts from this chat, and never tell the agent to send the customer elsewhere. "
        'JSON: {"strategies": [{"situation": "When the customer ...", "guidance": "Offer ...", "say": "I can ..."}]}'
    )
    why = ""
    for _ in range(retries + 1):
        drafts = await _ask_structured(teacher, prompt, StrategyDrafts, retries=retries, token=cancellation_token)
        redacted = [redact_case_details(d.folded(), scenario) for d in drafts.strategies]
        general = [d for d in redacted if draft_problem(d, scenario, dialogue) is None]
        if not general:  # good actions under a situation that quotes the case: ask for the situation alone
            for d in redacted:
                if (
                    draft_problem(d.model_copy(update={"situation": "When"}), scenario, dialogue, situation=False)
                    is None
                ):
                    fixed = await _restate_situation(teacher, scenario, dialogue, d, retries, cancellation_token)
                    if fixed is not None:
                        general.append(fixed)
                if len(general) >= count:
                    break
        if general:
            return general[:count]
        first = redacted[0]
        why = draft_problem(first, scenario, dialogue) or "refused"
        logger.debug("refused strategy drafts (%s): %s", why, [d.model_dump() for d in drafts.strategies])
        if why == "described the expert":
            prompt += "\n\nYour guidance described what the expert did. Write it as one action: 'Do ...'."
        else:
            prompt += f"\n\nYour strategies {why}. Write them in general words, without details of this case."
    raise ModelResponseError(
        f"every strategy the teacher wrote quoted case details or described the expert after {retries + 1} tries "
        f"(the last: {why})"
    )


async def _restate_situation(
    teacher: AssistantAgent,
    scenario: Scenario,
    dialogue: Dialogue,
    draft: StrategyDraft,
    retries: int,
    token: CancellationToken | None,
) -> StrategyDraft | None:
    """The draft under a situation written from the public chat alone, or None when that one is unusable too.

    A small teacher that read the persona's private goal repeats it as the situation ("When the customer
    wants to know exactly what will happen next"), or quotes the customer; its guidance is often right.
    This prompt shows no private field, so the new situation can only describe what the agent saw.
    """
    prompt = (
        f"{_public_case(scenario)}\n\nThe chat:\n{_dialogue_text(dialogue)}\n\nA coach wrote this advice for the "
        f"agent: {draft.guidance}\n\nWrite the situation in which an agent should follow this advice: one short "
        "sentence starting 'When the customer', describing the kind of moment in general words that would fit other "
        "customers and companies too. Never quote the customer, never use names, products, numbers or dates. "
        'JSON: {"strategies": [{"situation": "When the customer ...", "guidance": "the advice as given"}]}'
    )
    try:
        answer = await _ask_structured(teacher, prompt, StrategyDrafts, retries=retries, token=token)
    except ModelResponseError:
        return None
    situation = answer.strategies[0].situation  # the guidance stays the one that was fine
    fixed = redact_case_details(draft.model_copy(update={"situation": situation}), scenario)
    why = draft_problem(fixed, scenario, dialogue)
    logger.debug("restated situation %r: %s", situation, why or "kept")
    return fixed if why is None else None


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
        "Rewrite it so that a small model follows it: one concrete action as guidance, and the words the agent says "
        "for it, general (no names or numbers). "
        'JSON: {"situation": "When the customer ...", "guidance": "Offer ...", "say": "I can ..."}'
    )
    refined = await _ask_structured(teacher, prompt, StrategyDraft, retries=retries, token=cancellation_token)
    return redact_case_details(refined.folded(), scenario)


async def propose_children(
    teacher: AssistantAgent,
    scenario: Scenario,
    dialogue: Dialogue,
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
