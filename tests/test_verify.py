"""Verification accepts a strategy that helps the student and rejects one that does not."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from autogen_core.models import LLMMessage

from coachlab.agents import ReplyComparison
from coachlab.environments import EnvironmentConfig, EpisodeRunner
from coachlab.explorer import VerifyConfig, imitation_arm, verify_guidance, verify_imitation
from coachlab.llm import Backend
from coachlab.schema import Guidance
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import scenario, verdict

HELPFUL = Guidance(id="next-step", situation="When the customer repeats a complaint", guidance="Name the next step.")
USELESS = Guidance(id="smile", situation="When the customer writes", guidance="Use a friendly tone.")
SEEDS = [11, 12, 13, 14, 15, 16]


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
    assert ev.trials == 6 and ev.mean_without < 4 < 8 <= ev.mean_with
    assert ev.wins == 6 and ev.losses == 0 and ev.p_value == 0.5**6
    assert ev.uplift_low > 0
    shown = [e for ep in result.with_guidance for e in ep.events if e.type == "strategy_shown"]  # type: ignore[attr-defined]
    assert shown and all(e.strategy_ids == ["next-step"] for e in shown)


def test_a_useless_strategy_is_rejected() -> None:
    result = verify(USELESS)
    assert not result.accepted  # type: ignore[attr-defined]
    assert result.evidence.wins == 0 and result.evidence.p_value == 1.0  # type: ignore[attr-defined]


# --- imitation: the judge compares the student's reply at the failure point with the teacher's ---

PREFIX = [("customer", "My parcel is late again. What happens now?")]
TEACHER_REPLY = "I've reshipped it by express: it arrives Friday, reference R-1."


def comparing_judge(messages: Sequence[LLMMessage]) -> object:
    """Prefers the reply that names the next step; the same when both or neither do."""
    text = message_text(messages[-1])
    a = text.split("<reply A>")[1].split("</reply A>")[0]
    b = text.split("<reply B>")[1].split("</reply B>")[0]
    good_a, good_b = "reference R-1" in a, "reference R-1" in b
    better = "same" if good_a == good_b else ("A" if good_a else "B")
    return ReplyComparison(rationale="one names the next step", better=better)


def imitate(candidate: Guidance) -> tuple[object, object]:
    backends = {
        name: Backend.from_client(name, ScriptedChatCompletionClient(fn))
        for name, fn in (("customer", customer), ("judge", comparing_judge), ("student", student))
    }
    return asyncio.run(
        verify_imitation(
            EpisodeRunner(backends, EnvironmentConfig(max_turns=3)),
            scenario(),
            candidate,
            PREFIX,
            agent_model="student",
            teacher_reply=TEACHER_REPLY,
            seeds=SEEDS,
            config=VerifyConfig(criterion="imitation"),
        )
    )


def test_imitation_accepts_a_strategy_that_makes_the_student_reply_like_the_teacher() -> None:
    result, without = imitate(HELPFUL)
    assert result.accepted  # type: ignore[attr-defined]
    ev = result.evidence  # type: ignore[attr-defined]
    assert ev.criterion == "imitation" and ev.trials == 6
    assert ev.preferred_without == 0.0 and ev.preferred_with == 1.0
    assert "6 comparisons" in ev.note
    assert without.replies == ["Please wait."] * 6  # type: ignore[attr-defined]


def test_imitation_rejects_a_strategy_that_changes_nothing() -> None:
    result, _ = imitate(USELESS)
    assert not result.accepted  # type: ignore[attr-defined]
    assert result.evidence.preferred_with == 0.0  # type: ignore[attr-defined]


def test_imitation_counts_a_judge_answer_by_position() -> None:
    """The student's reply is shown second on even trials and first on odd ones (position bias cancels)."""

    seen: list[str] = []

    def judge_a_always(messages: Sequence[LLMMessage]) -> object:
        text = message_text(messages[-1])
        seen.append(text.split("<reply A>")[1].split("</reply A>")[0])
        return ReplyComparison(rationale="A", better="A")

    backends = {
        name: Backend.from_client(name, ScriptedChatCompletionClient(fn))
        for name, fn in (("customer", customer), ("judge", judge_a_always), ("student", student))
    }
    runner_ = EpisodeRunner(backends, EnvironmentConfig(max_turns=3))
    arm = asyncio.run(
        imitation_arm(runner_, scenario(), PREFIX, agent_model="student", teacher_reply=TEACHER_REPLY, seeds=SEEDS)
    )
    assert seen == [TEACHER_REPLY, "Please wait."] * 3
    assert arm.at_least_teacher == [False, True] * 3 and arm.rate == 0.5


# --- the admission test cannot be passed by a handful of lucky trials ---


def test_four_trials_all_better_can_never_admit() -> None:
    result = asyncio.run(
        verify_guidance(
            runner(),
            scenario(),
            HELPFUL,
            agent_model="student",
            seeds=SEEDS[:4],
            config=VerifyConfig(trials=4),
            id_prefix="n1",
        )
    )
    ev = result.evidence
    assert not result.accepted and ev.wins == 4 and ev.p_value == 0.0625
    assert "fewer than min_pairs 5" in ev.note


def test_a_strategy_that_pleases_the_customer_but_breaks_policy_is_rejected() -> None:
    def judge_policy(messages: Sequence[LLMMessage]) -> object:
        text = message_text(messages[-1])
        good = "reference R-1" in text
        return verdict(9 if good else 2, resolved=good, policy_followed=not good)  # the fix breaks a rule

    backends = {
        name: Backend.from_client(name, ScriptedChatCompletionClient(fn))
        for name, fn in (("customer", customer), ("judge", judge_policy), ("student", student))
    }
    result = asyncio.run(
        verify_guidance(
            EpisodeRunner(backends, EnvironmentConfig(max_turns=3)),
            scenario(),
            HELPFUL,
            agent_model="student",
            seeds=SEEDS,
            config=VerifyConfig(),
            id_prefix="n1",
        )
    )
    ev = result.evidence
    assert not result.accepted and ev.wins == 6  # better every time, but
    assert ev.policy_breaks_with == 6 and ev.policy_breaks_without == 0 and "broke a policy item" in ev.note
