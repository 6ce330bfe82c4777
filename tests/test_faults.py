"""The fault-injecting stub on the real client path: each fault kind, and what coachlab's retries make of it.

Every call goes through `RoleClient` -> AutoGen's `OpenAIChatCompletionClient` -> the openai SDK
-> HTTP on 127.0.0.1 -> `OpenAIStub`, with the SDK's own retries off, so the retries, waits and
timeouts measured here are coachlab's.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
from autogen_core.models import CreateResult, UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient
from openai import APIConnectionError

from coachlab.agents import build_judge
from coachlab.environments import judge_dialogue
from coachlab.llm import Backend, BackendError, ModelEntry, RetryPolicy, RoleClient
from coachlab.schema import Verdict
from coachlab.testing.faults import (
    BadJson,
    Drop,
    Fault,
    FaultPlan,
    FaultRule,
    Hang,
    StubRequest,
    fault_kind,
    rate_limited,
    server_error,
)
from coachlab.testing.openai_stub import STUB_MODEL_INFO, OpenAIStub, replies_by_model
from helpers import scenario, score_json, verdict

FAST = RetryPolicy(max_retries=3, initial_backoff_s=0.01, max_backoff_s=2.0, timeout_s=0.4)
DIALOGUE = [("customer", "My parcel is late."), ("agent", "Refunded, reference R-1."), ("customer", "Thanks!")]


def backend(stub: OpenAIStub, role: str, *, retry: RetryPolicy = FAST, structured_output: str = "native") -> Backend:
    entry = ModelEntry(
        provider="openai",
        config=stub.model_entry_config(model=role),
        retry=retry,
        structured_output=structured_output,  # type: ignore[arg-type]
    )
    return Backend.from_entry(role, entry, where=f"test: models.{role}")


def call(stub: OpenAIStub, *, retry: RetryPolicy = FAST) -> tuple[CreateResult, float]:
    async def go() -> tuple[CreateResult, float]:
        b = backend(stub, "agent", retry=retry)
        started = time.perf_counter()
        try:
            result = await RoleClient(b, role="agent").create([UserMessage(content="Where is it?", source="u")])
        finally:
            await b.close()
        return result, time.perf_counter() - started

    return asyncio.run(go())


def request(model: str, text: str = "hello", *, json: bool = False, index: int = 0) -> StubRequest:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if json:
        body["response_format"] = {"type": "json_object"}
    return StubRequest(index=index, method="POST", path="/v1/chat/completions", headers={}, body=body)


def test_rules_pick_requests_by_role_pattern_json_probability_skip_and_count() -> None:
    by_role = FaultRule(server_error(), model="judge", count=2)
    by_pattern = FaultRule(Drop(), pattern=r"flight from \w+", skip=1)
    json_only = FaultRule(BadJson("malformed"), json_only=True)
    plan = FaultPlan(by_role, by_pattern, json_only)
    assert plan(request("customer")) is None
    assert plan(request("judge")) == server_error() and plan(request("judge")) == server_error()
    assert plan(request("judge")) is None  # count spent: the fault was transient
    assert plan(request("agent", "my flight from Chicago")) is None  # skipped once
    assert plan(request("agent", "my flight from Chicago")) == Drop()  # persistent from then on
    assert plan(request("agent", "my flight from Oslo")) == Drop()
    assert plan(request("agent", json=True)) == BadJson("malformed")
    assert plan.injected == {"http_500": 2, "drop_mid_body": 2, "bad_json_malformed": 1} and plan.total == 5

    sometimes = FaultPlan(FaultRule(Hang(), probability=0.3, seed=7))
    fired = sum(sometimes(request("agent", index=i)) is not None for i in range(1000))
    assert 240 <= fired <= 360  # about 30%
    again = FaultPlan(FaultRule(Hang(), probability=0.3, seed=7))
    assert sum(again(request("agent", index=i)) is not None for i in range(1000)) == fired  # seeded
    with pytest.raises(ValueError, match="probability"):
        FaultRule(Hang(), probability=1.5)


@pytest.mark.parametrize(
    "fault",
    [server_error(), rate_limited(retry_after=None), Hang(seconds=30), Drop("before_response"), Drop("mid_body")],
    ids=fault_kind,
)
def test_each_transient_fault_kind_is_retried_and_the_call_succeeds(fault: Fault) -> None:
    plan = FaultPlan(FaultRule(fault, count=1))
    with OpenAIStub(reply=lambda r: "Here it is.", behaviour=plan) as stub:
        result, took = call(stub)
    assert result.content == "Here it is."
    assert stub.request_count == 2 and stub.faults_injected == {fault_kind(fault): 1}
    first, second = stub.requests
    assert first.body == second.body  # the same call, tried again
    if isinstance(fault, Hang):
        assert FAST.timeout_s is not None and took >= FAST.timeout_s  # it waited for the timeout, then retried
    assert took < 2.0


def test_retry_after_is_waited_for_and_backoff_without_it_is_short() -> None:
    for retry_after, at_least, at_most in ((0.3, 0.3, 1.0), (None, 0.0, 0.1)):
        plan = FaultPlan(FaultRule(rate_limited(retry_after), count=2))
        with OpenAIStub(reply=lambda r: "ok", behaviour=plan) as stub:
            result, _ = call(stub)
        assert result.content == "ok"
        gaps = [b.at - a.at for a, b in itertools.pairwise(stub.requests)]
        assert len(gaps) == 2 and all(at_least <= g < at_most for g in gaps), (retry_after, gaps)


def test_retry_after_longer_than_the_policy_allows_is_capped() -> None:
    capped = RetryPolicy(max_retries=1, initial_backoff_s=0.01, max_backoff_s=0.2, timeout_s=1.0)
    with OpenAIStub(reply=lambda r: "ok", behaviour=FaultPlan(FaultRule(rate_limited(30), count=1))) as stub:
        _, took = call(stub, retry=capped)
    assert 0.2 <= took < 1.0


@pytest.mark.parametrize("fault", [server_error(), Hang(seconds=30), Drop("mid_body")], ids=fault_kind)
def test_a_persistent_fault_fails_for_good_after_the_policy_retries(fault: Fault) -> None:
    policy = RetryPolicy(max_retries=2, initial_backoff_s=0.01, max_backoff_s=0.05, timeout_s=0.2)
    with OpenAIStub(behaviour=FaultPlan(FaultRule(fault)), keep=10) as stub, pytest.raises(BackendError) as info:
        call(stub, retry=policy)
    assert info.value.attempts == 3 and stub.request_count == 3
    assert stub.faults_injected == {fault_kind(fault): 3}


JudgeScript = Callable[[dict[str, Any]], str]


def judge_once(stub: OpenAIStub, mode: str) -> tuple[Verdict | None, str | None, bool]:
    async def go() -> tuple[Verdict | None, str | None, bool]:
        b = backend(stub, "judge", structured_output=mode)
        try:
            judge = build_judge(model_client=RoleClient(b, role="judge", seed=1))
            result = await judge_dialogue(judge, scenario(), DIALOGUE, retries=2)
        finally:
            await b.close()
        return result.verdict, result.error, result.backend_failed

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["native", "json_object_schema"])
@pytest.mark.parametrize("kind", ["truncated", "malformed", "wrong_fields"])
def test_broken_judge_json_is_reasked_and_a_persistent_one_is_a_judge_error_not_a_verdict(mode: str, kind: str) -> None:
    reply = replies_by_model({"judge": score_json(6)})
    once = FaultPlan(FaultRule(BadJson(kind), model="judge", count=1))  # type: ignore[arg-type]
    with OpenAIStub(reply=reply, behaviour=once) as stub:
        found, error, _ = judge_once(stub, mode)
    assert found == verdict(6) and error is None
    assert stub.request_count == 2  # one re-ask, with the parse problem in it
    body = stub.requests[-1].body
    assert body is not None and "could not be read" in str(body["messages"])

    always = FaultPlan(FaultRule(BadJson(kind), model="judge"))  # type: ignore[arg-type]
    with OpenAIStub(reply=reply, behaviour=always) as stub:
        found, error, backend_failed = judge_once(stub, mode)
    assert found is None and error is not None and "unreadable" in error
    assert not backend_failed  # the model answered badly; no backend failed
    assert stub.request_count == 3 and stub.faults_injected == {f"bad_json_{kind}": 3}


def test_a_streamed_answer_arrives_whole_or_is_cut_mid_stream() -> None:
    async def stream(stub: OpenAIStub) -> list[str | CreateResult]:
        client = OpenAIChatCompletionClient(model="m", base_url=stub.url, api_key="x", model_info=STUB_MODEL_INFO)
        got: list[str | CreateResult] = []
        try:
            async for item in client.create_stream([UserMessage(content="hi", source="u")]):
                got.append(item)
        finally:
            await client.close()
        return got

    with OpenAIStub(reply=lambda r: "one two three four five six") as stub:
        whole = asyncio.run(stream(stub))
    assert "".join(x for x in whole if isinstance(x, str)) == "one two three four five six"
    assert isinstance(whole[-1], CreateResult) and whole[-1].content == "one two three four five six"

    cut = FaultPlan(FaultRule(Drop()))
    with (
        OpenAIStub(reply=lambda r: "one two three four five six", behaviour=cut) as stub,
        pytest.raises(APIConnectionError),  # the stream ended before its last chunk
    ):
        asyncio.run(stream(stub))
    assert stub.faults_injected == {"drop_mid_body": 1}
