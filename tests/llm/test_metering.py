"""Prompt tokens processed (not only sent), per role: from llama.cpp in-process, from servers, through the cache."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from autogen_core.models import AssistantMessage, CreateResult, LLMMessage, SystemMessage, UserMessage

from coachlab.llm import Backend, ModelEntry, ResponseCache, RoleClient
from coachlab.llm.components import build_chat_client
from coachlab.llm.embedded import EmbeddedChatCompletionClient
from coachlab.llm.metering import metering, processed_from_response
from coachlab.schema import Episode, RoleUsage
from coachlab.testing import ScriptedChatCompletionClient
from coachlab.testing.openai_stub import OpenAIStub

SYSTEM = SystemMessage(content="You are a support agent for Acme. Be brief and never invent facts.")
FIRST: list[LLMMessage] = [SYSTEM, UserMessage(content="My parcel is late.", source="customer")]
SECOND: list[LLMMessage] = [
    *FIRST,
    AssistantMessage(content="Sorry! Your order number?", source="agent"),
    UserMessage(content="A-100.", source="customer"),
]


# -- what servers report ------------------------------------------------------------------------


def test_servers_cache_reports_are_read_and_no_report_is_unknown_not_zero() -> None:
    llama_server = {"usage": {"prompt_tokens": 900}, "timings": {"prompt_n": 120, "cache_n": 780}}
    openai = {"usage": {"prompt_tokens": 900, "prompt_tokens_details": {"cached_tokens": 768}}}
    assert processed_from_response(llama_server) == 120
    assert processed_from_response(openai) == 132
    assert processed_from_response({"usage": {"prompt_tokens": 900, "prompt_tokens_details": None}}) is None  # vLLM
    assert processed_from_response({"usage": {"prompt_tokens": 900}}) is None  # llama_cpp.server
    assert processed_from_response({}) is None


@pytest.mark.parametrize(("report", "expected"), [("none", None), ("openai", 0), ("llama.cpp", 0)])
def test_a_server_behind_the_openai_client_reports_what_it_processed_per_role(
    report: Literal["none", "openai", "llama.cpp"], expected: int | None
) -> None:
    with OpenAIStub(prompt_cache=report) as stub:
        backend = Backend.from_entry(
            "student", ModelEntry(provider="openai", config=stub.model_entry_config()), where="t"
        )
        role = RoleClient(backend, role="agent", seed=1)

        async def dialogue() -> None:
            await role.create(FIRST)
            await role.create(SECOND)
            await backend.close()

        asyncio.run(dialogue())
    usage = role.usage
    assert usage.calls == 2 and usage.prompt_tokens > 0
    assert usage.model_seconds is not None and usage.model_seconds >= 0
    if expected is None:
        assert usage.prompt_processed is None
    else:
        # The second prompt extends the first: the stub's cache serves the first prompt's words again.
        first_words = len(" ".join(m.content for m in FIRST if isinstance(m.content, str)).split())
        assert usage.prompt_processed == usage.prompt_tokens - first_words


def test_the_metered_http_client_leaves_streams_alone() -> None:
    entry = ModelEntry(provider="openai", config={})
    with OpenAIStub(reply=lambda r: "one two three", prompt_cache="llama.cpp") as stub:
        client = build_chat_client(entry.model_copy(update={"config": stub.model_entry_config()}), where="t")

        async def stream() -> list[str | CreateResult]:
            with metering() as meter:
                got = [item async for item in client.create_stream(FIRST)]
            await client.close()
            assert meter.prompt_processed is None  # a stream's body is never read by the hook
            return got

        got = asyncio.run(stream())
    assert [x for x in got if isinstance(x, str)] == ["one", " two", " three"]
    assert isinstance(got[-1], CreateResult) and got[-1].content == "one two three"


def test_a_cached_answer_counts_what_it_cost_when_it_was_made(tmp_path: Path) -> None:
    with OpenAIStub(prompt_cache="llama.cpp") as stub:
        backend = Backend.from_entry(
            "student", ModelEntry(provider="openai", config=stub.model_entry_config()), where="t"
        )

        async def twice() -> tuple[RoleUsage, RoleUsage]:
            usages: list[RoleUsage] = []
            for _ in range(2):
                cache = ResponseCache(tmp_path / "cache.sqlite")
                role = RoleClient(backend, role="agent", seed=1, cache=cache)
                await role.create(FIRST)
                cache.close()
                usages.append(role.usage)
            await backend.close()
            return usages[0], usages[1]

        made, replayed = asyncio.run(twice())
    assert stub.request_count == 1
    assert made.prompt_processed == made.prompt_tokens  # nothing cached on the server's first call
    assert (replayed.cached_calls, replayed.prompt_processed, replayed.model_seconds) == (
        1,
        made.prompt_processed,
        made.model_seconds,
    )


def test_overlapping_identical_calls_use_and_count_the_first_stored_answer_as_a_replay_would(tmp_path: Path) -> None:
    made = 0

    async def answer(messages: Sequence[LLMMessage]) -> str:
        nonlocal made
        made += 1
        mine = made
        await asyncio.sleep(0.05 * mine)  # the first call stores first
        return f"answer {mine}"

    backend = Backend.from_client("student", ScriptedChatCompletionClient(answer))
    cache = ResponseCache(tmp_path / "cache.sqlite")
    roles = [RoleClient(backend, role="agent", seed=1, trial=0, cache=cache) for _ in range(2)]

    async def overlapping() -> list[str]:
        results = await asyncio.gather(*(role.create(FIRST) for role in roles))
        return [str(r.content) for r in results]

    assert asyncio.run(overlapping()) == ["answer 1", "answer 1"] and made == 2
    assert roles[0].usage == roles[1].usage  # the second caller counts the stored answer's cost
    cache.close()


def test_clients_that_do_not_report_leave_processed_unknown() -> None:
    backend = Backend.from_client("student", ScriptedChatCompletionClient(lambda m: "Hello."))
    role = RoleClient(backend, role="agent")
    asyncio.run(role.create(FIRST))
    assert role.usage.calls == 1 and role.usage.prompt_processed is None and role.usage.model_seconds is not None


# -- adding usage -------------------------------------------------------------------------------


def test_unknown_processed_stays_unknown_in_sums_and_empty_usage_adds_nothing() -> None:
    known = RoleUsage(calls=2, prompt_tokens=100, prompt_processed=40, model_seconds=1.5)
    unknown = RoleUsage(calls=1, prompt_tokens=50)  # a backend that does not say, or a record from before
    assert RoleUsage() + known == known == known + RoleUsage()
    assert (known + known).prompt_processed == 80 and (known + known).model_seconds == 3.0
    assert (known + unknown).prompt_processed is None and (unknown + known).model_seconds is None
    assert (known + unknown).prompt_tokens == 150
    old = Episode.model_validate(
        {
            "id": "s/baseline/student/0", "scenario_id": "s", "agent_model": "student", "trial": 0, "seed": 1,
            "events": [], "termination": "max_turns",
            "usage": {"agent": {"calls": 3, "cached_calls": 0, "prompt_tokens": 10, "completion_tokens": 2}},
        }
    )  # fmt: skip
    assert old.usage["agent"].prompt_processed is None


# -- the in-process engine ----------------------------------------------------------------------


class FakeLlama:
    """Enough of `llama_cpp.Llama` to count like it: it keeps the last prompt's KV prefix.

    Tokens are words. Like `Llama.generate`, it evaluates the prompt minus the prefix it shares with
    what it evaluated last (one token again when the whole prompt is cached), then each new token.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.input_ids: list[str] = []

    def eval(self, tokens: Sequence[str]) -> None:
        self.input_ids.extend(tokens)

    def create_chat_completion(self, *, messages: list[dict[str, str]], stream: bool, **args: Any) -> dict[str, Any]:
        prompt = [*" ".join(f"<{m['role']}> {m['content']}" for m in messages).split(), "<assistant>"]
        keep = 0
        for mine, kept in zip(prompt, self.input_ids, strict=False):
            if mine != kept:
                break
            keep += 1
        keep = min(keep, len(prompt) - 1)
        self.input_ids = self.input_ids[:keep]
        self.eval(prompt[keep:])
        reply = ["Sure,", "one", "moment."]
        for word in reply[:-1]:  # the last sampled token is not evaluated
            self.eval([word])
        return {
            "choices": [{"message": {"content": " ".join(reply)}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(reply)},
        }

    def close(self) -> None:
        pass


@pytest.fixture
def fake_llama(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    module = types.ModuleType("llama_cpp")
    module.Llama = FakeLlama  # type: ignore[attr-defined]
    module.LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    model = tmp_path / "fake.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 16)
    return model


def test_the_embedded_model_reports_the_prompt_minus_the_kv_prefix_it_kept(fake_llama: Path) -> None:
    client = EmbeddedChatCompletionClient(str(fake_llama))

    async def call(messages: list[LLMMessage]) -> tuple[int, int | None]:
        with metering() as meter:
            result = await client.create(messages)
        return result.usage.prompt_tokens, meter.prompt_processed

    async def dialogue() -> list[tuple[int, int | None]]:
        return [await call(FIRST), await call(SECOND), await call(SECOND), await call(FIRST)]

    first, second, again, back = asyncio.run(dialogue())
    assert first[1] == first[0]  # a fresh model processes the whole prompt
    # The second prompt extends the first; the agent's line differs from what the model generated.
    assert second[1] == second[0] - first[0]
    assert again[1] == 1  # the same prompt: one token again, to sample from
    assert back[1] == 1  # FIRST is a prefix of what it holds: one token again


def test_role_usage_sums_what_the_embedded_model_processed(fake_llama: Path) -> None:
    backend = Backend.from_client("student", EmbeddedChatCompletionClient(str(fake_llama)))
    role = RoleClient(backend, role="agent", seed=1)

    async def dialogue() -> int:
        first = await role.create(FIRST)
        await role.create(SECOND)
        return first.usage.prompt_tokens

    first_prompt = asyncio.run(dialogue())
    assert role.usage.calls == 2
    assert role.usage.prompt_processed == role.usage.prompt_tokens - first_prompt  # the first prompt, once
