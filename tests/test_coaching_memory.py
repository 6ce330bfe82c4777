"""CoachingMemory: a trained library coaches a user's own AutoGen AssistantAgent, turn by turn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import MemoryQueryEvent
from autogen_core.memory import Memory, MemoryContent, MemoryMimeType
from autogen_core.model_context import BufferedChatCompletionContext
from autogen_core.models import LLMMessage, SystemMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient

from coachlab import CoachingMemory, RetrievalConfig
from coachlab.errors import UsageError
from coachlab.library import LibraryStore
from coachlab.library.coaching import COACHING_HEADER
from coachlab.schema import AuditStatus
from coachlab.testing import ScriptedChatCompletionClient
from coachlab.testing.openai_stub import STUB_MODEL_INFO, OpenAIStub
from conftest import require_embedded
from test_coaching import LATE, LOGIN, TWICE, run_folder

LEXICAL = RetrievalConfig(kind="lexical", k=2)
SYSTEM = "You are the support agent of Acme."


def coaching(messages: Sequence[LLMMessage]) -> list[str]:
    return [m.content for m in messages if isinstance(m, SystemMessage) and m.content.startswith(COACHING_HEADER)]


def shown_ids(result_messages: Sequence[object]) -> list[str]:
    return [
        str((c.metadata or {})["strategy_id"])
        for m in result_messages
        if isinstance(m, MemoryQueryEvent)
        for c in m.content
    ]


def test_the_agent_gets_the_fitting_strategy_each_turn_and_none_when_nothing_fits(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    memory = CoachingMemory(run)
    model = ScriptedChatCompletionClient(lambda messages: "Let me look into that.")
    agent = AssistantAgent("support", model_client=model, system_message=SYSTEM, memory=[memory])
    other = AssistantAgent("other", model_client=model, system_message=SYSTEM, memory=[memory])

    async def story() -> list[list[str]]:
        results = [
            await agent.run(task="My parcel is late and I want a refund of the delivery fee."),
            # the query is the last 4 lines, as in simulation: the late parcel is still in view
            await agent.run(task="Also, what are your opening hours on Sunday?"),
            await agent.run(task="And do you sell gift cards?"),
            await other.run(task="I was charged twice for the same order, please reverse it."),
        ]
        return [shown_ids(r.messages) for r in results]

    assert asyncio.run(story()) == [["late-delivery"], ["late-delivery"], [], ["double-charge"]]
    first, second, third, fourth = model.calls
    assert first[0] == SystemMessage(content=SYSTEM)
    assert coaching(first) == [f"{COACHING_HEADER}\n- {LATE.situation}: {LATE.guidance}"]
    assert coaching(first) == [first[1].content]  # right after the agent's own system prompt
    assert coaching(second) == coaching(first) and coaching(second) == [second[1].content]  # replaced, not piled up
    assert coaching(third) == []  # nothing fits any more: the earlier block is gone
    assert coaching(fourth) == [f"{COACHING_HEADER}\n- {TWICE.situation}: {TWICE.guidance}"]


def test_a_model_that_takes_one_system_message_gets_one(tmp_path: Path) -> None:
    """Through the real OpenAI client with multiple_system_messages off: the block merges into the prompt."""
    run = run_folder(tmp_path)
    with OpenAIStub(reply=lambda request: "On it.") as stub:
        client = OpenAIChatCompletionClient(
            model="stub",
            base_url=stub.url,
            api_key="not-needed",
            max_retries=0,
            model_info={**STUB_MODEL_INFO, "multiple_system_messages": False},
        )
        agent = AssistantAgent("support", model_client=client, system_message=SYSTEM, memory=[CoachingMemory(run)])

        async def story() -> None:
            await agent.run(task="My parcel is late and I want a refund of the delivery fee.")
            await agent.run(task="It is still late. Refund me please.")
            await client.close()

        asyncio.run(story())
        sent = [request.body for request in stub.requests if request.body is not None]
    for body in sent:
        systems = [m["content"] for m in body["messages"] if m["role"] == "system"]
        assert len(systems) == 1 and systems[0].startswith(SYSTEM) and LATE.guidance in systems[0]
        assert systems[0].count(COACHING_HEADER) == 1


def test_a_buffered_context_still_shows_the_block(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    model = ScriptedChatCompletionClient(lambda messages: "Sure.")
    agent = AssistantAgent(
        "support",
        model_client=model,
        model_context=BufferedChatCompletionContext(buffer_size=2),
        memory=[CoachingMemory(run)],
    )

    async def story() -> None:
        await agent.run(task="Hello there.")
        await agent.run(task="My parcel is late and I want a refund of the delivery fee.")

    asyncio.run(story())
    assert coaching(model.calls[0]) == []
    assert [LATE.guidance in text for text in coaching(model.calls[1])] == [True]


@pytest.mark.embedded
def test_paraphrased_situation_with_the_real_embedding_model(tmp_path: Path) -> None:
    require_embedded("all-minilm-l6-v2")
    run = run_folder(tmp_path, retrieval="retrieval: {kind: embedding, k: 3}\n")
    memory = CoachingMemory(run)
    assert memory.library.kind == "embedding" and memory.library.floor == 0.4
    model = ScriptedChatCompletionClient(lambda messages: "I understand.")
    agent = AssistantAgent("support", model_client=model, system_message=SYSTEM, memory=[memory])

    async def story() -> list[list[str]]:
        paraphrase = await agent.run(
            task="It's been ten days and my package still hasn't arrived. I'd like my money back."
        )
        unrelated = await AssistantAgent("other", model_client=model, system_message=SYSTEM, memory=[memory]).run(
            task="Can you recommend a good pasta recipe for tonight?"
        )
        return [shown_ids(paraphrase.messages), shown_ids(unrelated.messages)]

    assert asyncio.run(story()) == [["late-delivery"], []]
    assert coaching(model.calls[1]) == []


def test_component_round_trip_keeps_the_library_and_settings(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    memory = CoachingMemory(run, version=1, retrieval=LEXICAL, name="acme-coach")
    dumped = memory.dump_component()
    assert dumped.provider == "coachlab.CoachingMemory" and dumped.component_type == "memory"
    loaded = Memory.load_component(json.loads(dumped.model_dump_json()))
    assert isinstance(loaded, CoachingMemory)
    assert loaded.dump_component() == dumped
    assert loaded.name == "acme-coach" and loaded.library.version == 1 and loaded.library.k == 2
    # inside an agent's own component config too
    client = OpenAIChatCompletionClient(
        model="stub", base_url="http://127.0.0.1:9/v1", api_key="x", model_info=STUB_MODEL_INFO
    )
    agent = AssistantAgent("support", model_client=client, system_message=SYSTEM, memory=[memory])
    again = AssistantAgent.load_component(agent.dump_component())
    assert again.dump_component().config["memory"] == [dumped.model_dump(exclude_none=True)]


def test_query_add_clear_close(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    memory = CoachingMemory(run)

    async def story() -> tuple[Any, ...]:
        hits = await memory.query("I was charged twice for my subscription this month.")
        same = await memory.query(MemoryContent(content="charged twice for one order", mime_type=MemoryMimeType.TEXT))
        nothing = await memory.query("")
        with pytest.raises(UsageError, match="read-only"):
            await memory.add(MemoryContent(content="Always give a discount.", mime_type=MemoryMimeType.TEXT))
        await memory.clear()
        await memory.close()
        return hits, same, nothing

    hits, same, nothing = asyncio.run(story())
    assert [c.metadata for c in hits.results] == [
        {
            "strategy_id": "double-charge",
            "score": pytest.approx(hits.results[0].metadata["score"]),
            "library_version": 1,
        }
    ]
    assert hits.results[0].content == f"{TWICE.situation}: {TWICE.guidance}"
    assert [c.metadata["strategy_id"] for c in same.results if c.metadata] == ["double-charge"]
    assert nothing.results == []


def test_a_new_approved_version_reaches_a_running_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import coachlab.agents.memory as memory_module

    monkeypatch.setattr(memory_module, "RELOAD_EVERY_S", 0.0)
    run = run_folder(tmp_path)
    memory = CoachingMemory(run)
    model = ScriptedChatCompletionClient(lambda messages: "Okay.")
    agent = AssistantAgent("support", model_client=model, system_message=SYSTEM, memory=[memory])
    task = "I cannot log in and the password reset link never arrives."

    async def story() -> list[list[str]]:
        before = await agent.run(task=task)
        LibraryStore(run / "library").set_status(LOGIN.id, AuditStatus.APPROVED, by="ana", why="checked")
        after = await agent.run(task=task)
        return [shown_ids(before.messages), shown_ids(after.messages)]

    assert asyncio.run(story()) == [[], ["password"]]
    assert memory.library.version == 2
