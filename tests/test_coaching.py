"""The public API: a trained library coaches a conversation of OpenAI-style messages, as simulation did."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import AssistantMessage, LLMMessage, SystemMessage, UserMessage

import coachlab
from coachlab.agents import service_system_prompt
from coachlab.environments import run_episode
from coachlab.errors import ConfigError, UsageError
from coachlab.library import LexicalRetriever, LibraryStore, retrieval_guidance
from coachlab.library.coaching import COACHING_HEADER, LiveLibrary, dialogue_from_messages
from coachlab.schema import AuditStatus, Strategy
from helpers import agents, lines, scenario

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def strategy(sid: str, situation: str, guidance: str, status: AuditStatus = AuditStatus.APPROVED) -> Strategy:
    return Strategy(id=sid, situation=situation, guidance=guidance).with_status(status, by="train", at=NOW)


LATE = strategy(
    "late-delivery",
    "When the customer complains that a delivery is late and asks for a refund",
    "Apologise once, give the tracking status and a delivery date, and refund the shipping fee.",
)
TWICE = strategy(
    "double-charge",
    "When the customer was charged twice for the same order or subscription",
    "Confirm the duplicate charge from the billing record, reverse it and say when the money returns.",
)
LOGIN = strategy(
    "password",
    "When the customer cannot log in or reset their password",
    "Send a reset link, check the email address on file and explain how to unlock the account.",
    AuditStatus.PROPOSED,
)
LATE_MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are the support agent of Acme."},
    {"role": "user", "content": "My parcel is late again and I want a refund of the delivery fee."},
]


def run_folder(
    tmp_path: Path, *strategies: Strategy, retrieval: str | None = "retrieval: {kind: lexical, k: 2}\n"
) -> Path:
    run = tmp_path / "run"
    LibraryStore(run / "library").commit(strategies or (LATE, TWICE, LOGIN), note="trained")
    if retrieval is not None:
        (run / "experiment.yaml").write_text(f"name: run\n{retrieval}", encoding="utf-8")
    return run


def test_load_library_serves_approved_strategies_with_the_runs_retrieval_settings(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    library = coachlab.load_library(run)
    assert library.version == 1 and library.strategy_ids == ["late-delivery", "double-charge"]
    assert (library.kind, library.k, library.floor) == ("lexical", 2, 0.1)
    shown = library.retrieve(LATE_MESSAGES)
    assert [g.id for g in shown] == ["late-delivery"] and 0 < shown[0].score <= 1
    # the library folder itself loads too, and an unrelated conversation gets nothing
    assert coachlab.load_library(run / "library").retrieve([{"role": "user", "content": "What is the weather?"}]) == []
    # proposed strategies only on request
    login = [{"role": "user", "content": "I cannot log in and the password reset does not work."}]
    assert library.retrieve(login) == []
    assert [g.id for g in coachlab.load_library(run, include_proposed=True).retrieve(login)] == ["password"]


def test_load_library_picks_a_version_and_says_what_is_missing(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    LibraryStore(run / "library").set_status("late-delivery", AuditStatus.REJECTED, by="ana", why="too generous")
    assert coachlab.load_library(run).strategy_ids == ["double-charge"]
    assert coachlab.load_library(run, version=1).strategy_ids == ["late-delivery", "double-charge"]
    with pytest.raises(UsageError, match="no library version 7"):
        coachlab.load_library(run, version=7)
    with pytest.raises(UsageError, match="no strategy library here"):
        coachlab.load_library(tmp_path)
    with pytest.raises(UsageError, match="no such folder"):
        coachlab.load_library(tmp_path / "nope")


def test_a_bad_retrieval_section_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    run = run_folder(tmp_path, retrieval="retrieval:\n  kind: lexical\n  k: 0\n")
    with pytest.raises(ConfigError, match=r"experiment\.yaml:4.*retrieval\.k"):
        coachlab.load_library(run)
    # explicit settings win over the run's (and skip its file)
    library = coachlab.load_library(run, retrieval=coachlab.RetrievalConfig(kind="lexical", k=1, floor=0.3))
    assert (library.k, library.floor) == (1, 0.3)


def test_the_query_is_the_conversation_alone() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Secret system prompt."},
        {"role": "user", "content": "First\n   question"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
        {"role": "tool", "content": "tool output", "tool_call_id": "1"},
        {"role": "assistant", "content": [{"type": "text", "text": "An answer."}]},
        {"role": "user", "content": [{"type": "text", "text": "Second"}, {"type": "image_url", "image_url": {}}]},
        "not a message",
    ]
    assert dialogue_from_messages(messages) == [
        ("customer", "First\n   question"),
        ("agent", "An answer."),
        ("customer", "Second"),
    ]
    assert coachlab.situation_from_messages(messages) == "customer: First question\nagent: An answer.\ncustomer: Second"
    assert coachlab.situation_from_messages(messages, last=1) == "customer: Second"
    assert coachlab.situation_from_messages([{"role": "system", "content": "only"}]) == ""


def test_add_coaching_appends_the_block_to_the_system_prompt_without_touching_the_input() -> None:
    shown = [LATE.as_guidance(0.5)]
    block = coachlab.coaching_block(shown)
    assert block.splitlines() == [COACHING_HEADER, f"- {LATE.situation}: {LATE.guidance}"]
    coached = coachlab.add_coaching(LATE_MESSAGES, shown)
    assert coached[0] == {"role": "system", "content": "You are the support agent of Acme.\n" + block}
    assert coached[1] == LATE_MESSAGES[1] and LATE_MESSAGES[0]["content"] == "You are the support agent of Acme."
    # no system message: one is put first; a list-of-parts system message gets a text part
    assert coachlab.add_coaching(LATE_MESSAGES[1:], shown)[0] == {"role": "system", "content": block}
    parts = [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]}, LATE_MESSAGES[1]]
    assert coachlab.add_coaching(parts, shown)[0]["content"][-1] == {"type": "text", "text": "\n" + block}
    assert coachlab.add_coaching(LATE_MESSAGES, []) == LATE_MESSAGES


class Recorder:
    """A retriever that remembers every query and delegates to BM25."""

    def __init__(self, strategies: Sequence[Strategy]) -> None:
        self.inner = LexicalRetriever(strategies)
        self.queries: list[str] = []

    def search(self, situation: str, *, k: int, floor: float) -> list[tuple[Strategy, float]]:
        self.queries.append(situation)
        return self.inner.search(situation, k=k, floor=floor)


def _as_openai(view: Sequence[LLMMessage]) -> list[dict[str, Any]]:
    roles = {SystemMessage: "system", UserMessage: "user", AssistantMessage: "assistant"}
    return [{"role": roles[type(m)], "content": m.content} for m in view]


def test_production_sees_exactly_what_simulation_measured() -> None:
    """Same query, same strategies, same system prompt: simulation's service agent vs add_coaching."""
    recorder = Recorder([LATE, TWICE])
    case = scenario()
    roles, clients = agents(
        lines("My parcel is late and I want the delivery fee back.", "It is still late, refund me."),
        lines("Sorry about that.", "I will check."),
    )
    provide = retrieval_guidance(recorder, k=2, floor=0.1)
    asyncio.run(run_episode(case, roles, episode_id="e", seed=1, trial=0, guidance=provide))
    library = coachlab.CoachingLibrary([LATE, TWICE], retrieval=coachlab.RetrievalConfig(kind="lexical", k=2))
    calls = clients["agent"].calls
    assert len(calls) == len(recorder.queries) >= 2
    for view, query in zip(calls, recorder.queries, strict=True):
        messages = _as_openai(view)
        assert coachlab.situation_from_messages(messages) == query
        shown = library.retrieve(messages)
        assert shown and shown[0].id == "late-delivery"
        plain = [{"role": "system", "content": service_system_prompt(case)}, *messages[1:]]
        assert coachlab.add_coaching(plain, shown)[0]["content"] == view[0].content


def test_searches_are_cached_per_conversation() -> None:
    recorder = Recorder([LATE, TWICE])
    library = coachlab.CoachingLibrary([LATE, TWICE], retriever=recorder)
    first = library.retrieve(LATE_MESSAGES)
    assert library.retrieve(LATE_MESSAGES) == first and len(recorder.queries) == 1
    library.clear_cache()
    assert asyncio.run(library.aretrieve(LATE_MESSAGES)) == first and len(recorder.queries) == 2


def test_live_library_swaps_in_a_newly_approved_version(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    login = [{"role": "user", "content": "I cannot log in and the password reset does not work."}]
    live = LiveLibrary(run)
    assert live.current.retrieve(login) == []
    assert asyncio.run(live.refresh()) is False
    LibraryStore(run / "library").set_status("password", AuditStatus.APPROVED, by="ana")
    assert asyncio.run(live.refresh()) is True
    assert live.current.version == 2 and [g.id for g in live.current.retrieve(login)] == ["password"]
    # a damaged newer version is skipped: the last good one keeps serving
    (run / "library" / "v0003.json").write_text("{not json", encoding="utf-8")
    assert asyncio.run(live.refresh()) is False and live.current.version == 2
    # a pinned version never moves
    pinned = LiveLibrary(run, version=1)
    assert asyncio.run(pinned.refresh()) is False and pinned.current.version == 1
