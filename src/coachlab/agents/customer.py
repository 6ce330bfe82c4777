"""The customer: plays a persona, keeps its private goal, ends the dialogue with a marker.

Small models slip out of the customer role (they answer as the assistant they were trained to
be). Three things keep them in it: a persona-first system prompt, the dialogue shown from the
customer's side ("write Dana's next line" over a transcript in which the agent is the other
party), and `role_slip`, a rule that catches lines that read like the agent's so the
environment can re-ask.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum

from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import ChatCompletionClient, LLMMessage, SystemMessage, UserMessage

from coachlab.agents._context import ObservedContext
from coachlab.agents._text import clean_line, normalize
from coachlab.schema import Dialogue, Line, Scenario

__all__ = [
    "CustomerEnding",
    "build_customer",
    "chat_so_far",
    "customer_system_prompt",
    "customer_view",
    "parse_customer_line",
    "role_slip",
]

_PATIENCE = {
    "very low": "You have almost no patience: if the first answer is not useful, you give up.",
    "low": "You are impatient: after two unhelpful answers you give up.",
    "medium": "You are reasonably patient, but you give up if you go in circles.",
    "high": "You are patient and keep explaining until it is sorted out.",
}

_AGENT_PHRASES: list[tuple[str, re.Pattern[str]]] = [
    (
        "offers-help",
        re.compile(
            r"\bhow (can|may|could) i (help|assist)|\bwhat can i do for you|\banything i can do to help you", re.I
        ),
    ),
    ("anything-else", re.compile(r"\bis there anything else i can", re.I)),
    (
        "ai-refusal",
        re.compile(
            r"\b(sorry|afraid),? but i (can(no|')?t|am unable to|'m unable to) (assist|help)"
            r"|\b(i'?m|i am) (sorry|afraid),? but i (can(no|')t|am unable)|\bas an ai\b",
            re.I,
        ),
    ),
    ("language-model", re.compile(r"\blanguage model\b|\bi'?m an? (ai|assistant)\b", re.I)),
    (
        "thanks-for-contacting",
        re.compile(r"\bthank(s| you) for (contacting|reaching out to|choosing) ", re.I),
    ),
    ("agent-action", re.compile(r"\blet me (check|look (that|this|it) up|pull up|look into)\b", re.I)),
    (
        "company-voice",
        re.compile(r"\b(our|my) (records|system) show|\bour (policy|team) (is|will|can)\b", re.I),
    ),
    ("agent-label", re.compile(r"^\s*(agent|support|assistant|representative)\s*:", re.I)),
    (
        "apologises-for-company",
        re.compile(
            r"\b(i apologi[sz]e|sorry) for (the|any) (inconvenience|confusion|trouble)"
            r"|\bi understand (your|the) (frustration|inconvenience|concern)",
            re.I,
        ),
    ),
    (
        "speaks-of-the-customers-case",
        re.compile(
            r"\byour (current )?(bill|flight|order|booking|account|card|plan|parcel|package|refund|trip|"
            r"subscription|reservation|bags?|luggage|payment|charge|contract)\b",
            re.I,
        ),
    ),
    ("company-we", re.compile(r"\bour (billing|records|system|team|policy|company|store|bank|airline)\b", re.I)),
    ("narrates", re.compile(r"\bthe (agent|customer)\b", re.I)),
    (
        "asks-for-customer-details",
        re.compile(r"\b(provide|confirm|verify|share|give) (me )?(with )?your\b", re.I),
    ),
    (
        "cannot-access-account",
        re.compile(
            r"\b(i'?m|i am) (unable|not able) to (access|locate|find) (the|your) (account|order|booking)",
            re.I,
        ),
    ),
]


class CustomerEnding(StrEnum):
    """How a customer line ends the dialogue, if it does."""

    NONE = "none"
    SATISFIED = "satisfied"
    GAVE_UP = "gave_up"


_END_MARK = re.compile(
    r"\[\s*(done|end|satisfied|resolved|leave|left|give ?up|gave ?up|quit|bye)\s*\]|<\s*(done|leave)\s*>"
    r"|^\W*(done|leave)\W*$",
    re.I,
)


def customer_system_prompt(scenario: Scenario) -> str:
    """The persona-first system prompt of the customer (it holds the private goal)."""
    p = scenario.persona
    lines = [
        f"You are {p.name}. {p.description}",
        f"Personality: {', '.join(p.traits) or 'ordinary'}. Mood right now: {p.mood}.",
        f"You write like this: {p.style}. {_PATIENCE[p.patience]}",
        "",
        f"You are the CUSTOMER, chatting with a support agent of {scenario.company}. You are not the "
        "agent: you never offer help, never apologise for the company, never explain its policy.",
        f"Your problem: {scenario.issue}",
        f"What you want (do not say all of it at once): {p.goal}",
    ]
    if scenario.facts:
        lines.append("What you know about your case:")
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in scenario.facts.items()]
    if p.hidden_constraints:
        lines.append("Private facts (say them only if the agent asks, or when they matter):")
        lines += [f"- {c}" for c in p.hidden_constraints]
    lines.append(f"You are satisfied when: {p.satisfied_when}")
    if p.gives_up_when:
        lines.append(f"You give up when: {p.gives_up_when}")
    lines += [
        "",
        f"Write only {p.name}'s next message: one or two short sentences, as {p.name} would type them. "
        "No name label, no narration.",
        f"If the agent is unhelpful or refuses, react as {p.name} would (push back, insist, or give up); "
        "never repeat the agent's words.",
        "Ending the chat: only once the agent has given you what satisfies you, thank them and end your "
        "message with [DONE]; only if you give up, say so and end with [LEAVE]. While your problem is still "
        "open, never write [DONE] or [LEAVE].",
    ]
    return "\n".join(lines)


def chat_so_far(scenario: Scenario, dialogue: Dialogue) -> str:
    """The dialogue as the customer reads it: "The chat so far:", then one line per message, its own marked "(you)".

    The customer's view of each turn starts with it, and so does the post-chat survey (`survey_view`), so an
    engine with a prompt cache processes a chat the customer has read only once.
    """
    name = scenario.persona.name
    lines = (f"{name} (you): {text}" if who == "customer" else f"Agent: {text}" for who, text in dialogue)
    return "The chat so far:\n" + "\n".join(lines)


def customer_view(
    scenario: Scenario,
    dialogue: list[Line],
    *,
    slip_rule: str | None = None,
) -> list[LLMMessage]:
    """The customer's whole view for the next turn: system prompt plus the dialogue from its side.

    Args:
        scenario: The scenario (with the persona).
        dialogue: (speaker, text) pairs so far, speaker "customer" or "agent".
        slip_rule: Why the customer's previous attempt was rejected (a `role_slip` rule), if it was.
            The attempt itself is not quoted back: small models copy what they are shown.
    """
    name = scenario.persona.name
    if dialogue:
        ask = (
            f"{chat_so_far(scenario, dialogue)}\n\nWrite {name}'s next message to the agent: only the new message, "
            f"do not copy the chat. Remember: you are {name}, the customer with the problem; the agent is the one "
            "who helps."
        )
    else:
        ask = f"You open the chat. Write {name}'s first message to the agent, saying what your problem is."
    if slip_rule == "repeats-itself":
        ask += f"\n\n{name} already said that. Write something new that answers the agent's last message."
    elif slip_rule == "empty":
        ask += f"\n\nYour last attempt was empty. Write {name}'s message."
    elif slip_rule is not None:
        ask += (
            f"\n\nYour last attempt sounded like the support agent, not like {name}. You are the customer, "
            f"{name}, who has the problem. Write {name}'s message again, as the customer."
        )
    return [
        SystemMessage(content=customer_system_prompt(scenario)),
        UserMessage(content=ask, source="environment"),
    ]


_ECHO_HEADER = re.compile(r"^\s*(the chat so far|chat so far|conversation so far)\s*:?\s*$", re.I)


def _drop_echoed_transcript(raw: str, name: str) -> str:
    """Small models sometimes copy the transcript they were shown before (or instead of) their line.

    Keeps only what follows the copied transcript: the text after the last labelled line, or that
    labelled line's own text when nothing follows it.
    """
    lines = raw.strip().splitlines()
    if not lines or not _ECHO_HEADER.match(lines[0]):
        return raw
    label = re.compile(rf"^\s*({re.escape(name)}\s*\(you\)|agent)\s*:\s*", re.I)
    body = [x for x in lines[1:] if x.strip()]
    last = max((i for i, x in enumerate(body) if label.match(x)), default=-1)
    after = body[last + 1 :]
    if after:
        return "\n".join(after)
    return label.sub("", body[last]) if last >= 0 else ""


def parse_customer_line(raw: str, *, name: str) -> tuple[str, CustomerEnding]:
    """Clean a customer reply and read its end marker, if any."""
    raw = _drop_echoed_transcript(raw, name)
    text = clean_line(raw, own_labels=(name, f"{name} (you)"), other_labels=("Agent", "Support agent"))
    ending = CustomerEnding.NONE
    match = _END_MARK.search(text)
    if match:
        word = (match.group(1) or match.group(2) or match.group(3) or "").lower().replace(" ", "")
        gave_up = word in {"leave", "left", "giveup", "gaveup", "quit"}
        ending = CustomerEnding.GAVE_UP if gave_up else CustomerEnding.SATISFIED
        text = _END_MARK.sub("", text).strip()
    return text, ending


def role_slip(
    line: str, *, last_agent_line: str | None, earlier_lines: Sequence[str] = (), name: str | None = None
) -> str | None:
    """The name of the rule a customer line breaks by reading like the agent's, or None.

    Args:
        line: The customer's new line.
        last_agent_line: What the agent said last (a customer echoing it is out of role).
        earlier_lines: The customer's own earlier lines (repeating one word for word is a copy of
            the transcript, not a new message).
        name: The persona's name: a customer who speaks of themselves by name, other than to
            introduce themselves, is narrating or speaking as the agent.
    """
    if not line.strip():
        return "empty"
    if normalize(line) in {normalize(x) for x in earlier_lines}:
        return "repeats-itself"
    for rule, pattern in _AGENT_PHRASES:
        if pattern.search(line):
            return rule
    if name:
        first = re.escape(name.split()[0])
        if re.search(rf"\b{first}\b", line) and not re.search(
            rf"\b(i'?m|i am|my name is|this is|it'?s|name'?s)\s+{first}\b", line, re.I
        ):
            return "third-person-self"
    if last_agent_line:
        mine, theirs = set(normalize(line).split()), set(normalize(last_agent_line).split())
        if len(mine) >= 6 and len(mine & theirs) / len(mine | theirs) >= 0.8:
            return "echoes-agent"
    return None


def build_customer(*, model_client: ChatCompletionClient, name: str = "customer") -> AssistantAgent:
    """Build the customer agent; the environment gives it `customer_view(...)` each turn."""
    return AssistantAgent(
        name=name,
        model_client=model_client,
        system_message=None,
        model_context=ObservedContext(),
        description="A simulated customer playing a persona.",
    )
