"""The post-chat survey (`judge.satisfaction: customer`): the customer rates the chat in its own context."""

from __future__ import annotations

import asyncio

import pytest

from coachlab.agents import build_line_grader, customer_view, survey_view
from coachlab.agents.customer import chat_so_far
from coachlab.environments import EnvironmentConfig, EpisodeRunner, JudgePanel
from coachlab.environments.episode import judge_episode
from coachlab.environments.runner import SURVEY_MAX_TOKENS
from coachlab.errors import UsageError
from coachlab.judging.checklist import JudgeConfig
from coachlab.llm import Backend
from coachlab.schema import Criterion
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import scenario, score_json

CHAT = [
    ("customer", "My parcel is late."),
    ("agent", "Sorry about that, let me look into the order for you right now."),
    ("customer", "And?"),
    ("agent", "I've refunded the shipping, reference RF-2."),
]


def test_the_survey_starts_with_what_the_customers_last_turn_started_with() -> None:
    case = scenario()
    last_turn = customer_view(case, CHAT[:2])  # the customer answered it with "And?"
    survey = survey_view(case, CHAT)
    assert survey[0].content == last_turn[0].content  # the persona system prompt, unchanged
    seen = chat_so_far(case, CHAT[:2])
    assert isinstance(last_turn[1].content, str) and last_turn[1].content.startswith(seen + "\n\n")
    assert isinstance(survey[1].content, str) and survey[1].content.startswith(seen + "\nDana (you): And?")
    text = message_text(survey[1])
    # the questions come after the chat: the policy, the agent's messages by number, the judge's fields
    assert "- Refund shipping when a parcel is 2 or more days late." in text
    assert "0: Sorry about that, let me look ..." in text
    assert "1: I've refunded the shipping, reference RF-2." in text
    for field in ("rationale", "satisfaction", "resolved", "policy_followed", "failure_turn", "customer_in_role"):
        assert f'"{field}"' in text
    assert text.index("The chat is over") > text.index("reference RF-2")


def test_the_survey_is_asked_of_the_customers_model_with_the_judges_temperature() -> None:
    customer = ScriptedChatCompletionClient(lambda m: score_json(3, rationale="I was sent elsewhere."))
    judge = ScriptedChatCompletionClient(lambda m: score_json(9))
    judge_backend = Backend.from_client("judge", judge)
    judge_backend.temperature = 0.2
    runner = EpisodeRunner(
        {"judge": judge_backend, "customer": Backend.from_client("customer", customer)},
        EnvironmentConfig(),
        judging=JudgeConfig(satisfaction="customer", checklist="off"),
    )
    panel, clients = runner.panel(seed=5, trial=0)
    result = asyncio.run(judge_episode(panel, scenario(), list(CHAT), []))
    assert result.verdict is not None and result.verdict.satisfaction == 3
    assert judge.calls == []  # the judge model is not asked for satisfaction
    assert "survey" in message_text(customer.calls[0][-1])
    args = customer.create_args[0]
    assert args["temperature"] == 0.2 and args["max_tokens"] == SURVEY_MAX_TOKENS
    assert clients[0].usage.calls == 1  # accounted as the judge's


def test_the_survey_needs_a_customer_model() -> None:
    judge = Backend.from_client("judge", ScriptedChatCompletionClient(lambda m: score_json(9)))
    runner = EpisodeRunner({"judge": judge}, EnvironmentConfig(), judging=JudgeConfig(satisfaction="customer"))
    with pytest.raises(UsageError, match="customer"):
        runner.panel(seed=1, trial=0)


def test_the_survey_leaves_out_the_policy_where_the_checklist_decides_it() -> None:
    rule = "- Refund shipping when a parcel is 2 or more days late."
    policy_item = Criterion(id="ref", text="gives a reference number", policy=True, example="Reference RF-2.")
    checked = scenario(success_criteria=[policy_item])
    grader = ScriptedChatCompletionClient(lambda m: "{}")
    graded = JudgePanel(judges=[], graders=[build_line_grader(model_client=grader)], survey=True).satisfaction_view()
    ungraded = JudgePanel(judges=[], survey=True).satisfaction_view()
    assert rule not in message_text(graded(checked, list(CHAT))[1])
    assert rule in message_text(ungraded(checked, list(CHAT))[1])  # no grader: the survey asks about the policy
    assert rule in message_text(graded(scenario(), list(CHAT))[1])  # no policy item: likewise
