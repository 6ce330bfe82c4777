"""Asking an agent for a typed answer, re-asking with the parse problem until it reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import StructuredMessage
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, LLMMessage
from pydantic import BaseModel, ValidationError

from coachlab.agents._context import ObservedContext
from coachlab.errors import ModelResponseError

__all__ = ["ask_structured", "structured_agent"]

OutT = TypeVar("OutT", bound=BaseModel)


async def ask_structured(
    agent: AssistantAgent,
    view: Callable[[str | None], list[LLMMessage]],
    output: type[OutT],
    *,
    retries: int,
    who: str,
    cancellation_token: CancellationToken | None = None,
) -> OutT:
    """Ask `agent` (built with `output_content_type=output`) for an `output`.

    Args:
        agent: An agent built by a coachlab factory (with an `ObservedContext`).
        view: Renders the agent's view; called with the last parse problem (None at first).
        output: The expected pydantic type.
        retries: Re-asks after the first try.
        who: Names the agent in the error ("the judge").
        cancellation_token: Cancels the model call.

    Raises:
        ModelResponseError: No readable answer after `retries` re-asks.
    """
    context = agent.model_context
    if not isinstance(context, ObservedContext):
        raise TypeError(f"agent {agent.name!r} must be built with an ObservedContext (use the coachlab factories)")
    problem: str | None = None
    for _ in range(retries + 1):
        context.observe(view(problem))
        try:
            response = await agent.on_messages([], cancellation_token or CancellationToken())
        except ValidationError as exc:
            first = exc.errors()[0]
            problem = f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}"
            continue
        message = response.chat_message
        content = cast(object, message.content) if isinstance(message, StructuredMessage) else None  # pyright: ignore[reportUnknownMemberType]
        if isinstance(content, output):
            return content
        problem = f"the answer was not the {output.__name__} JSON object"
    raise ModelResponseError(f"{who} gave no readable {output.__name__} after {retries + 1} tries ({problem})")


def structured_agent(
    *, model_client: ChatCompletionClient, name: str, output: type[BaseModel], description: str
) -> AssistantAgent:
    """An agent whose replies are parsed into `output`, with the `ObservedContext` that `ask_structured` needs."""
    return AssistantAgent(
        name=name,
        model_client=model_client,
        system_message=None,
        model_context=ObservedContext(),
        output_content_type=output,
        description=description,
    )
