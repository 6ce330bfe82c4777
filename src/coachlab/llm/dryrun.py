"""Scripted stand-ins for every model of an experiment: runs the whole pipeline with no model."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from autogen_core.models import LLMMessage

from coachlab.llm.scripted import ScriptedChatCompletionClient, message_text
from coachlab.schema import Verdict

__all__ = ["dry_run_client", "dry_run_clients"]


def _customer(messages: Sequence[LLMMessage]) -> str:
    ask = message_text(messages[-1])
    if "first message" in ask:
        return "Hello, I have a problem with my account and I need it sorted out."
    if ask.count("Agent:") >= 2:
        return "Thanks, that is what I needed. [DONE]"
    return "Can you tell me exactly what happens next?"


def _agent(messages: Sequence[LLMMessage]) -> str:
    ask = message_text(messages[-1])
    if '"strategies"' in ask:  # the teacher writing strategies
        return json.dumps(
            {
                "strategies": [
                    {
                        "situation": "When the customer asks what happens next",
                        "guidance": "Name the next step and when it will happen.",
                    }
                ]
            }
        )
    if '"children"' in ask:  # the teacher writing harder scenarios
        return json.dumps({"children": [{"mutation": "less patient", "mood": "annoyed", "patience": "low"}]})
    if '"situation"' in ask:  # the teacher refining a strategy
        return json.dumps({"situation": "When the customer is unsure", "guidance": "Say exactly what happens next."})
    return "I understand. I have checked your records and here is what I can do for you today."


def _judge(messages: Sequence[LLMMessage]) -> str | Verdict:
    if "<reply A>" in message_text(messages[-1]):  # a pairwise comparison (imitation verification)
        return json.dumps({"rationale": "Dry run: no model was called.", "better": "same"})
    return Verdict(
        rationale="Dry run: no model was called.",
        satisfaction=7,
        resolved=True,
        policy_followed=True,
        failure_turn=None,
        customer_in_role=True,
    )


def dry_run_client(role: str) -> ScriptedChatCompletionClient:
    """A scripted client that plays `role` ("customer", "judge", or any agent) plausibly."""
    if role == "customer":
        return ScriptedChatCompletionClient(_customer, name="dry-run-customer", keep=0)
    if role == "judge":
        return ScriptedChatCompletionClient(_judge, name="dry-run-judge", keep=0)
    return ScriptedChatCompletionClient(_agent, name=f"dry-run-{role}", keep=0)


def dry_run_clients(names: Iterable[str]) -> dict[str, ScriptedChatCompletionClient]:
    """One dry-run client per model entry name."""
    return {name: dry_run_client(name) for name in names}
