"""`persona draft`: the model's persona is validated and re-asked until it is right."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from autogen_core.models import LLMMessage

from coachlab.agents import build_persona_writer, draft_persona
from coachlab.errors import ModelResponseError
from coachlab.testing import ScriptedChatCompletionClient, message_text

GOOD = {
    "id": "ignored",
    "name": "Ruth",
    "description": "a retired teacher",
    "goal": "talk to a human",
    "satisfied_when": "a person calls back",
    "patience": "low",
}


def test_draft_is_reasked_with_the_validation_error_until_valid() -> None:
    answers = iter(['Sure! Here it is: {"name": "Ruth"}', "```json\n" + json.dumps(GOOD) + "\n```"])
    seen: list[str] = []

    def fn(messages: Sequence[LLMMessage]) -> str:
        seen.append(message_text(messages[-1]))
        return next(answers)

    writer = build_persona_writer(model_client=ScriptedChatCompletionClient(fn))
    persona = asyncio.run(draft_persona(writer, "retired teacher, hates chatbots", persona_id="ruth"))
    assert persona.id == "ruth" and persona.name == "Ruth" and persona.patience == "low"
    assert "retired teacher, hates chatbots" in seen[0]
    assert "goal: Field required" in seen[1]  # the second ask names what was missing


def test_draft_gives_up_with_a_clear_error() -> None:
    writer = build_persona_writer(model_client=ScriptedChatCompletionClient(lambda m: "no idea"))
    with pytest.raises(ModelResponseError, match="no valid persona after 2 tries"):
        asyncio.run(draft_persona(writer, "x", persona_id="x", retries=1))
