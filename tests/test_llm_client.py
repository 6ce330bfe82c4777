"""The models layer: role-aware cache keys, retries, limits, usage, env expansion."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from autogen_core.models import LLMMessage, UserMessage

from coachlab.errors import ConfigError
from coachlab.llm import (
    Backend,
    BackendError,
    CacheKey,
    ModelEntry,
    ResponseCache,
    RetryPolicy,
    RoleClient,
    model_identity,
)
from coachlab.llm.components import build_chat_client, expand_env
from coachlab.testing import ScriptedChatCompletionClient

MSGS = [UserMessage(content="hello", source="u")]


def key(**over: object) -> str:
    data: dict[str, object] = dict(role="customer", model="m", temperature=0.7, seed=1, trial=0, messages=MSGS)
    data.update(over)
    return CacheKey(**data).digest()  # type: ignore[arg-type]


def test_cache_keys_differ_across_role_model_temperature_seed_trial_and_messages() -> None:
    base = key()
    variants = [
        key(role="judge"),
        key(model="other"),
        key(temperature=0.2),
        key(seed=2),
        key(trial=1),
        key(messages=[UserMessage(content="hello!", source="u")]),
    ]
    assert base == key()
    assert len({base, *variants}) == 7


def counting_backend(reply: str = "ok", **entry: object) -> tuple[Backend, ScriptedChatCompletionClient]:
    client = ScriptedChatCompletionClient(lambda m: f"{reply} #{len(client.calls)}")
    return Backend.from_client(
        "b", client, entry=ModelEntry(provider="x.Y", config={"model": "m", "temperature": 0.5}, **entry)
    ), client  # type: ignore[arg-type]


def test_cache_hits_on_exact_repeat_only(tmp_path: Path) -> None:
    backend, client = counting_backend()
    cache = ResponseCache(tmp_path / "c.sqlite")

    async def go() -> list[str]:
        out = []
        for role, trial in [("customer", 0), ("customer", 0), ("judge", 0), ("customer", 1)]:
            rc = RoleClient(backend, role=role, seed=5, trial=trial, cache=cache)
            out.append(str((await rc.create(MSGS)).content))
        return out

    first, repeat, other_role, other_trial = asyncio.run(go())
    assert repeat == first  # exact repeat: served from the cache
    assert len({first, other_role, other_trial}) == 3  # other role / trial: fresh answers
    assert len(client.calls) == 3
    # the cache persists across processes (a resumed run reuses it)
    cache.close()
    again = ResponseCache(tmp_path / "c.sqlite")
    rc = RoleClient(backend, role="customer", seed=5, trial=0, cache=again)
    result = asyncio.run(rc.create(MSGS))
    assert result.cached and result.content == first and rc.usage.cached_calls == 1


def test_seed_is_sent_with_every_call() -> None:
    backend, client = counting_backend()
    asyncio.run(RoleClient(backend, role="agent", seed=42, trial=0).create(MSGS))
    assert client.create_args[0]["seed"] == 42


class Flaky(Exception):
    def __init__(self, status: int, retry_after: str | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status

        class Resp:
            headers = {"retry-after": retry_after} if retry_after else {}

        self.response = Resp()


def test_transient_errors_are_retried_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def fake_sleep(s: float) -> None:
        waits.append(s)

    monkeypatch.setattr("coachlab.llm.client.asyncio.sleep", fake_sleep)
    errors = [Flaky(429, "3"), Flaky(503), TimeoutError()]

    def fn(m: Sequence[LLMMessage]) -> str:
        if errors:
            raise errors.pop(0)
        return "finally"

    backend = Backend.from_client(
        "b",
        ScriptedChatCompletionClient(fn),
        entry=ModelEntry(provider="x.Y", retry=RetryPolicy(max_retries=4, initial_backoff_s=1)),
    )
    rc = RoleClient(backend, role="agent")
    assert asyncio.run(rc.create(MSGS)).content == "finally"
    assert waits[0] == 3.0  # Retry-After honoured
    assert len(waits) == 3 and all(0 < w <= 30 for w in waits)


def test_persistent_and_non_transient_errors_fail_with_backend_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(s: float) -> None:
        return None

    monkeypatch.setattr("coachlab.llm.client.asyncio.sleep", no_sleep)
    calls = {"n": 0}

    def always_500(m: Sequence[LLMMessage]) -> str:
        calls["n"] += 1
        raise Flaky(500)

    backend = Backend.from_client(
        "b",
        ScriptedChatCompletionClient(always_500),
        entry=ModelEntry(provider="x.Y", retry=RetryPolicy(max_retries=2)),
    )
    with pytest.raises(BackendError, match=r"after 3 attempt"):
        asyncio.run(RoleClient(backend, role="agent").create(MSGS))
    assert calls["n"] == 3

    def bad_request(m: Sequence[LLMMessage]) -> str:
        calls["n"] += 1
        raise Flaky(400)

    calls["n"] = 0
    backend = Backend.from_client("b", ScriptedChatCompletionClient(bad_request), entry=ModelEntry(provider="x.Y"))
    with pytest.raises(BackendError):
        asyncio.run(RoleClient(backend, role="agent").create(MSGS))
    assert calls["n"] == 1


def test_per_call_timeout_counts_as_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    async def slow(m: Sequence[LLMMessage]) -> str:
        await asyncio.sleep(10)
        return "late"

    backend = Backend.from_client(
        "b",
        ScriptedChatCompletionClient(slow),
        entry=ModelEntry(provider="x.Y", retry=RetryPolicy(max_retries=1, timeout_s=0.05, initial_backoff_s=0)),
    )
    with pytest.raises(BackendError, match="TimeoutError"):
        asyncio.run(RoleClient(backend, role="agent").create(MSGS))


def test_concurrency_limit_per_backend() -> None:
    state = {"now": 0, "peak": 0}

    async def slow(m: Sequence[LLMMessage]) -> str:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.01)
        state["now"] -= 1
        return "ok"

    backend = Backend.from_client(
        "b", ScriptedChatCompletionClient(slow), entry=ModelEntry(provider="x.Y", concurrency=3)
    )

    async def go() -> None:
        await asyncio.gather(*(RoleClient(backend, role="r").create(MSGS) for _ in range(20)))

    asyncio.run(go())
    assert state["peak"] == 3


def test_usage_is_counted_per_role() -> None:
    backend, _ = counting_backend()
    rc = RoleClient(backend, role="agent")
    asyncio.run(rc.create([UserMessage(content="one two three", source="u")]))
    assert rc.usage.calls == 1 and rc.usage.prompt_tokens == 3 and rc.usage.completion_tokens == 2


def test_fenced_json_is_unwrapped_for_structured_output() -> None:
    from pydantic import BaseModel

    class Out(BaseModel):
        x: int

    backend = Backend.from_client(
        "b",
        ScriptedChatCompletionClient(lambda m: '```json\n{"x": 1}\n```'),
        entry=ModelEntry(provider="x.Y", structured_output="prompt"),
    )
    client = backend.client
    result = asyncio.run(RoleClient(backend, role="judge").create(MSGS, json_output=Out))
    assert result.content == '{"x": 1}'
    assert client.create_args[0]["json_output"] is None  # type: ignore[attr-defined]


def test_json_object_schema_mode_sends_the_schema_as_response_format() -> None:
    from pydantic import BaseModel

    class Out(BaseModel):
        x: int

    backend, client = counting_backend(structured_output="json_object_schema")
    asyncio.run(RoleClient(backend, role="judge").create(MSGS, json_output=Out))
    assert client.create_args[0]["response_format"]["schema"]["properties"]["x"]["type"] == "integer"


def test_env_references_expand_and_missing_ones_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-test-123")
    monkeypatch.delenv("NOPE", raising=False)
    assert expand_env({"api_key": "${MY_KEY}", "x": ["${NOPE:-fallback}"]}, where="f") == {
        "api_key": "sk-test-123",
        "x": ["fallback"],
    }
    with pytest.raises(ConfigError, match=r"models\.student\.config\.api_key: environment variable NOPE is not set"):
        expand_env({"api_key": "${NOPE}"}, where="models.student.config")


def test_openai_entry_builds_and_identity_holds_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_KEY", "sk-sentinel-999")
    entry = ModelEntry(
        provider="openai", config={"model": "gpt-4o-mini", "api_key": "${SENTINEL_KEY}", "temperature": 0.3}
    )
    client = build_chat_client(entry, where="x.yaml: models.teacher")
    assert type(client).__name__ == "OpenAIChatCompletionClient"
    assert "sk-sentinel" not in model_identity(entry)
    assert "sk-sentinel" not in entry.model_dump_json()


def test_unknown_provider_and_bad_config_give_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"models\.x: cannot build"):
        build_chat_client(ModelEntry(provider="nowhere.Nothing", config={}), where="models.x")
    with pytest.raises(ConfigError, match="model_info"):
        build_chat_client(
            ModelEntry(
                provider="openai",
                config={"model": "my-local-llama", "base_url": "http://127.0.0.1:9/v1", "api_key": "x"},
            ),
            where="models.student",
        )


def test_each_call_of_a_role_gets_the_next_seed_and_a_rerun_repeats_them() -> None:
    backend, client = counting_backend()

    async def episode() -> list[int]:
        rc = RoleClient(backend, role="customer", seed=100, trial=0)
        for _ in range(3):
            await rc.create(MSGS)
        return [a["seed"] for a in client.create_args[-3:]]

    assert asyncio.run(episode()) == [100, 101, 102]
    assert asyncio.run(episode()) == [100, 101, 102]


def test_a_greedy_call_is_asked_once_whatever_its_seed_or_trial(tmp_path: Path) -> None:
    backend, client = counting_backend()
    cache = ResponseCache(tmp_path / "c.sqlite")

    async def go(args: dict[str, float] | None) -> list[str]:
        out = []
        for seed, trial in [(1, 0), (2, 0), (3, 1)]:
            rc = RoleClient(backend, role="judge-checklist", seed=seed, trial=trial, cache=cache, create_args=args)
            out.append(str((await rc.create(MSGS)).content))
        return out

    assert len(set(asyncio.run(go({"temperature": 0.0})))) == 1 and len(client.calls) == 1
    assert len(set(asyncio.run(go(None)))) == 3 and len(client.calls) == 4  # sampled: each seed asks afresh
    assert client.create_args[0]["temperature"] == 0.0  # the call carried the role's arguments
