"""Scripted stand-ins for every model of an experiment: runs the whole pipeline with no model.

The stand-ins play a small story, so a dry run exercises every step of the loop: the student
(any agent model but the teacher) answers vaguely and loses the customer, unless a coach's
guidance tells it to name the next step; the teacher always names it; the judge scores a chat
high when the agent gave the next step and blames agent turn 0 otherwise (and its checklist, which
the teacher writes, is met by the line that names it); the teacher proposes
that guidance and a useless one, so verification admits one and rejects the other; the customer
is satisfied by a next step and gives up after three vague answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence

from autogen_core.models import LLMMessage

from coachlab.llm.scripted import ScriptedChatCompletionClient, message_text
from coachlab.schema import SatisfactionScore

__all__ = ["DRY_RUN_GOOD_REPLY", "dry_run_client", "dry_run_clients"]

DRY_RUN_GOOD_REPLY = "I've booked the fix: you'll get a confirmation email within the hour, reference DRY-1."
_VAGUE_REPLY = "I understand. I have checked your records and here is what I can do for you today."
_HELPFUL = {"situation": "When the customer asks what happens next", "guidance": "Name the next step and its time."}
# What the shipped checklists forbid ("promises ...", "tells the customer to contact another team ..."):
# the scripted judge never finds these in the good line.
_FORBIDDEN = re.compile(
    r"the agent (promises|waives|tells the customer|asks for (payment|the full)|offers travel credit)", re.IGNORECASE
)
_CRITERION = {"text": "names the next step and gives a reference", "example": DRY_RUN_GOOD_REPLY}
_USELESS = {"situation": "When the customer writes", "guidance": "Thank the customer for their patience."}


def _customer(messages: Sequence[LLMMessage]) -> str | SatisfactionScore:
    ask = message_text(messages[-1])
    if "survey" in ask:  # the post-chat survey (judge.satisfaction: customer): scored as the judge scores
        return _judge(messages)
    if "first message" in ask:
        return "Hello, I have a problem with my account and I need it sorted out."
    if "reference DRY-1" in ask:
        return "Thanks, that is what I needed. [DONE]"
    if ask.count(_VAGUE_REPLY) >= 3:
        return "This is going nowhere. [LEAVE]"
    return f"Can you tell me exactly what happens next? (asked {ask.count(_VAGUE_REPLY) + 1} times)"


def _teacher_json(ask: str) -> str | None:
    if '"strategies"' in ask:  # writing strategies
        return json.dumps({"strategies": [_HELPFUL, _USELESS]})
    if '"criteria"' in ask:  # writing a scenario's checklist
        return json.dumps({"criteria": [_CRITERION]})
    if '"lines"' in ask:  # more example lines for a checklist item: the line it was shown, reworded
        shown = ask.split('said to the customer: "')[1].split('"\n')[0] if "said to the customer" in ask else "Done."
        return json.dumps({"lines": [f"To put it another way: {shown}"]})
    if '"children"' in ask:  # writing harder scenarios
        return json.dumps({"children": [{"mutation": "less patient", "mood": "annoyed", "patience": "low"}]})
    if '"situation"' in ask:  # refining a strategy
        return json.dumps(_USELESS)
    return None


def _agent(*, strong: bool) -> Callable[[Sequence[LLMMessage]], str]:
    def reply(messages: Sequence[LLMMessage]) -> str:
        structured = _teacher_json(message_text(messages[-1]))
        if structured is not None:
            return structured
        system = message_text(messages[0])
        # coached by the helpful strategy, or by words to say (the oracle arm's lines; the placebo's too)
        coached = _HELPFUL["guidance"] in system or "Say, in your own words:" in system
        return DRY_RUN_GOOD_REPLY if strong or coached else _VAGUE_REPLY

    return reply


def _judge(messages: Sequence[LLMMessage]) -> str | SatisfactionScore:
    ask = message_text(messages[-1])
    if "<reply A>" in ask:  # a pairwise comparison (imitation verification)
        a = "DRY-1" in ask.split("<reply A>")[1].split("</reply A>")[0]
        b = "DRY-1" in ask.split("<reply B>")[1].split("</reply B>")[0]
        better = "same" if a == b else ("A" if a else "B")
        return json.dumps({"rationale": "Dry run: the reply that names the next step wins.", "better": better})
    if "<message>" in ask:  # a checklist question about one agent line
        line = ask.split("<message>")[1].split("</message>")[0]
        label = "Statement:" if "Statement:" in ask else "Action:"
        statement = ask.split(label)[1].split("\n")[0]
        # The line that names the next step does every good thing and none of the forbidden ones.
        good = "DRY-1" in line and not _FORBIDDEN.search(statement)
        return json.dumps({"answer": "yes" if good else "no"})
    good = "reference DRY-1" in ask
    return SatisfactionScore(
        rationale="Dry run: scored on whether the agent named the next step.",
        satisfaction=9 if good else 4,
        resolved=good,
        policy_followed=True,
        failure_turn=None if good else 0,
        customer_in_role=True,
    )


def dry_run_client(role: str, *, strong: bool = False) -> ScriptedChatCompletionClient:
    """A scripted client for a model entry: "customer", "judge", or an agent (`strong` for the teacher)."""
    if role == "customer":
        return ScriptedChatCompletionClient(_customer, name="dry-run-customer", keep=0)
    if role == "judge":
        return ScriptedChatCompletionClient(_judge, name="dry-run-judge", keep=0)
    return ScriptedChatCompletionClient(_agent(strong=strong), name=f"dry-run-{role}", keep=0)


def dry_run_clients(
    names: Iterable[str], *, strong: Iterable[str] = ("teacher",)
) -> dict[str, ScriptedChatCompletionClient]:
    """One dry-run client per model entry name; the entries in `strong` play the teacher."""
    teachers = set(strong)
    return {name: dry_run_client(name, strong=name in teachers) for name in names}
