"""`OpenAIStub`: a loopback OpenAI-compatible chat-completions server for tests and benchmarks.

It lets a test or a benchmark drive the real network path (AutoGen's `OpenAIChatCompletionClient`,
the openai SDK, HTTP keep-alive, coachlab's retries) with no model and no network beyond
127.0.0.1. The server runs its own asyncio event loop in a background thread, so it serves any
number of concurrent keep-alive connections, each reply held back by a fixed latency without
blocking the others, and it works the same from synchronous and asynchronous callers.

What it answers comes from a plain function of the request's JSON (`coachlab.testing.stub_replies`);
what goes wrong comes from a `behaviour(request)` hook that may return a fault for that request
(`coachlab.testing.faults`: HTTP errors, 429 with Retry-After, hangs, dropped connections, broken
JSON), usually a `FaultPlan` of rules by role, pattern, probability and count.

Example::

    with OpenAIStub(reply=lambda request: "Hello there.", latency_s=0.1) as stub:
        client = OpenAIChatCompletionClient(
            model="stub", base_url=stub.url, api_key="not-needed", model_info=STUB_MODEL_INFO
        )
        ...
    assert stub.request_count == 1 and stub.requests[-1].body["model"] == "stub"

Requests with `"stream": true` are answered as a server-sent event stream, one chunk per word.

With `prompt_cache="openai"` or `"llama.cpp"` the stub also reports a prompt cache the way those
servers do (`usage.prompt_tokens_details.cached_tokens`, or `timings.prompt_n` / `cache_n`): the
words a prompt shares from its start with the previous prompt count as cached (one slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self

from coachlab.testing.embeddings_stub import EmbedFn, embeddings_response, hashed_embedding
from coachlab.testing.faults import (
    BadJson,
    Behaviour,
    Drop,
    Fault,
    Hang,
    HttpError,
    StubRequest,
    break_json,
    fault_kind,
    fault_script,
    rate_limited,
    server_error,
)
from coachlab.testing.stub_replies import (
    DEFAULT_REPLY,
    ReplyFn,
    default_reply,
    json_object,
    replies_by_model,
    request_text,
    response_schema,
    schema_example,
)

__all__ = [
    "DEFAULT_REPLY",
    "STUB_MODEL_INFO",
    "Behaviour",
    "Fault",
    "HttpError",
    "OpenAIStub",
    "ReplyFn",
    "StubRequest",
    "default_reply",
    "fault_script",
    "rate_limited",
    "replies_by_model",
    "request_text",
    "response_schema",
    "schema_example",
    "server_error",
]

logger = logging.getLogger(__name__)

STUB_MODEL_INFO: dict[str, Any] = {
    "vision": False,
    "function_calling": False,
    "json_output": True,
    "structured_output": True,
    "family": "unknown",
    "multiple_system_messages": True,
}
"""The `model_info` to give an `OpenAIChatCompletionClient` pointed at the stub."""

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}


def _words(text: str) -> int:
    return len(text.split())


@dataclass
class _Log:
    keep: int
    count: int = 0
    errors: list[str] = field(default_factory=list[str])
    faults: Counter[str] = field(default_factory=Counter[str])
    items: deque[StubRequest] = field(init=False)
    bodies: deque[bytes] = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.items = deque(maxlen=self.keep)
        self.bodies = deque(maxlen=self.keep)


@dataclass(frozen=True)
class _Reply:
    """What to send back for one request."""

    status: int
    payload: dict[str, Any] | None = None
    """The JSON body (None for a stream)."""
    headers: Sequence[tuple[str, str]] = ()
    events: Sequence[dict[str, Any]] | None = None
    """The server-sent events of a streamed answer."""
    drop: Literal["before_response", "mid_body"] | None = None


class OpenAIStub:
    """A loopback OpenAI-compatible server (`POST /v1/chat/completions`, plain or streamed).

    Use it as a context manager; the server listens on 127.0.0.1 only, from `__enter__` to
    `__exit__`. Point a client at `stub.url` with any API key. It speaks HTTP/1.1 with keep-alive
    and `Content-Length` bodies (what the openai SDK sends); `GET /v1/models` lists one model and
    `POST /v1/embeddings` answers with `embed`'s vectors (see `coachlab.testing.embeddings_stub`).

    Args:
        reply: Builds the reply text from the request's JSON body (called in the server's thread).
        latency_s: Seconds every response is held back (a fixed model latency; 0 for none).
        behaviour: Per-request fault injection: `behaviour(request)` returns a `Fault` or None
            (a `FaultPlan`, `fault_script(...)`, or any function of a `StubRequest`).
        port: The port to listen on; 0 picks a free one (read it back from `port` / `url`).
        keep: How many of the last requests to keep in `requests`.
        embed: The vector of one text, for `/v1/embeddings` (hashed word counts by default).
        prompt_cache: Report a one-slot prompt cache as OpenAI (`"openai"`) or llama.cpp's server
            (`"llama.cpp"`) does, or nothing (`"none"`, like `llama_cpp.server`).
    """

    def __init__(
        self,
        *,
        reply: ReplyFn = default_reply,
        latency_s: float = 0.0,
        behaviour: Behaviour | None = None,
        port: int = 0,
        keep: int = 100,
        embed: EmbedFn = hashed_embedding,
        prompt_cache: Literal["none", "openai", "llama.cpp"] = "none",
    ) -> None:
        if latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        self.reply = reply
        self.latency_s = latency_s
        self.behaviour = behaviour
        self.embed = embed
        self.prompt_cache = prompt_cache
        self._last_prompt: list[str] = []
        self.port = port
        self._log = _Log(keep=keep)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL to give a client (`http://127.0.0.1:<port>/v1`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def request_count(self) -> int:
        """Chat-completions requests received so far (faulted ones included)."""
        return self._log.count

    @property
    def requests(self) -> list[StubRequest]:
        """The last `keep` requests received, oldest first."""
        with self._log.lock:
            return list(self._log.items)

    @property
    def response_bodies(self) -> list[bytes]:
        """The bodies of the last `keep` chat-completions responses sent whole, oldest first.

        Each is the body as a client reads it: the JSON, or a stream's `data:` events without the
        chunked framing. A proxy in front of the stub can be checked byte for byte against them.
        """
        with self._log.lock:
            return list(self._log.bodies)

    @property
    def errors(self) -> list[str]:
        """Why the reply function failed, for each request it failed on (answered with a 500)."""
        with self._log.lock:
            return list(self._log.errors)

    @property
    def faults_injected(self) -> Counter[str]:
        """Every fault injected so far (not only into the kept requests), by `fault_kind`."""
        with self._log.lock:
            return Counter(self._log.faults)

    @property
    def server_cpu_s(self) -> float | None:
        """CPU seconds the server's thread has used so far (None where the platform cannot tell).

        For benchmarks: CPU per request shows whether the stub or the client is the bottleneck.
        """
        thread = self._thread
        if thread is None or thread.ident is None or not hasattr(time, "pthread_getcpuclockid"):
            return None
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except OSError:
            return None

    def model_entry_config(self, model: str = "stub", **extra: Any) -> dict[str, Any]:
        """An `OpenAIChatCompletionClient` config for a `ModelEntry` (`provider: openai`) at this stub.

        The openai SDK's own retries are off (`max_retries: 0`) so that coachlab's retries are the
        ones tested.
        """
        return {
            "model": model,
            "base_url": self.url,
            "api_key": "not-needed",
            "max_retries": 0,
            "model_info": dict(STUB_MODEL_INFO),
            **extra,
        }

    def start(self) -> None:
        """Start serving (what `__enter__` does).

        Raises:
            OSError: The port cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("the stub is already running")
        self._ready.clear()
        self._failure = None
        self._thread = threading.Thread(target=self._serve, name=f"openai-stub:{self.port}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            self._thread = None
            raise self._failure

    def stop(self) -> None:
        """Stop serving and close every connection, hung ones included (what `__exit__` does)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # a bind failure is reported by start()
            self._failure = exc
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        connections: set[asyncio.Task[None]] = set()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                connections.add(task)
            try:
                await self._connection(reader, writer)
            except asyncio.CancelledError:
                pass  # stop() ends connections this way; a cancelled callback task would be logged
            finally:
                if task is not None:
                    connections.discard(task)

        server = await asyncio.start_server(accept, host="127.0.0.1", port=self.port, backlog=1024)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(connections):
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    return
                method, target, version = parts
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
                reply = await self._respond(method, target.split("?", 1)[0], headers, body)
                if reply.drop == "before_response":
                    return  # closed with no byte of a response
                data = _http_response(reply, keep_alive=keep_alive and reply.drop is None)
                if reply.drop is None and target.split("?", 1)[0].rstrip("/").endswith("/chat/completions"):
                    with self._log.lock:
                        self._log.bodies.append(_entity(reply))
                writer.write(data[: _cut(reply, data)] if reply.drop == "mid_body" else data)
                await writer.drain()
                if not keep_alive or reply.drop is not None:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _respond(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Reply:
        parsed: dict[str, Any] | None = None
        if body:
            try:
                data: Any = json.loads(body)
            except ValueError:
                data = None
            parsed = json_object(data)
        path = path.rstrip("/")
        if not path.endswith("/chat/completions"):
            self._record(
                StubRequest(index=-1, method=method, path=path, headers=headers, body=parsed, at=time.monotonic())
            )
            if method == "POST" and path.endswith("/embeddings") and parsed is not None:
                status, payload = embeddings_response(parsed, self.embed)
                return _Reply(status, payload)
            if method == "GET" and path.endswith("/models"):
                return _Reply(
                    200, {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "coachlab"}]}
                )
            return _Reply(404, _error_body(404, f"no route {method} {path}"))
        if method != "POST":
            return _Reply(405, _error_body(405, "use POST"))
        with self._log.lock:
            index = self._log.count
            self._log.count += 1
        request = StubRequest(index=index, method=method, path=path, headers=headers, body=parsed, at=time.monotonic())
        fault = self._fault(request)
        self._record(dataclasses.replace(request, fault=fault))
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if isinstance(fault, HttpError):
            extra = [("Retry-After", f"{fault.retry_after:g}")] if fault.retry_after is not None else []
            return _Reply(fault.status, _error_body(fault.status, fault.message), extra)
        if isinstance(fault, Hang):
            await asyncio.sleep(fault.seconds)
        if parsed is None:
            return _Reply(400, _error_body(400, "the body must be a JSON object"))
        try:
            text = self.reply(parsed)
        except Exception as exc:
            logger.exception("openai stub: the reply function failed")
            with self._log.lock:
                self._log.errors.append(f"{type(exc).__name__}: {exc}")
            return _Reply(500, _error_body(500, f"reply function failed: {type(exc).__name__}: {exc}"))
        if isinstance(fault, BadJson) and response_schema(parsed) is not None:
            text = break_json(text, fault.kind)
        drop = fault.where if isinstance(fault, Drop) else None
        if parsed.get("stream") is True:
            return _Reply(200, events=_stream_events(index, parsed, text), drop=drop)
        return _Reply(200, self._cache_report(_completion(index, parsed, text), parsed), drop=drop)

    def _cache_report(self, body: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        """`body` with the prompt-cache report `prompt_cache` asks for (prompt words shared with the last prompt)."""
        if self.prompt_cache == "none":
            return body
        words = request_text(request).split()
        cached = 0
        for mine, last in zip(words, self._last_prompt, strict=False):
            if mine != last:
                break
            cached += 1
        self._last_prompt = words
        usage: dict[str, Any] = body["usage"]
        if self.prompt_cache == "openai":
            usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
        else:
            body["timings"] = {"prompt_n": usage["prompt_tokens"] - cached, "cache_n": cached}
        return body

    def _fault(self, request: StubRequest) -> Fault | None:
        fault = self.behaviour(request) if self.behaviour is not None else None
        if fault is not None:
            with self._log.lock:
                self._log.faults[fault_kind(fault)] += 1
        return fault

    def _record(self, request: StubRequest) -> None:
        with self._log.lock:
            self._log.items.append(request)


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "code": status}}


def _usage(request: dict[str, Any], text: str) -> dict[str, int]:
    prompt = _words(request_text(request))
    completion = _words(text)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(index: int, request: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-stub-{index}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(request.get("model", "stub")),
        "system_fingerprint": "coachlab-openai-stub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(request, text),
    }


def _stream_events(index: int, request: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """The chunks of a streamed answer: the role, one word each, the finish reason, the usage if asked."""
    base: dict[str, Any] = {
        "id": f"chatcmpl-stub-{index}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": str(request.get("model", "stub")),
        "system_fingerprint": "coachlab-openai-stub",
    }
    words = text.split(" ")
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": word if i == 0 else " " + word} for i, word in enumerate(words)]
    events: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
    ]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    options = json_object(request.get("stream_options")) or {}
    if options.get("include_usage") is True:
        events.append({**base, "choices": [], "usage": _usage(request, text)})
    return events


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _entity(reply: _Reply) -> bytes:
    """The body a client reads: the JSON, or the stream's events (before chunked framing)."""
    if reply.events is not None:
        return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in reply.events) + b"data: [DONE]\n\n"
    return json.dumps(reply.payload).encode()


def _http_response(reply: _Reply, *, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {reply.status} {_reason(reply.status)}"]
    if reply.events is not None:
        body = b"".join(_chunk(f"data: {json.dumps(e)}\n\n".encode()) for e in reply.events)
        body += _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        head += ["Content-Type: text/event-stream", "Transfer-Encoding: chunked"]
    else:
        body = json.dumps(reply.payload).encode()
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"Connection: {'keep-alive' if keep_alive else 'close'}", *(f"{n}: {v}" for n, v in reply.headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _cut(reply: _Reply, data: bytes) -> int:
    """Where a mid-body drop cuts the response: half of a JSON body, or after the first third of a stream."""
    body_start = data.index(b"\r\n\r\n") + 4
    if reply.events is None:
        return body_start + (len(data) - body_start) // 2
    return body_start + (len(data) - body_start) // 3
