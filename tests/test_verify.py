"""Verification accepts a strategy that helps the student and rejects one that does not."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from autogen_core.models import LLMMessage

from coachlab.environments import EnvironmentConfig, EpisodeRunner
from coachlab.explorer import VerifyConfig, verify_guidance
from coachlab.llm import Backend
from coachlab.schema import Guidance
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import scenario, verdict

HELPFUL = Guidance(id="next-step", situation="When the customer repeats a complaint", guidance="Name the next step.")
USELESS = Guidance(id="smile", situation="When the customer writes", guidance="Use a friendly tone.")
SEEDS = [11, 12, 13, 14]


def student(messages: Sequence[LLMMessage]) -> str:
    """A small model that names the next step only when its prompt tells it to."""
    if "Name the next step." in message_text(messages[0]):
        return "I've reshipped it by express: it arrives Friday, reference R-1."
    return "Please wait."


def customer(messages: Sequence[LLMMessage]) -> str:
    ask = message_text(messages[-1])
    if "reference R-1" in ask:
        return "Perfect, thank you! [DONE]"
    return "It's late, again! What happens now?" if "Please wait." not in ask else "Forget it. [LEAVE]"


def judge(messages: Sequence[LLMMessage]) -> object:
    """Scores 8-9 when the agent gave the next step, 2-3 when it did not (noise from the seed)."""
    text = message_text(messages[-1])
    good = "reference R-1" in text
    return verdict(8 + len(text) % 2 if good else 2 + len(text) % 2, resolved=good)


def runner() -> EpisodeRunner:
    backends = {
        name: Backend.from_client(name, ScriptedChatCompletionClient(fn))
        for name, fn in (("customer", customer), ("judge", judge), ("student", student))
    }
    return EpisodeRunner(backends, EnvironmentConfig(max_turns=3))


def verify(candidate: Guidance) -> object:
    return asyncio.run(
        verify_guidance(
            runner(), scenario(), candidate, agent_model="student", seeds=SEEDS, config=VerifyConfig(), id_prefix="n1"
        )
    )


def test_a_strategy_the_student_needs_is_accepted_with_its_evidence() -> None:
    result = verify(HELPFUL)
    assert result.accepted  # type: ignore[attr-defined]
    ev = result.evidence  # type: ignore[attr-defined]
    assert ev.trials == 4 and ev.mean_without < 4 < 8 <= ev.mean_with
    assert ev.uplift_low > 0
    shown = [e for ep in result.with_guidance for e in ep.events if e.type == "strategy_shown"]  # type: ignore[attr-defined]
    assert shown and all(e.strategy_ids == ["next-step"] for e in shown)


def test_a_useless_strategy_is_rejected() -> None:
    result = verify(USELESS)
    assert not result.accepted  # type: ignore[attr-defined]
    assert result.evidence.uplift_low <= 0  # type: ignore[attr-defined]
