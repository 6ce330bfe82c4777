"""Parsing model output into dialogue lines and catching customers who act as the agent."""

from __future__ import annotations

import pytest

from coachlab.agents import CustomerEnding, parse_agent_line, parse_customer_line, role_slip


@pytest.mark.parametrize(
    ("raw", "text", "ending"),
    [
        ("Dana: Where is my parcel?", "Where is my parcel?", CustomerEnding.NONE),
        ("Dana (you): Fine, thanks! [DONE]", "Fine, thanks!", CustomerEnding.SATISFIED),
        ("This is useless. [LEAVE]", "This is useless.", CustomerEnding.GAVE_UP),
        ("I give up [give up]", "I give up", CustomerEnding.GAVE_UP),
        ('"Where is it?"', "Where is it?", CustomerEnding.NONE),
        ("Where is it?\nAgent: It is on its way.", "Where is it?", CustomerEnding.NONE),
    ],
)
def test_parse_customer_line(raw: str, text: str, ending: CustomerEnding) -> None:
    assert parse_customer_line(raw, name="Dana") == (text, ending)


def test_parse_agent_line_drops_label_and_continuation() -> None:
    assert parse_agent_line("Agent: I can help.\nDana: thanks", customer_name="Dana") == "I can help."


@pytest.mark.parametrize(
    "line",
    [
        "How can I help you today?",
        "I'm sorry, but I can't assist with that.",
        "Thank you for contacting Maple & Co.",
        "Let me check that for you.",
        "Agent: your refund is on its way",
        "",
    ],
)
def test_role_slip_catches_agent_lines(line: str) -> None:
    assert role_slip(line, last_agent_line=None) is not None


@pytest.mark.parametrize(
    "line",
    [
        "Where is my parcel? It's five days late.",
        "I want my money back.",
        "Can you help me?",
        "I'm sorry, what?",
    ],
)
def test_role_slip_lets_customer_lines_through(line: str) -> None:
    assert role_slip(line, last_agent_line="I can refund your shipping fee today.") is None


def test_role_slip_catches_an_echo_of_the_agent() -> None:
    agent = "I have refunded your shipping fee and your reference is R-100."
    assert (
        role_slip("I have refunded your shipping fee and your reference is R-100!", last_agent_line=agent)
        == "echoes-agent"
    )


def test_copied_transcript_is_dropped_and_the_new_line_kept() -> None:
    raw = "The chat so far:\nDana (you): Where is my parcel?\nAgent: It is delayed.\nThen refund me the shipping."
    assert parse_customer_line(raw, name="Dana") == ("Then refund me the shipping.", CustomerEnding.NONE)


def test_a_copied_transcript_with_nothing_new_is_a_slip() -> None:
    raw = "The chat so far:\nDana (you): Where is my parcel?"
    text, _ = parse_customer_line(raw, name="Dana")
    assert role_slip(text, last_agent_line="It is delayed.", earlier_lines=["Where is my parcel?"]) == "repeats-itself"


def test_refusal_without_im_is_caught() -> None:
    assert role_slip("Sorry, but I can't assist with that.", last_agent_line=None) == "ai-refusal"


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("I understand your frustration. Could you share the transaction details?", "apologises-for-company"),
        ("Unfortunately, your flight from Chicago to Boston has been cancelled.", "speaks-of-the-customers-case"),
        ("I'm sorry, but I don't believe our billing details are accurate.", "company-we"),
        ("The agent asked if there's anything else you need, and Dana replied politely.", "narrates"),
        ("Let's find an alternative option for Dana tonight.", "third-person-self"),
        ("Is there anything I can do to help you find out the status?", "offers-help"),
    ],
)
def test_role_slip_rules_seen_in_embedded_runs(line: str, rule: str) -> None:
    assert role_slip(line, last_agent_line=None, name="Dana Smith") == rule


@pytest.mark.parametrize(
    "line",
    ["Hi, this is Dana. My parcel is late.", "I'm Dana, order A-100. Where is my refund?", "Your company lost my bag!"],
)
def test_customer_lines_with_name_or_company_are_fine(line: str) -> None:
    assert role_slip(line, last_agent_line=None, name="Dana Smith") is None


def test_a_bare_marker_line_ends_the_chat() -> None:
    assert parse_customer_line("LEAVE", name="Dana") == ("", CustomerEnding.GAVE_UP)
    assert parse_customer_line("Done.", name="Dana") == ("", CustomerEnding.SATISFIED)
