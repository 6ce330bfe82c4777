"""`OpenAIStub`: a loopback OpenAI-compatible chat-completions server for tests and benchmarks.

It lets a test or a benchmark drive the real network path (AutoGen's `OpenAIChatCompletionClient`,
the openai SDK, HTTP keep-alive, coachlab's retries) with no model and no network beyond
127.0.0.1. The server runs its own asyncio event loop in a background thread, so it serves any
number of concurrent keep-alive connections, each reply held back by a fixed latency without
blocking the others, and it works the same from synchronous and asynchronous callers.

What it answers comes from a plain function of the request's JSON; what goes wrong comes from
a `behaviour(request_index)` hook that may return a `Fault` for that request:

Example::

    with OpenAIStub(reply=lambda request: "Hello there.", latency_s=0.1) as stub:
        client = OpenAIChatCompletionClient(
            model="stub", base_url=stub.url, api_key="not-needed", model_info=STUB_MODEL_INFO
        )
        ...
    assert stub.request_count == 1 and stub.requests[-1].body["model"] == "stub"

The default reply is a short fixed line, or, when the request asks for JSON
(`response_format`), the smallest object that fits the schema sent with it, so a judge gets a
parseable verdict. `replies_by_model` answers each role by the model name its entry uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self, TypeAlias, cast

from coachlab.testing.embeddings_stub import EmbedFn, embeddings_response, hashed_embedding

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

ReplyFn = Callable[[dict[str, Any]], str]
"""Returns the assistant's reply text for one chat-completions request (its parsed JSON body)."""

DEFAULT_REPLY = "Thanks, noted."
"""What `default_reply` says when no JSON is asked for."""

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


@dataclass(frozen=True)
class HttpError:
    """Answer the request with an HTTP error status and an OpenAI-style error body.

    Args:
        status: The HTTP status (500, 503, 429...).
        message: The error message in the body.
        retry_after: Seconds sent as the `Retry-After` header, or None for no header.
    """

    status: int = 500
    message: str = "injected fault"
    retry_after: float | None = None


Fault: TypeAlias = HttpError
"""What can go wrong with one request. Kinds to come: hangs, dropped connections, malformed JSON."""

Behaviour = Callable[[int], Fault | None]
"""Given the 0-based index of a chat-completions request, the fault to inject, or None to answer."""


def server_error(message: str = "injected server error") -> HttpError:
    """A 500 Internal Server Error."""
    return HttpError(status=500, message=message)


def rate_limited(retry_after: float | None = 0.0, message: str = "injected rate limit") -> HttpError:
    """A 429 Too Many Requests, with `Retry-After: <retry_after>` unless it is None."""
    return HttpError(status=429, message=message, retry_after=retry_after)


def fault_script(*faults: Fault | None) -> Behaviour:
    """A behaviour that injects `faults[i]` into request `i` (None answers normally), then answers all."""
    script: tuple[Fault | None, ...] = faults

    def behaviour(index: int) -> Fault | None:
        return script[index] if index < len(script) else None

    return behaviour


@dataclass(frozen=True)
class StubRequest:
    """One request the stub received (kept for assertions)."""

    index: int
    """0-based order among chat-completions requests (-1 for other paths)."""
    method: str
    path: str
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: dict[str, Any] | None
    """The parsed JSON body, or None when there was none or it was not JSON."""
    fault: Fault | None = None
    """The fault injected into this request, if any."""


def _obj(value: Any) -> dict[str, Any] | None:
    """`value` as a JSON object, or None."""
    return cast(dict[str, Any], value) if isinstance(value, dict) else None


def _arr(value: Any) -> list[Any]:
    """`value` as a JSON array ([] when it is not one)."""
    return cast(list[Any], value) if isinstance(value, list) else []


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = (_obj(part) for part in _arr(content))
    return " ".join(part["text"] for part in parts if part is not None and isinstance(part.get("text"), str))


def request_text(request: Mapping[str, Any], *, role: str | None = None) -> str:
    """The text of a request's messages (only those of `role` when given), one per line."""
    messages = (_obj(m) for m in _arr(request.get("messages")))
    return "\n".join(
        _content_text(m.get("content")) for m in messages if m is not None and (role is None or m.get("role") == role)
    )


def response_schema(request: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks its answer to follow, if any.

    Reads OpenAI's `{"type": "json_schema", "json_schema": {"schema": ...}}` (what the openai SDK
    sends for a pydantic `response_format`, i.e. AutoGen's `json_output=<class>`) and llama.cpp
    server's `{"type": "json_object", "schema": ...}`. Plain `json_object` gives `{}`.
    """
    fmt = _obj(request.get("response_format"))
    if fmt is None:
        return None
    if fmt.get("type") == "json_schema":
        spec = _obj(fmt.get("json_schema")) or {}
        return _obj(spec.get("schema")) or {}
    if fmt.get("type") == "json_object":
        return _obj(fmt.get("schema")) or {}
    return None


def schema_example(schema: Mapping[str, Any], *, root: Mapping[str, Any] | None = None) -> Any:
    """The smallest value that fits a JSON schema (first enum value, null when allowed, "stub"...).

    Handles what pydantic emits: `$ref` into `$defs`, `anyOf`/`oneOf`, `enum`, `const`, objects
    (every property filled), arrays (empty unless `minItems`) and the scalar types.
    """
    root = root if root is not None else schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Mapping[str, Any] | None = root
        for part in ref[2:].split("/"):
            target = _obj(target.get(part)) if target is not None else None
        return schema_example(target or {}, root=root)
    if "const" in schema:
        return schema["const"]
    enum = _arr(schema.get("enum"))
    if enum:
        return enum[0]
    if "default" in schema:
        return schema["default"]
    branches = [b for b in map(_obj, _arr(schema.get("anyOf") or schema.get("oneOf"))) if b is not None]
    if branches:
        if any(b.get("type") == "null" for b in branches):
            return None
        return schema_example(branches[0], root=root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = _arr(kind)
        if "null" in kinds:
            return None
        kind = kinds[0] if kinds else "object"
    if kind == "object" or (kind is None and "properties" in schema):
        props = _obj(schema.get("properties")) or {}
        return {name: schema_example(_obj(sub) or {}, root=root) for name, sub in props.items()}
    if kind == "array":
        items = _obj(schema.get("items")) or {}
        return [schema_example(items, root=root) for _ in range(int(schema.get("minItems", 0)))]
    if kind == "string":
        return "stub"
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    return None


def default_reply(request: dict[str, Any]) -> str:
    """`DEFAULT_REPLY`, or, when the request asks for JSON, the smallest object fitting its schema."""
    schema = response_schema(request)
    if schema is None:
        return DEFAULT_REPLY
    return json.dumps(schema_example(schema) if schema else {})


def replies_by_model(replies: Mapping[str, str | ReplyFn], *, default: ReplyFn = default_reply) -> ReplyFn:
    """Answer by the request's `model`: give each role's model entry its own model name.

    Example::

        reply = replies_by_model(
            {"customer": "My parcel is late.", "agent": "Refunded.", "judge": lambda request: verdict_json}
        )
    """
    table = dict(replies)

    def reply(request: dict[str, Any]) -> str:
        answer = table.get(str(request.get("model")))
        if answer is None:
            return default(request)
        return answer if isinstance(answer, str) else answer(request)

    return reply


def _words(text: str) -> int:
    return len(text.split())


@dataclass
class _Log:
    keep: int
    count: int = 0
    errors: list[str] = field(default_factory=list[str])
    items: deque[StubRequest] = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.items = deque(maxlen=self.keep)


class OpenAIStub:
    """A loopback OpenAI-compatible server (`POST /v1/chat/completions`, non-streaming).

    Use it as a context manager; the server listens on 127.0.0.1 only, from `__enter__` to
    `__exit__`. Point a client at `stub.url` with any API key. It speaks HTTP/1.1 with keep-alive
    and `Content-Length` bodies (what the openai SDK sends); `GET /v1/models` lists one model and
    `POST /v1/embeddings` answers with `embed`'s vectors (see `coachlab.testing.embeddings_stub`).

    Args:
        reply: Builds the reply text from the request's JSON body (called in the server's thread).
        latency_s: Seconds every response is held back (a fixed model latency; 0 for none).
        behaviour: Per-request fault injection: `behaviour(index)` returns a `Fault` or None.
        port: The port to listen on; 0 picks a free one (read it back from `port` / `url`).
        keep: How many of the last requests to keep in `requests`.
        embed: The vector of one text, for `/v1/embeddings` (hashed word counts by default).
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
    ) -> None:
        if latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        self.reply = reply
        self.latency_s = latency_s
        self.behaviour = behaviour
        self.embed = embed
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
    def errors(self) -> list[str]:
        """Why the reply function failed, for each request it failed on (answered with a 500)."""
        with self._log.lock:
            return list(self._log.errors)

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
        """Stop serving and close every connection (what `__exit__` does)."""
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
                status, extra, payload = await self._respond(method, target.split("?", 1)[0], headers, body)
                writer.write(_http_response(status, extra, payload, keep_alive=keep_alive))
                await writer.drain()
                if not keep_alive:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _respond(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Sequence[tuple[str, str]], dict[str, Any]]:
        parsed: dict[str, Any] | None = None
        if body:
            try:
                data: Any = json.loads(body)
            except ValueError:
                data = None
            parsed = _obj(data)
        path = path.rstrip("/")
        if not path.endswith("/chat/completions"):
            self._record(StubRequest(index=-1, method=method, path=path, headers=headers, body=parsed))
            if method == "POST" and path.endswith("/embeddings") and parsed is not None:
                status, payload = embeddings_response(parsed, self.embed)
                return status, (), payload
            if method == "GET" and path.endswith("/models"):
                return (
                    200,
                    (),
                    {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "coachlab"}]},
                )
            return 404, (), _error_body(404, f"no route {method} {path}")
        if method != "POST":
            return 405, (), _error_body(405, "use POST")
        with self._log.lock:
            index = self._log.count
            self._log.count += 1
        fault = self.behaviour(index) if self.behaviour is not None else None
        self._record(StubRequest(index=index, method=method, path=path, headers=headers, body=parsed, fault=fault))
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if fault is not None:
            extra: list[tuple[str, str]] = []
            if fault.retry_after is not None:
                extra.append(("Retry-After", f"{fault.retry_after:g}"))
            return fault.status, extra, _error_body(fault.status, fault.message)
        if parsed is None:
            return 400, (), _error_body(400, "the body must be a JSON object")
        try:
            text = self.reply(parsed)
        except Exception as exc:
            logger.exception("openai stub: the reply function failed")
            with self._log.lock:
                self._log.errors.append(f"{type(exc).__name__}: {exc}")
            return 500, (), _error_body(500, f"reply function failed: {type(exc).__name__}: {exc}")
        return 200, (), _completion(index, parsed, text)

    def _record(self, request: StubRequest) -> None:
        with self._log.lock:
            self._log.items.append(request)


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "code": status}}


def _completion(index: int, request: dict[str, Any], text: str) -> dict[str, Any]:
    prompt = _words(request_text(request))
    completion = _words(text)
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
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _http_response(
    status: int, headers: Sequence[tuple[str, str]], payload: dict[str, Any], *, keep_alive: bool
) -> bytes:
    body = json.dumps(payload).encode()
    lines = [
        f"HTTP/1.1 {status} {_reason(status)}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
