"""coachlab serve, end to end: the official openai client -> the coaching proxy -> the loopback stub."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
import uvicorn

from coachlab import CoachingLibrary, coaching_block
from coachlab.library import LibraryStore
from coachlab.library.coaching import LiveLibrary
from coachlab.schema import AuditStatus, Strategy
from coachlab.serve.proxy import REQUEST_LOGGER, ProxyConfig, create_app, upstream_key
from coachlab.testing.faults import Drop, Hang
from coachlab.testing.openai_stub import OpenAIStub, fault_script, rate_limited
from test_coaching import LATE, LOGIN, run_folder

SYSTEM = "You are the support agent of Acme."
LATE_CHAT: list[dict[str, Any]] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "My parcel is late and I want a refund of the delivery fee."},
]
CALLER_KEY = "sk-caller-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def proxy(live: LiveLibrary, config: ProxyConfig, key: str | None = None) -> Iterator[str]:
    """`coachlab serve`'s app under a real uvicorn server in a thread; yields its /v1 base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_app(live, config, key=key), log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the proxy did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


_CLIENTS: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Close every client a test made (an open connection pool leaks its socket into a later test)."""
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def client(base_url: str, key: str = CALLER_KEY) -> openai.OpenAI:
    made = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)
    _CLIENTS.append(made)
    return made


def test_chat_is_coached_and_the_answer_comes_back_byte_for_byte(tmp_path: Path) -> None:
    live = LiveLibrary(run_folder(tmp_path))
    with OpenAIStub(reply=lambda request: "Refunded €5, reference R-1.") as stub:
        with proxy(live, ProxyConfig(upstream=stub.url)) as url:
            raw = client(url).chat.completions.with_raw_response.create(
                model="small",
                messages=LATE_CHAT,
                temperature=0.2,  # type: ignore[arg-type]
            )
            body = raw.http_response.content
            answer = raw.parse()
        sent = stub.requests[-1]
        assert body == stub.response_bodies[-1]
    assert answer.choices[0].message.content == "Refunded €5, reference R-1."
    assert raw.headers["x-coachlab-strategies"] == "late-delivery"
    assert raw.headers["x-coachlab-library-version"] == "1"
    assert sent.body is not None and sent.body["model"] == "small" and sent.body["temperature"] == 0.2
    assert sent.body["messages"] == [
        {"role": "system", "content": SYSTEM + "\n" + coaching_block([LATE.as_guidance()])},
        LATE_CHAT[1],
    ]
    assert sent.headers["authorization"] == f"Bearer {CALLER_KEY}"


def test_serve_places_the_strategies_where_the_run_placed_them(tmp_path: Path) -> None:
    """`retrieval.placement: before_last` in the run: the block goes right before the caller's last line."""
    run = run_folder(tmp_path, retrieval="retrieval: {kind: lexical, k: 2, placement: before_last}\n")
    live = LiveLibrary(run)
    chat = [*LATE_CHAT, {"role": "assistant", "content": "Sorry! Which order?"}, {"role": "user", "content": "A-1."}]
    with OpenAIStub(reply=lambda request: "On it.") as stub:
        with proxy(live, ProxyConfig(upstream=stub.url)) as url:
            client(url).chat.completions.create(model="small", messages=chat)  # type: ignore[arg-type]
        sent = stub.requests[-1]
    assert sent.body is not None
    block = {"role": "system", "content": coaching_block([LATE.as_guidance()])}
    assert sent.body["messages"] == [*chat[:3], block, chat[3]]


def test_streaming_passes_every_byte_through(tmp_path: Path) -> None:
    live = LiveLibrary(run_folder(tmp_path))
    with OpenAIStub(reply=lambda request: "Your refund is on its way today.") as stub:
        with proxy(live, ProxyConfig(upstream=stub.url)) as url:
            stream = client(url).chat.completions.create(model="small", messages=LATE_CHAT, stream=True)  # type: ignore[arg-type]
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
            with httpx.stream(
                "POST",
                f"{url}/chat/completions",
                json={"model": "small", "messages": LATE_CHAT, "stream": True},
                headers={"authorization": f"Bearer {CALLER_KEY}"},
            ) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["x-coachlab-strategies"] == "late-delivery"
                relayed = b"".join(response.iter_raw())
        assert relayed == stub.response_bodies[-1]
        assert all(COACHED in str(r.body) for r in stub.requests)
    assert text == "Your refund is on its way today."


COACHED = LATE.guidance


def test_other_paths_pass_through_and_health_says_what_is_served(tmp_path: Path) -> None:
    live = LiveLibrary(run_folder(tmp_path))
    with OpenAIStub() as stub, proxy(live, ProxyConfig(upstream=stub.url)) as url:
        models = client(url).models.list()
        vectors = client(url).embeddings.create(model="e", input=["late parcel", "refund"])
        health = httpx.get(url.removesuffix("/v1") + "/healthz").json()
        missing = httpx.get(url.removesuffix("/v1") + "/admin")
        paths = [r.path for r in stub.requests]
    assert [m.id for m in models.data] == ["stub"]
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) > 0
    assert paths == ["/v1/models", "/v1/embeddings"]
    assert health["status"] == "ok" and health["library_version"] == 1 and health["strategies"] == 2
    assert health["retrieval"] == {"kind": "lexical", "k": 2, "floor": 0.1}
    assert missing.status_code == 404 and "no route /admin" in missing.json()["error"]["message"]


def test_each_request_logs_one_json_line_with_the_strategies_and_never_a_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_UPSTREAM_TOKEN_VALUE", "tok-9f3a7c1e5b2d4068")
    config = ProxyConfig(upstream="http://127.0.0.1:1/v1", upstream_key_env="ACME_UPSTREAM_TOKEN_VALUE")
    live = LiveLibrary(run_folder(tmp_path))
    caplog.set_level(logging.DEBUG)
    with OpenAIStub() as stub:
        config = config.model_copy(update={"upstream": stub.url})
        with proxy(live, config, key=upstream_key(config)) as url:
            client(url).chat.completions.create(model="small", messages=LATE_CHAT)  # type: ignore[arg-type]
            client(url).chat.completions.create(model="small", messages=[{"role": "user", "content": "Hi there"}])
        authorizations = [r.headers.get("authorization") for r in stub.requests]
    assert authorizations == ["Bearer tok-9f3a7c1e5b2d4068"] * 2  # the caller's key never goes upstream
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == REQUEST_LOGGER]
    assert [(line["strategies"], line["coaching"], line["status"]) for line in lines] == [
        (["late-delivery"], "coached", 200),
        ([], "none", 200),
    ]
    assert lines[0]["library_version"] == 1 and lines[0]["model"] == "small" and lines[0]["scores"][0] > 0
    everything = caplog.text + json.dumps(lines)
    assert "9f3a7c1e" not in everything and CALLER_KEY[-10:] not in everything
    assert "parcel" not in json.dumps(lines)  # what customers say stays out of the request log


def test_a_dead_upstream_gives_a_502_that_says_why_without_hanging(tmp_path: Path) -> None:
    live = LiveLibrary(run_folder(tmp_path))
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with proxy(live, ProxyConfig(upstream=dead, timeout_s=1)) as url:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as refused:
            client(url).chat.completions.create(model="small", messages=LATE_CHAT)  # type: ignore[arg-type]
        assert time.monotonic() - started < 5
    assert refused.value.status_code == 502
    assert "upstream" in refused.value.message and "ConnectError" in refused.value.message
    hang = fault_script(Hang(seconds=30))
    with OpenAIStub(behaviour=hang) as stub, proxy(live, ProxyConfig(upstream=stub.url, timeout_s=1)) as url:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as hung:
            client(url).chat.completions.create(model="small", messages=LATE_CHAT)  # type: ignore[arg-type]
        waited = time.monotonic() - started
    assert hung.value.status_code == 502 and "no answer within 1 s" in hung.value.message
    assert 0.9 < waited < 5


def test_an_upstream_that_breaks_mid_stream_breaks_the_callers_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = LiveLibrary(run_folder(tmp_path))
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    words = " ".join(["word"] * 200)
    stub = OpenAIStub(reply=lambda r: words, behaviour=fault_script(Drop("mid_body")))
    with stub, proxy(live, ProxyConfig(upstream=stub.url)) as url:
        stream = client(url).chat.completions.create(model="small", messages=LATE_CHAT, stream=True)  # type: ignore[arg-type]
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            for _ in stream:
                pass
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == REQUEST_LOGGER]
    assert [line.get("error") for line in lines] == ["upstream failed mid-stream: RemoteProtocolError"]


def test_upstream_errors_and_odd_requests_are_relayed_not_rewritten(tmp_path: Path) -> None:
    live = LiveLibrary(run_folder(tmp_path))
    with OpenAIStub() as stub, proxy(live, ProxyConfig(upstream=stub.url, max_body_bytes=10_000)) as url:
        broken = httpx.post(
            f"{url}/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
        huge = httpx.post(
            f"{url}/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x" * 20_000}]}
        )
        received = [r.body for r in stub.requests]
    assert broken.status_code == 400 and "JSON object" in broken.json()["error"]["message"]  # the stub's own answer
    assert broken.headers["x-coachlab-strategies"] == ""
    assert huge.status_code == 413 and received == [None]  # the oversized request never went upstream


def test_an_upstream_error_comes_back_as_the_upstream_sent_it(tmp_path: Path) -> None:
    live = LiveLibrary(run_folder(tmp_path))
    with OpenAIStub(behaviour=fault_script(rate_limited(retry_after=7))) as stub:
        with proxy(live, ProxyConfig(upstream=stub.url)) as url:
            limited = httpx.post(f"{url}/chat/completions", json={"model": "m", "messages": LATE_CHAT})
        sent = stub.response_bodies[-1]
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert limited.content == sent and limited.headers["x-coachlab-strategies"] == "late-delivery"


def test_a_failing_retriever_forwards_the_request_uncoached(tmp_path: Path) -> None:
    class Broken:
        def search(self, situation: str, *, k: int, floor: float) -> list[tuple[Strategy, float]]:
            raise ConnectionError("embeddings endpoint down")

    live = LiveLibrary(run_folder(tmp_path))
    live.current = CoachingLibrary([LATE], retriever=Broken(), version=1)
    with OpenAIStub(reply=lambda r: "Hello.") as stub, proxy(live, ProxyConfig(upstream=stub.url)) as url:
        raw = client(url).chat.completions.with_raw_response.create(model="small", messages=LATE_CHAT)  # type: ignore[arg-type]
        sent = stub.requests[-1].body
    assert raw.parse().choices[0].message.content == "Hello."
    assert raw.headers["x-coachlab-strategies"] == "" and sent is not None and sent["messages"] == LATE_CHAT


def test_a_newly_approved_version_is_served_without_a_restart(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    live = LiveLibrary(run)
    login = [{"role": "user", "content": "I cannot log in and the password reset does not work."}]
    with OpenAIStub() as stub, proxy(live, ProxyConfig(upstream=stub.url, reload_interval_s=0.05)) as url:
        chat = client(url).chat.completions
        before = chat.with_raw_response.create(model="m", messages=login).headers["x-coachlab-strategies"]  # type: ignore[arg-type]
        LibraryStore(run / "library").set_status(LOGIN.id, AuditStatus.APPROVED, by="ana", why="checked")
        deadline, after = time.monotonic() + 5, ""
        while after != "password" and time.monotonic() < deadline:
            time.sleep(0.05)
            raw = chat.with_raw_response.create(model="m", messages=login)  # type: ignore[arg-type]
            after = raw.headers["x-coachlab-strategies"]
    assert (before, after, raw.headers["x-coachlab-library-version"]) == ("", "password", "2")


def coachlab(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from coachlab.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def test_the_serve_command_end_to_end(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    port, log = free_port(), tmp_path / "requests.jsonl"
    key = "tok-71c2e9a04b3f5d86"
    with OpenAIStub(reply=lambda r: "Sorted.") as stub:
        process = coachlab(
            "serve",
            str(run),
            "--upstream",
            stub.url,
            "--port",
            str(port),
            "--log-file",
            str(log),
            "--upstream-key-env",
            "ACME_UPSTREAM_KEY",
            env={"ACME_UPSTREAM_KEY": key},
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "coachlab serve did not start"
                try:
                    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            answer = client(f"http://127.0.0.1:{port}/v1").chat.completions.create(model="m", messages=LATE_CHAT)  # type: ignore[arg-type]
        finally:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=20)
        sent = stub.requests[-1]
    assert health["library_version"] == 1 and answer.choices[0].message.content == "Sorted."
    assert sent.headers["authorization"] == f"Bearer {key}" and sent.body is not None
    assert LATE.guidance in sent.body["messages"][0]["content"]
    assert "library v1 (2 approved strategies, retrieval lexical, k 2, floor 0.10)" in stderr
    [line] = [json.loads(text) for text in log.read_text().splitlines()]
    assert line["strategies"] == ["late-delivery"] and line["status"] == 200
    assert key[:8] not in stderr + log.read_text() and CALLER_KEY[:12] not in stderr + log.read_text()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--upstream", "ftp://models.example/v1"], {}, "not an http(s) URL"),
        (["--upstream", "http://127.0.0.1:9/v1", "--upstream-key-env", "NOT_SET_ANYWHERE"], {}, "NOT_SET_ANYWHERE"),
        (["--upstream", "http://127.0.0.1:9/v1", "--k", "0"], {}, "--k"),
        (["--upstream", "http://127.0.0.1:9/v1", "--kind", "psychic"], {}, "kind"),
    ],
)
def test_the_serve_command_refuses_bad_settings_in_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    process = coachlab("serve", str(run_folder(tmp_path)), *args, env=env)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and message in stderr and "Traceback" not in stderr
