"""The teacher: strategies from a failure, refusing case details, harder children, re-asks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from autogen_core.models import LLMMessage

from coachlab.agents import (
    ChildScenarios,
    StrategyDraft,
    StrategyDrafts,
    build_teacher,
    propose_children,
    propose_strategies,
    refine_strategy,
)
from coachlab.errors import ModelResponseError
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import SECRET_GOAL, scenario

DIALOGUE = [("customer", "My parcel is late, again!"), ("agent", "Please wait.")]
GOOD = {"situation": "When the customer repeats a complaint", "guidance": "Name the next step and when it happens."}
LEAKY = {"situation": "When Dana asks about order A-100", "guidance": "Refund order A-100."}
PRIVATE = {"situation": "When the customer is unhappy", "guidance": "Offer a free upgrade to the platinum plan."}


def test_strategies_come_from_the_contrast_and_never_from_the_private_goal() -> None:
    client = ScriptedChatCompletionClient(lambda m: json.dumps({"strategies": [GOOD]}))
    agent = build_teacher(model_client=client, output=StrategyDrafts)
    drafts = asyncio.run(
        propose_strategies(
            agent, scenario(), DIALOGUE, student_reply="Please wait.", teacher_reply="I've reshipped it by express."
        )
    )
    assert drafts == [StrategyDraft(**GOOD)]
    prompt = message_text(client.calls[0][-1])
    assert "Please wait." in prompt and "reshipped it by express" in prompt
    assert SECRET_GOAL not in prompt


def test_case_facts_in_a_draft_become_what_they_are_and_the_action_is_kept() -> None:
    agent = build_teacher(
        model_client=ScriptedChatCompletionClient(lambda m: json.dumps({"strategies": [LEAKY]})), output=StrategyDrafts
    )
    drafts = asyncio.run(propose_strategies(agent, scenario(), DIALOGUE, student_reply="x", teacher_reply="y"))
    assert drafts == [
        StrategyDraft(situation="When the customer asks about the order number", guidance="Refund the order number.")
    ]


def test_redaction_names_each_fact_by_its_field_and_leaves_general_words() -> None:
    from coachlab.agents import leaked_detail, redact_case_details

    case = scenario(
        company="Maple & Co. Home Goods",
        facts={"order_number": "MC-48213", "item": "Ceramic cookware set, sage green", "total": "$89.99"},
    )

    def redact(situation: str, guidance: str) -> tuple[str, str]:
        d = redact_case_details(StrategyDraft(situation=situation, guidance=guidance), case)
        return d.situation, d.guidance

    assert redact("When the customer's ceramic cookware set is late", "Refund the $89.99 for order MC-48213.") == (
        "When the customer's item is late",
        "Refund the total for the order number.",
    )
    assert redact("When Dana is upset", "Thank them for choosing Maple & Co. Home Goods.") == (
        "When the customer is upset",
        "Thank them for choosing the company.",
    )
    general = ("When a set arrives in the wrong colour", "Offer a green-light exchange.")
    assert redact(*general) == general
    charged = scenario(facts={"charges": "$65.00 at 09:02 and $65.00 at 09:03"})
    draft = StrategyDraft(situation="When a plan is charged twice", guidance="Refund the $65 duplicate.")
    assert redact_case_details(draft, charged).guidance == "Refund the charges duplicate."  # "$65" is "$65.00"
    assert leaked_detail(draft, charged) == "$65"
    assert leaked_detail(draft.model_copy(update={"guidance": "Refund within 65 days."}), charged) is None


def test_a_quote_of_the_customer_as_situation_is_restated_from_the_public_chat_alone() -> None:
    from coachlab.agents import Hindsight

    chat = [("customer", "My parcel from last week is still not here, nobody answers my emails"), ("agent", "Wait.")]
    quoted = {
        "situation": "When the customer says my parcel from last week is still not here",
        "guidance": "Reship it.",
    }
    seen: list[str] = []
    answers = iter(
        [
            json.dumps({"strategies": [quoted]}),
            json.dumps({"strategies": [{"situation": "When a customer reports a repeated delay", "guidance": "?"}]}),
        ]
    )

    def fn(messages: Sequence[LLMMessage]) -> str:
        seen.append(message_text(messages[-1]))
        return next(answers)

    agent = build_teacher(model_client=ScriptedChatCompletionClient(fn), output=StrategyDrafts)
    hindsight = Hindsight(missed=["offers to reship"], goal=SECRET_GOAL)
    drafts = asyncio.run(
        propose_strategies(agent, scenario(), chat, student_reply="x", teacher_reply="y", hindsight=hindsight)
    )
    assert drafts == [StrategyDraft(situation="When a customer reports a repeated delay", guidance="Reship it.")]
    assert SECRET_GOAL in seen[0] and SECRET_GOAL not in seen[1] and "advice for the agent: Reship it." in seen[1]


def test_strategies_that_quote_private_facts_are_refused_and_reasked() -> None:
    answers = iter([json.dumps({"strategies": [PRIVATE]}), json.dumps({"strategies": [PRIVATE, GOOD]})])
    seen: list[str] = []

    def fn(messages: Sequence[LLMMessage]) -> str:
        seen.append(message_text(messages[-1]))
        return next(answers)

    agent = build_teacher(model_client=ScriptedChatCompletionClient(fn), output=StrategyDrafts)
    drafts = asyncio.run(propose_strategies(agent, scenario(), DIALOGUE, student_reply="x", teacher_reply="y"))
    assert drafts == [StrategyDraft(**GOOD)]
    assert "Your strategies quoted" in seen[1]


def test_unreadable_teacher_output_is_reasked_then_an_error() -> None:
    agent = build_teacher(model_client=ScriptedChatCompletionClient(lambda m: "no json"), output=StrategyDraft)
    with pytest.raises(ModelResponseError, match="no readable StrategyDraft after 2 tries"):
        asyncio.run(refine_strategy(agent, scenario(), StrategyDraft(**GOOD), result="uplift -0.5", retries=1))


def test_children_are_harder_variants() -> None:
    child = {"mutation": "angrier and in a hurry", "mood": "furious", "patience": "very low"}
    client = ScriptedChatCompletionClient(lambda m: json.dumps({"children": [child, child, child]}))
    agent = build_teacher(model_client=client, output=ChildScenarios)
    children = asyncio.run(propose_children(agent, scenario(), DIALOGUE, count=2))
    assert len(children) == 2 and children[0].patience == "very low"


def test_leak_check_catches_fragments_of_case_facts_but_not_general_words() -> None:
    from coachlab.agents import StrategyDraft, leaked_detail

    case = scenario(
        company="Maple & Co. Home Goods",
        facts={"order_number": "MC-48213", "item": "Ceramic cookware set, sage green", "total": "$89.99"},
    )

    def leak(situation: str, guidance: str) -> str | None:
        return leaked_detail(StrategyDraft(situation=situation, guidance=guidance), case)

    assert leak("When the customer's cookware set is late", "Offer a reship.") == "cookware set"
    assert leak("When an order is late", "Refund the $89.99.") == "$89.99"
    assert leak("When the customer asks about MC-48213", "Check it.") == "mc-48213"
    assert leak("When the customer is upset", "Thank them for choosing Maple.") == "maple"
    assert leak("When the customer is upset", "Call Dana back.") == "dana"
    assert leak("When the customer asks about a late order", "Apologise and name one next step with a date.") is None
    assert leak("When a set arrives in the wrong colour", "Offer a green-light exchange.") is None


def test_the_hindsight_teacher_reads_the_missed_items_and_the_private_goal_and_writes_actions() -> None:
    from coachlab.agents import Hindsight

    narrated = {"situation": "When the customer asks", "guidance": "The expert provided a general estimate."}
    answers = iter([json.dumps({"strategies": [narrated]}), json.dumps({"strategies": [GOOD]})])
    client = ScriptedChatCompletionClient(lambda m: next(answers))
    hindsight = Hindsight(
        missed=["offers to reship the order by free express"],
        broken=["tells the customer to contact another team"],
        rationale="Vague twice.",
        goal=SECRET_GOAL,
        satisfied_when="a date",
        best_reply="I can look into it.",
    )
    drafts = asyncio.run(
        propose_strategies(
            build_teacher(model_client=client, output=StrategyDrafts),
            scenario(),
            DIALOGUE,
            student_reply="Please wait.",
            teacher_reply="I've reshipped it.",
            hindsight=hindsight,
        )
    )
    first = message_text(client.calls[0][-1])
    assert "hindsight" in first and SECRET_GOAL in first and "offers to reship the order by free express" in first
    assert (
        "must NEVER do (avoid this): tells the customer to contact another team" in first
        and "I can look into it." in first
    )
    assert drafts == [StrategyDraft(**GOOD)]  # the narrated one was refused and re-asked
    assert "Write it as one action" in message_text(client.calls[1][-1])


def test_a_strategy_that_copies_the_private_goal_is_refused() -> None:
    from coachlab.agents import leaked_detail

    case = scenario()
    goal_words = " ".join(case.persona.goal.split()[:8])
    copied = StrategyDraft(situation=f"When the customer wants to {goal_words}", guidance="Offer the fix.")
    assert leaked_detail(copied, case) is not None
    assert leaked_detail(StrategyDraft(**GOOD), case) is None


def test_when_every_draft_leaks_the_error_says_what_the_last_one_quoted() -> None:
    agent = build_teacher(
        model_client=ScriptedChatCompletionClient(lambda m: json.dumps({"strategies": [PRIVATE]})),
        output=StrategyDrafts,
    )
    with pytest.raises(ModelResponseError, match=r"after 3 tries \(the last: quoted '.+'\)"):
        asyncio.run(propose_strategies(agent, scenario(), DIALOGUE, student_reply="x", teacher_reply="y"))


def test_a_situation_that_repeats_its_guidance_is_restated() -> None:
    long = {
        "situation": "When the parcel is stuck, offer to reship the order by free express delivery today",
        "guidance": "Offer to reship the order by free express delivery today.",
    }
    short = {"situation": "When a parcel has stopped moving", "guidance": "?"}
    answers = iter([json.dumps({"strategies": [long]}), json.dumps({"strategies": [short]})])
    agent = build_teacher(model_client=ScriptedChatCompletionClient(lambda m: next(answers)), output=StrategyDrafts)
    drafts = asyncio.run(propose_strategies(agent, scenario(), DIALOGUE, student_reply="x", teacher_reply="y"))
    assert drafts == [StrategyDraft(situation=short["situation"], guidance=long["guidance"])]


def test_guidance_that_tells_the_agent_to_do_a_forbidden_thing_is_refused() -> None:
    from coachlab.schema import Criterion

    case = scenario(
        success_criteria=[
            Criterion(id="reships", text="offers to reship the order"),
            Criterion(
                id="hands-off", text="tells the customer to contact another team or customer service", forbidden=True
            ),
        ]
    )
    inverted = {
        "situation": "When the customer is worried",
        "guidance": "Offer to contact another team or customer service.",
    }
    answers = iter([json.dumps({"strategies": [inverted]}), json.dumps({"strategies": [GOOD]})])
    seen: list[str] = []

    def fn(messages: Sequence[LLMMessage]) -> str:
        seen.append(message_text(messages[-1]))
        return next(answers)

    agent = build_teacher(model_client=ScriptedChatCompletionClient(fn), output=StrategyDrafts)
    assert asyncio.run(propose_strategies(agent, case, DIALOGUE, student_reply="x", teacher_reply="y")) == [
        StrategyDraft(**GOOD)
    ]
    assert "must never do (hands-off)" in seen[1]


def test_private_words_the_customer_said_in_the_chat_are_not_private() -> None:
    from coachlab.agents import leaked_detail

    case = scenario()
    goal = " ".join(case.persona.goal.split()[:8])
    draft = StrategyDraft(situation=f"When the customer {goal}", guidance="Offer the fix.")
    assert leaked_detail(draft, case) is not None
    assert leaked_detail(draft, case, public=[f"Honestly, I {goal}."]) is None


def test_the_words_to_say_are_folded_into_the_guidance_and_checked_like_it() -> None:
    with_words = {**GOOD, "say": "Your parcel goes out again today by free express."}
    leaky_words = {**GOOD, "say": "Dana, I have refunded order A-100."}
    answers = iter([json.dumps({"strategies": [with_words, leaky_words]})])
    agent = build_teacher(model_client=ScriptedChatCompletionClient(lambda m: next(answers)), output=StrategyDrafts)
    drafts = asyncio.run(propose_strategies(agent, scenario(), DIALOGUE, student_reply="x", teacher_reply="y"))
    assert drafts[0] == StrategyDraft(
        situation=GOOD["situation"],
        guidance='Name the next step and when it happens. Say: "Your parcel goes out again today by free express."',
    )
    assert drafts[1].guidance.endswith('Say: "the customer, I have refunded the order number."')  # redacted too


@pytest.mark.parametrize(
    "situation",
    [
        "When the customer says 'My bill is $193!'",
        'When the customer asks "where is my parcel"',
        "When a bill is $45 up",
        "When the customer ...",  # measured on the benchmark: sent to verification as it was
        "When the customer",
    ],
)
def test_a_situation_in_quotes_with_an_amount_or_left_unwritten_is_restated(situation: str) -> None:
    """Measured on the quickstart: "When the customer says 'My bill is $193!'" was admitted; no other chat says it."""
    quoted = {"situation": situation, "guidance": "Ask for the last 4 digits of the ID before changing the bill."}
    general = {"situation": "When a customer disputes a bill that is far higher than usual", "guidance": "?"}
    answers = iter([json.dumps({"strategies": [quoted]}), json.dumps({"strategies": [general]})])
    agent = build_teacher(model_client=ScriptedChatCompletionClient(lambda m: next(answers)), output=StrategyDrafts)
    drafts = asyncio.run(propose_strategies(agent, scenario(), DIALOGUE, student_reply="x", teacher_reply="y"))
    assert drafts == [StrategyDraft(situation=general["situation"], guidance=quoted["guidance"])]


def test_guidance_that_narrates_the_turns_before_is_refused() -> None:
    narrated = {
        "situation": "When a delivery is late",
        "guidance": "Give the arrival date, a significant improvement over the previous turns where they were vague.",
    }
    answers = iter([json.dumps({"strategies": [narrated]}), json.dumps({"strategies": [GOOD]})])
    agent = build_teacher(model_client=ScriptedChatCompletionClient(lambda m: next(answers)), output=StrategyDrafts)
    drafts = asyncio.run(propose_strategies(agent, scenario(), DIALOGUE, student_reply="x", teacher_reply="y"))
    assert drafts == [StrategyDraft(**GOOD)]
