"""The loopback OpenAI stub: the real client path (openai SDK over HTTP) with no model, offline."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import time
from typing import Any

import pytest
from autogen_core.models import UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient

from coachlab.agents import build_customer, build_judge, build_service_agent
from coachlab.environments import EnvironmentConfig, EpisodeAgents, run_episode
from coachlab.llm import Backend, ModelEntry, RetryPolicy, RoleClient
from coachlab.schema import Episode, SatisfactionScore, TerminationReason, Verdict
from coachlab.testing.openai_stub import (
    STUB_MODEL_INFO,
    OpenAIStub,
    fault_script,
    rate_limited,
    replies_by_model,
    request_text,
    response_schema,
    schema_example,
    server_error,
)
from helpers import scenario, score_json, verdict

# AutoGen logs `ParsedChatCompletion.model_dump()`, and the openai SDK types `message.parsed` as
# None at runtime, so every native structured-output call warns (openai/openai-python#2872).
# It is harmless and happens against api.openai.com too; the suite turns warnings into errors.
PARSED_WARNING = "ignore:Pydantic serializer warnings:UserWarning"


def customer(request: dict[str, Any]) -> str:
    """The customer asks once, then thanks the agent and leaves satisfied."""
    if "Agent:" in request_text(request, role="user"):
        return "Great, thank you! [DONE]"
    return "My parcel is five days late, order A-100."


REPLIES = replies_by_model(
    {
        "customer": customer,
        "agent": "I have refunded your shipping, reference R-1.",
        "judge": score_json(8),
    }
)


async def episode_at(
    stub: OpenAIStub, *, structured_output: str = "native", retry: RetryPolicy | None = None
) -> Episode:
    backends = {
        role: Backend.from_entry(
            role,
            ModelEntry(
                provider="openai",
                config=stub.model_entry_config(model=role),
                structured_output=structured_output,  # type: ignore[arg-type]
                retry=retry or RetryPolicy(),
            ),
            where=f"test: models.{role}",
        )
        for role in ("customer", "agent", "judge")
    }
    roles = {name: RoleClient(b, role=name, seed=7, trial=0) for name, b in backends.items()}
    agents = EpisodeAgents(
        customer=build_customer(model_client=roles["customer"]),
        agent=build_service_agent(model_client=roles["agent"]),
        judge=build_judge(model_client=roles["judge"]),
    )
    try:
        return await run_episode(
            scenario(),
            agents,
            episode_id="stub",
            seed=7,
            trial=0,
            config=EnvironmentConfig(max_turns=4),
            usage=lambda: {name: rc.usage for name, rc in roles.items()},
        )
    finally:
        for b in backends.values():
            await b.client.close()


def test_autogen_openai_client_gets_the_stub_reply() -> None:
    async def go() -> tuple[str, int]:
        client = OpenAIChatCompletionClient(
            model="tiny", base_url=stub.url, api_key="not-needed", model_info=STUB_MODEL_INFO
        )
        try:
            result = await client.create([UserMessage(content="Where is my parcel?", source="user")])
        finally:
            await client.close()
        return str(result.content), result.usage.prompt_tokens

    with OpenAIStub(reply=lambda request: f"Hello from {request['model']}.") as stub:
        text, prompt_tokens = asyncio.run(go())
    assert text == "Hello from tiny."
    assert prompt_tokens == 4  # the stub counts words as tokens
    assert stub.request_count == 1
    body = stub.requests[-1].body
    assert body is not None
    assert body["messages"] == [{"role": "user", "content": "Where is my parcel?", "name": "user"}]
    assert stub.requests[-1].headers["authorization"] == "Bearer not-needed"


@pytest.mark.parametrize(
    ("mode", "format_type"),
    [
        pytest.param("native", "json_schema", marks=pytest.mark.filterwarnings(PARSED_WARNING)),
        ("json_object_schema", "json_object"),
    ],
)
def test_whole_episode_runs_against_the_stub(mode: str, format_type: str) -> None:
    with OpenAIStub(reply=REPLIES) as stub:
        ep = asyncio.run(episode_at(stub, structured_output=mode))
    assert ep.termination is TerminationReason.CUSTOMER_SATISFIED
    assert [(t.type, t.text) for t in ep.dialogue] == [
        ("customer_message", "My parcel is five days late, order A-100."),
        ("agent_message", "I have refunded your shipping, reference R-1."),
        ("customer_message", "Great, thank you!"),
    ]
    assert ep.verdict == verdict(8)
    assert ep.judge_error is None
    bodies = [r.body for r in stub.requests]
    assert [b["model"] for b in bodies if b] == ["customer", "agent", "customer", "judge"]
    # each role counts its own calls from the episode seed: re-asks sample afresh, resumes repeat
    assert [b["seed"] for b in bodies if b] == [7, 7, 8, 7]
    judge_request = bodies[-1]
    assert judge_request is not None
    assert judge_request["response_format"]["type"] == format_type
    schema = response_schema(judge_request)
    assert schema is not None
    assert schema["properties"].keys() == SatisfactionScore.model_fields.keys()
    assert ep.usage["judge"].calls == 1
    assert ep.usage["customer"].prompt_tokens > 0


def test_the_default_reply_answers_a_judge_with_a_valid_verdict() -> None:
    sent = {"response_format": {"type": "json_object", "schema": Verdict.model_json_schema()}}
    assert Verdict.model_validate(schema_example(response_schema(sent) or {})).failure_turn is None
    with OpenAIStub() as stub:  # default reply: a fixed line, or JSON that fits the schema sent
        ep = asyncio.run(episode_at(stub, structured_output="json_object_schema"))
    assert ep.judge_error is None
    # the customer says the agent's fixed line: out of role, the simulator's fault, never judged
    assert ep.termination is TerminationReason.CUSTOMER_OUT_OF_ROLE
    assert ep.simulator_fault is not None and ep.verdict is None and ep.usage["judge"].calls == 0


def test_rate_limit_then_server_error_are_retried_by_role_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="coachlab.llm.client")
    behaviour = fault_script(rate_limited(retry_after=0), server_error())
    with OpenAIStub(reply=REPLIES, behaviour=behaviour) as stub:
        ep = asyncio.run(
            episode_at(stub, structured_output="json_object_schema", retry=RetryPolicy(initial_backoff_s=0))
        )
    assert ep.termination is TerminationReason.CUSTOMER_SATISFIED
    assert ep.verdict == verdict(8)
    statuses = [r.fault.status if r.fault else 200 for r in stub.requests]
    assert statuses == [429, 500, 200, 200, 200, 200]
    first, _, third = (r.body for r in stub.requests[:3])
    assert first == third  # the same call, tried again
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2
    assert "RateLimitError" in retries[0]
    assert "InternalServerError" in retries[1]
    assert ep.usage["customer"].calls == 2  # a retried call counts once


def test_64_concurrent_keep_alive_calls_overlap_and_get_their_own_replies() -> None:
    async def two_bursts(n: int) -> tuple[float, list[str]]:
        client = OpenAIChatCompletionClient(
            model="m", base_url=stub.url, api_key="not-needed", model_info=STUB_MODEL_INFO
        )
        started = time.perf_counter()
        replies: list[str] = []
        try:
            for _ in range(2):  # the second burst reuses the kept-alive connections
                results = await asyncio.gather(
                    *(client.create([UserMessage(content=f"q{i}", source="u")]) for i in range(n))
                )
                replies += [str(r.content) for r in results]
        finally:
            await client.close()
        return time.perf_counter() - started, replies

    with OpenAIStub(reply=lambda request: "echo " + request_text(request), latency_s=0.25) as stub:
        took, replies = asyncio.run(two_bursts(64))
    assert stub.request_count == 128
    assert replies == [f"echo q{i}" for i in range(64)] * 2
    assert 0.5 <= took < 2.5  # two latencies, not 128 x 0.25 s


def test_unknown_routes_get_404_and_the_port_is_freed() -> None:
    with OpenAIStub() as stub:
        conn = http.client.HTTPConnection("127.0.0.1", stub.port, timeout=5)
        conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "x"}))
        response = conn.getresponse()
        assert response.status == 404
        assert "no route" in json.loads(response.read())["error"]["message"]
        conn.close()
    assert stub.request_count == 0  # only chat completions are counted
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", stub.port, timeout=5).connect()
