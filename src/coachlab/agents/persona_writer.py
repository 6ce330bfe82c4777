"""The persona writer: turns a one-line description into a validated `Persona`."""

from __future__ import annotations

import json
import re

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.models import ChatCompletionClient, SystemMessage, UserMessage
from pydantic import ValidationError

from coachlab.agents._context import ObservedContext
from coachlab.errors import ModelResponseError
from coachlab.schema import Persona

__all__ = ["build_persona_writer", "draft_persona"]

_SYSTEM = (
    "You write customer personas for customer-service simulations. Answer with one JSON object "
    "that matches the schema you are given, and nothing else."
)
_JSON = re.compile(r"\{.*\}", re.DOTALL)


def build_persona_writer(*, model_client: ChatCompletionClient) -> AssistantAgent:
    """Build the agent that drafts personas."""
    return AssistantAgent(
        name="persona_writer", model_client=model_client, system_message=None, model_context=ObservedContext()
    )


async def draft_persona(writer: AssistantAgent, description: str, *, persona_id: str, retries: int = 3) -> Persona:
    """Ask `writer` for a persona matching `description`; re-ask with the errors until it validates.

    Raises:
        ModelResponseError: No valid persona after `retries` re-asks.
    """
    schema = json.dumps(Persona.model_json_schema())
    ask = (
        f"Write a persona for: {description}\nUse id {persona_id!r}. Give a private goal, hidden constraints, "
        f"what satisfies them and what makes them give up. JSON schema:\n{schema}"
    )
    problem = ""
    context = writer.model_context
    assert isinstance(context, ObservedContext)
    for _ in range(retries + 1):
        content = ask + (f"\n\nYour last answer was invalid: {problem}\nFix it." if problem else "")
        context.observe([SystemMessage(content=_SYSTEM), UserMessage(content=content, source="user")])
        response = await writer.on_messages([], CancellationToken())
        message = response.chat_message
        text = message.content if isinstance(message, TextMessage) else ""
        found = _JSON.search(text)
        if not found:
            problem = "no JSON object found"
            continue
        try:
            data = json.loads(found.group(0))
            if isinstance(data, dict):
                data["id"] = persona_id
            return Persona.model_validate(data)
        except (json.JSONDecodeError, ValidationError) as exc:
            problem = (
                str(exc).splitlines()[0]
                if isinstance(exc, json.JSONDecodeError)
                else "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
            )
    raise ModelResponseError(f"the model gave no valid persona after {retries + 1} tries (last problem: {problem})")
