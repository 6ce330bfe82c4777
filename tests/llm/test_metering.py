"""Prompt tokens processed (not only sent), per role: from llama.cpp in-process, from servers, through the cache."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from autogen_core.models import AssistantMessage, CreateResult, LLMMessage, SystemMessage, UserMessage

from coachlab.llm import Backend, ModelEntry, ResponseCache, RoleClient
from coachlab.llm.components import build_chat_client
from coachlab.llm.embedded import EmbeddedChatCompletionClient
from coachlab.llm.metering import MeteredResult, metering, processed_from_response
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
            "id": "s/baseline/student/0",
            "scenario_id": "s",
            "agent_model": "student",
            "trial": 0,
            "seed": 1,
            "events": [],
            "termination": "max_turns",
            "usage": {"agent": {"calls": 3, "cached_calls": 0, "prompt_tokens": 10, "completion_tokens": 2}},
        }
    )
    assert old.usage["agent"].prompt_processed is None


# -- the in-process engine ----------------------------------------------------------------------


class FakeLlamaModel:
    """Enough of llama-cpp-python's `_internals.LlamaModel`: records which files were loaded and freed."""

    loaded: ClassVar[list[str]] = []
    freed: ClassVar[list[str]] = []

    def __init__(self, *, path_model: str, params: Any, verbose: bool = True) -> None:
        self.path_model = path_model
        FakeLlamaModel.loaded.append(path_model)

    def close(self) -> None:
        FakeLlamaModel.freed.append(self.path_model)


class FakeLlama:
    """Enough of `llama_cpp.Llama` to count like it: it keeps the last prompt's KV prefix.

    Like `Llama`, it loads its model through `llama_cpp._internals.LlamaModel` and closes it when closed.
    Tokens are words. Like `Llama.generate`, it evaluates the prompt minus the prefix it shares with
    what it evaluated last (one token again when the whole prompt is cached), then each new token.
    """

    def __init__(self, *, model_path: str, **kwargs: Any) -> None:
        self._model = sys.modules["llama_cpp"]._internals.LlamaModel(path_model=model_path, params=None)  # type: ignore[attr-defined]
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
        self._model.close()


@pytest.fixture
def fake_llama(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    internals = types.ModuleType("llama_cpp._internals")
    internals.LlamaModel = FakeLlamaModel  # type: ignore[attr-defined]
    module = types.ModuleType("llama_cpp")
    module.Llama = FakeLlama  # type: ignore[attr-defined]
    module.LLAMA_DEFAULT_SEED = 0xFFFFFFFF  # type: ignore[attr-defined]
    module._internals = internals  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    monkeypatch.setattr(FakeLlamaModel, "loaded", [])
    monkeypatch.setattr(FakeLlamaModel, "freed", [])
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


# -- engine contexts ----------------------------------------------------------------------------


def test_clients_on_one_model_file_share_its_loaded_model_and_the_last_one_frees_it(fake_llama: Path) -> None:
    judge = EmbeddedChatCompletionClient(str(fake_llama), temperature=0.2)
    customer = EmbeddedChatCompletionClient(str(fake_llama), temperature=0.8)
    grader = judge.engine_context("checklist")
    assert grader is judge.engine_context("checklist") and grader is not judge
    assert grader.config == judge.config

    async def run() -> None:
        for client in (judge, customer, grader):
            await client.create(FIRST)
        assert FakeLlamaModel.loaded == [str(fake_llama)]  # three contexts, one copy of the weights
        await judge.close()  # closes the grader's context too
        assert FakeLlamaModel.freed == []  # the customer still uses the model
        await customer.close()
        assert FakeLlamaModel.freed == [str(fake_llama)]
        await customer.create(FIRST)  # reopened on use

    asyncio.run(run())
    assert FakeLlamaModel.loaded == [str(fake_llama)] * 2
    asyncio.run(customer.close())
    scripted = Backend.from_client("judge", ScriptedChatCompletionClient(lambda m: "{}"))
    assert scripted.client_for("checklist") is scripted.client  # a server keeps its own prompt cache


def judge_episode_prompts(dialogue: list[tuple[str, str]]) -> tuple[list[list[LLMMessage]], list[LLMMessage]]:
    """What the judge backend is asked about one episode: per-line checklist questions, then satisfaction."""
    from coachlab.agents.checklist import line_view
    from coachlab.agents.judge import judge_view
    from coachlab.schema import Criterion
    from helpers import scenario

    items = [Criterion(id="ref", text="gives a reference number"), Criterion(id="day", text="names the day")]
    lines = [text for who, text in dialogue if who == "agent"]
    return [line_view(line, item) for line in lines for item in items], judge_view(scenario(), dialogue)


EPISODES = [
    [("customer", "My parcel is late."), ("agent", "Sorry! It leaves Monday, reference A-1.")],
    [("customer", "Where is my parcel?"), ("agent", "It ships tomorrow; your reference is B-7.")],
]


@pytest.mark.parametrize("own_context", [True, False], ids=["own context", "shared context"])
def test_the_checklist_grader_keeps_its_prompt_and_the_judge_its_case_warm_across_episodes(
    fake_llama: Path, own_context: bool
) -> None:
    from coachlab.environments import CHECKLIST_CONTEXT, EnvironmentConfig, EpisodeRunner
    from coachlab.judging import JudgeConfig

    backend = Backend.from_client("judge", EmbeddedChatCompletionClient(str(fake_llama)))
    runner = EpisodeRunner({"judge": backend}, EnvironmentConfig(), judging=JudgeConfig(checklist="per_line"))
    processed: list[tuple[int, int]] = []  # per episode: the grader's first question, the judge's score

    async def episodes() -> None:
        for trial, dialogue in enumerate(EPISODES):
            _, (judge, grader) = runner.panel(seed=trial, trial=trial)
            assert (judge.context, grader.context) == (None, CHECKLIST_CONTEXT)
            if not own_context:
                grader = RoleClient(backend, role=grader.role, seed=grader.seed, trial=trial)
            questions, scoring = judge_episode_prompts(dialogue)
            first = await grader.create(questions[0])
            for question in questions[1:]:
                await grader.create(question)
            score = await judge.create(scoring)
            assert isinstance(first, MeteredResult) and isinstance(score, MeteredResult)
            assert first.prompt_processed is not None and score.prompt_processed is not None
            processed.append((first.prompt_processed, score.prompt_processed))
        await backend.close()

    asyncio.run(episodes())
    questions, scoring = judge_episode_prompts(EPISODES[1])
    grader_system = len(f"<system> {questions[0][0].content}".split())
    from_transcript = (
        len(str(scoring[-1].content).split("<transcript>", 1)[1].split()) + 2
    )  # + <transcript> <assistant>
    (_, _), (grader_second, judge_second) = processed
    if own_context:
        assert grader_second < grader_system  # the grader's system prompt stayed in its context
        assert judge_second <= from_transcript  # the judge reads the second transcript; the case stayed
    else:  # one context: each evicts the other's prefix every episode
        assert grader_second > grader_system
        assert judge_second > from_transcript + 50
