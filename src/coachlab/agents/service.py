"""The service agent: the student (or the teacher, as the reference) answering the customer."""

from __future__ import annotations

from collections.abc import Sequence

from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import AssistantMessage, ChatCompletionClient, LLMMessage, SystemMessage, UserMessage

from coachlab.agents._context import ObservedContext
from coachlab.agents._text import clean_line
from coachlab.library.coaching import coaching_parts
from coachlab.library.retrieval import Placement
from coachlab.schema import Guidance, Line, Scenario

__all__ = ["Guidance", "build_service_agent", "parse_agent_line", "service_system_prompt", "service_view"]


def service_system_prompt(
    scenario: Scenario, guidance: Sequence[Guidance] = (), placement: Placement = "system"
) -> str:
    """The service agent's system prompt: only what the company knows (never the private goal).

    The strategies' part of it is what `coaching_parts(guidance, placement)` puts in a system prompt.
    """
    view = scenario.public_view()
    lines = [
        f"You are a customer-service agent for {view['company']}, chatting with a customer "
        f"named {view['customer_name']}.",
        "Reply with your next message only: one to three short, friendly sentences. "
        "Never invent facts, prices or promises that are not in your records or policy.",
    ]
    facts = scenario.facts
    if facts:
        lines.append("Records you can see:")
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in facts.items()]
    lines.append("Company policy (always follow it):")
    lines += [f"- {rule}" for rule in scenario.policy]
    in_system, _ = coaching_parts(guidance, placement)
    if in_system:
        lines.append(in_system)  # what coachlab.add_coaching gives production
    return "\n".join(lines)


def service_view(
    scenario: Scenario,
    dialogue: list[Line],
    guidance: Sequence[Guidance] = (),
    placement: Placement = "system",
) -> list[LLMMessage]:
    """The agent's view: system prompt, then the dialogue as chat turns (customer = user).

    With `placement` other than `system`, a system message with the strategies goes right before
    the customer's last line, as `coachlab.add_coaching` places it in production.
    """
    view: list[LLMMessage] = [SystemMessage(content=service_system_prompt(scenario, guidance, placement))]
    for who, text in dialogue:
        if who == "customer":
            view.append(UserMessage(content=text, source="customer"))
        else:
            view.append(AssistantMessage(content=text, source="agent"))
    _, before_last = coaching_parts(guidance, placement)
    if before_last:
        users = [i for i, m in enumerate(view) if isinstance(m, UserMessage)]
        view.insert(users[-1] if users else len(view), SystemMessage(content=before_last))
    return view


def parse_agent_line(raw: str, *, customer_name: str) -> str:
    """Clean a service-agent reply into one message."""
    return clean_line(raw, own_labels=("Agent", "Support agent"), other_labels=(customer_name, "Customer"))


def build_service_agent(*, model_client: ChatCompletionClient, name: str = "agent") -> AssistantAgent:
    """Build the service agent; the environment gives it `service_view(...)` each turn.

    Strategies are not fixed at build time: the environment retrieves them per turn and renders
    them into the system prompt of that turn's view.
    """
    return AssistantAgent(
        name=name,
        model_client=model_client,
        system_message=None,
        model_context=ObservedContext(),
        description="The customer-service agent under evaluation.",
    )
