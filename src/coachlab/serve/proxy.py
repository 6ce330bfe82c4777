"""The coaching proxy: an OpenAI-compatible HTTP server that adds the coaching block and forwards.

An application points its `base_url` at the proxy instead of its model server. On
`POST /v1/chat/completions` the proxy retrieves the approved strategies that fit the request's
messages (`coachlab.library.coaching`), appends the coaching block to the system message, forwards
the request to the upstream server (vLLM, Ollama, llama.cpp's server, OpenAI...) and returns the
upstream's answer as it came: status, headers and body bytes, streamed when the request streams.
Every other `/v1/...` request passes through untouched. `GET /healthz` says what is served.

Each chat request gets one JSON log line (logger `coachlab.serve.requests`): the request id, the
library version, the strategy ids and scores shown, the upstream's status and the times; and the
response carries `x-coachlab-strategies` (the ids, comma-separated), `x-coachlab-library-version`
and `x-coachlab-request-id`. Headers, keys and message texts are never logged.

When the upstream cannot be reached, or does not answer within the timeout, the caller gets a
502 with an OpenAI-style error body that says why. When retrieval itself fails (an embeddings
endpoint down), the request is forwarded without coaching and the log line says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import httpx2 as httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from coachlab.errors import UsageError
from coachlab.library.coaching import LiveLibrary, add_coaching
from coachlab.redact import redact, register_secret
from coachlab.schema import Guidance

__all__ = ["REQUEST_LOGGER", "ProxyConfig", "create_app", "upstream_key"]

logger = logging.getLogger(__name__)
request_log = logging.getLogger("coachlab.serve.requests")

REQUEST_LOGGER = "coachlab.serve.requests"
"""The logger of the one-JSON-line-per-request log."""

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
_HTTPX_DEFAULTS = ("accept", "accept-encoding", "user-agent")
_POOLS = 8
"""Upstream connection pools, taken in turn: httpcore's pool does work per request that grows with its connections."""
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class ProxyConfig(BaseModel):
    """How `coachlab serve` reaches the upstream model server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstream: str = Field(description="The upstream's base URL, as an OpenAI client takes it (http://host:8000/v1).")
    upstream_key_env: str | None = Field(
        default=None,
        description="Send the key in this environment variable to the upstream (else the caller's Authorization).",
    )
    timeout_s: float = Field(default=300.0, gt=0, description="Longest wait for the upstream's next bytes.")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Longest wait to connect to the upstream.")
    max_body_bytes: int = Field(default=32 * 2**20, gt=0, description="Largest chat request accepted.")
    reload_interval_s: float = Field(default=2.0, gt=0, description="How often to look for a new library version.")

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{value!r} is not an http(s) URL such as http://localhost:8000/v1")
        return value.rstrip("/")


def upstream_key(config: ProxyConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The key of `upstream_key_env`, registered as a secret (never logged), or None when unset.

    Raises:
        UsageError: The variable is named but not set.
    """
    if config.upstream_key_env is None:
        return None
    env = os.environ if environ is None else environ
    value = env.get(config.upstream_key_env)
    if not value:
        raise UsageError(f"--upstream-key-env {config.upstream_key_env}: that environment variable is not set.")
    register_secret(value)
    return value


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


@dataclass
class _Outcome:
    """What one chat request did, for its log line."""

    request_id: str
    library_version: int
    shown: Sequence[Guidance]
    retrieval_ms: float
    started: float
    stream: bool
    model: str | None
    coaching: str
    status: int | None = None
    error: str | None = None

    def log(self) -> None:
        if not request_log.isEnabledFor(logging.INFO):
            return
        line = {
            "event": "chat",
            "request_id": self.request_id,
            "library_version": self.library_version,
            "strategies": [g.id for g in self.shown],
            "scores": [round(g.score, 4) for g in self.shown],
            "coaching": self.coaching,
            "model": self.model,
            "stream": self.stream,
            "status": self.status,
            "retrieval_ms": round(self.retrieval_ms, 2),
            "total_ms": round((time.perf_counter() - self.started) * 1000, 2),
        }
        if self.error is not None:
            line["error"] = self.error
        request_log.info(json.dumps(line))


class _Proxy:
    def __init__(self, live: LiveLibrary, config: ProxyConfig, key: str | None) -> None:
        self.live = live
        self.config = config
        self.key = key
        self.clients: list[httpx.AsyncClient] = []
        self.turn = 0

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncGenerator[None]:
        timeout = httpx.Timeout(
            self.config.timeout_s, connect=self.config.connect_timeout_s, pool=self.config.timeout_s
        )
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        watcher = asyncio.create_task(self.live.watch(self.config.reload_interval_s))
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(_POOLS):
                client = httpx.AsyncClient(timeout=timeout, limits=limits)
                self.clients.append(await stack.enter_async_context(client))
            try:
                yield
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                self.clients = []

    def _headers(self, request: Request, *, keep_length: bool) -> list[tuple[str, str]]:
        out = [
            (k, v)
            for k, v in request.headers.items()
            if k not in _HOP_BY_HOP and (keep_length or k != "content-length")
        ]
        if self.key is not None:
            out = [(k, v) for k, v in out if k != "authorization"]
            out.append(("authorization", f"Bearer {self.key}"))
        return out

    async def _send(self, request: Request, path: str, content: bytes | AsyncIterator[bytes]) -> httpx.Response | str:
        """Open the upstream's response (streamed), or say why it could not be had."""
        if not self.clients:  # pragma: no cover - requests arrive only inside the lifespan
            return "coachlab serve is starting or stopping"
        self.turn = (self.turn + 1) % len(self.clients)
        client = self.clients[self.turn]
        url = self.config.upstream + path
        if request.url.query:
            url += "?" + request.url.query
        headers = self._headers(request, keep_length=not isinstance(content, bytes))
        upstream = client.build_request(request.method, url, headers=headers, content=content)
        for name in _HTTPX_DEFAULTS:  # send what the caller sent, not httpx's own defaults
            if name not in request.headers and name in upstream.headers:
                del upstream.headers[name]
        try:
            return await client.send(upstream, stream=True)
        except httpx.TimeoutException as exc:
            why = f"no answer within {self.config.timeout_s:g} s ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        message = redact(f"coachlab serve: the upstream {self.config.upstream} failed: {why}")
        logger.warning("%s", message)
        return message

    async def healthz(self, _: Request) -> JSONResponse:
        """What is served: library version, strategies, retrieval, upstream."""
        return JSONResponse({"status": "ok", **self.live.current.describe(), "upstream": self.config.upstream})

    async def chat(self, request: Request) -> Response:
        """Coach, forward, and return the upstream's answer as it came."""
        started = time.perf_counter()
        body = await _read(request, self.config.max_body_bytes)
        if body is None:
            return _error(413, f"request body over {self.config.max_body_bytes} bytes", "invalid_request_error")
        library = self.live.current
        payload = _json_object(body)
        messages = _messages(payload)
        outcome = _Outcome(
            request_id=uuid.uuid4().hex[:16],
            library_version=library.version,
            shown=(),
            retrieval_ms=0.0,
            started=started,
            stream=payload is not None and payload.get("stream") is True,
            model=str(payload.get("model")) if payload is not None and "model" in payload else None,
            coaching="none",
        )
        if payload is not None and messages is not None:
            searched = time.perf_counter()
            try:
                shown = await library.aretrieve(messages)
            except Exception as exc:  # coaching is an addition: forward without it, and say so
                outcome.coaching, outcome.error = "error", redact(f"retrieval failed: {type(exc).__name__}: {exc}")
                logger.warning("%s", outcome.error)
            else:
                outcome.shown = shown
                if shown:
                    outcome.coaching = "coached"
                    placed = add_coaching(messages, shown, placement=library.retrieval.placement)
                    body = json.dumps({**payload, "messages": placed}).encode()
            outcome.retrieval_ms = (time.perf_counter() - searched) * 1000
        upstream = await self._send(request, "/chat/completions", body)
        extra = _coachlab_headers(outcome)
        if isinstance(upstream, str):
            outcome.status, outcome.error = 502, upstream
            outcome.log()
            return _with_headers(_error(502, upstream, "upstream_error"), extra)
        outcome.status = upstream.status_code
        if not outcome.stream:
            try:
                data = b"".join([chunk async for chunk in upstream.aiter_raw()])
            except httpx.HTTPError as exc:
                outcome.status, outcome.error = 502, f"the upstream failed mid-answer: {type(exc).__name__}"
                outcome.log()
                return _with_headers(_error(502, f"coachlab serve: {outcome.error}", "upstream_error"), extra)
            finally:
                await upstream.aclose()
            outcome.log()
            return _with_headers(Response(data, status_code=upstream.status_code), _relayed(upstream) + extra)
        response = StreamingResponse(_relay(upstream, outcome), status_code=upstream.status_code)
        return _with_headers(response, _relayed(upstream) + extra)

    async def passthrough(self, request: Request) -> Response:
        """Any other `/v1/...` request, forwarded and relayed untouched."""
        path = request.url.path.removeprefix("/v1")
        content = request.stream() if request.method not in ("GET", "HEAD") else b""
        upstream = await self._send(request, path, content)
        if isinstance(upstream, str):
            return _error(502, upstream, "upstream_error")
        response = StreamingResponse(
            _raw(upstream), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose)
        )
        return _with_headers(response, _relayed(upstream, keep_length=True))

    async def not_found(self, request: Request) -> JSONResponse:
        """Paths outside `/v1/` and `/healthz`."""
        return _error(404, f"coachlab serve: no route {request.url.path} (use /v1/... or /healthz)", "not_found_error")


def _relayed(upstream: httpx.Response, *, keep_length: bool = False) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers to pass on, as sent (repeated ones kept apart), less hop-by-hop ones."""
    return [
        (k.lower(), v)
        for k, v in upstream.headers.raw
        if k.lower().decode("latin-1") not in _HOP_BY_HOP and (keep_length or k.lower() != b"content-length")
    ]


def _coachlab_headers(outcome: _Outcome) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-coachlab-request-id", outcome.request_id.encode()),
        (b"x-coachlab-library-version", str(outcome.library_version).encode()),
        (b"x-coachlab-strategies", ",".join(g.id for g in outcome.shown).encode()),
    ]


def _with_headers(response: Response, headers: Sequence[tuple[bytes, bytes]]) -> Response:
    """`response` with `headers` added (it holds only its own content-length so far, or an error's)."""
    given = {k for k, _ in headers}
    response.raw_headers = [*((k, v) for k, v in response.raw_headers if k not in given), *headers]
    return response


async def _read(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value: object = json.loads(body)
    except ValueError:
        return None
    return cast(dict[str, Any], value) if isinstance(value, dict) else None


def _messages(payload: Mapping[str, Any] | None) -> list[Mapping[str, Any]] | None:
    """The request's messages when they are a list of objects (else the upstream gets the body as is)."""
    if payload is None:
        return None
    value: object = payload.get("messages")
    if not isinstance(value, list):
        return None
    items = cast(list[object], value)
    if not all(isinstance(m, Mapping) for m in items):
        return None
    return cast(list[Mapping[str, Any]], items)


async def _raw(upstream: httpx.Response) -> AsyncIterator[bytes]:
    async for chunk in upstream.aiter_raw():
        yield chunk


async def _relay(upstream: httpx.Response, outcome: _Outcome) -> AsyncIterator[bytes]:
    """The upstream's bytes as they arrive, then the log line.

    A failure mid-stream is logged and breaks the caller's connection (ending the stream cleanly
    would pass a cut answer off as whole).
    """
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        outcome.error = f"upstream failed mid-stream: {type(exc).__name__}"
        raise
    finally:
        await upstream.aclose()
        outcome.log()


def create_app(live: LiveLibrary, config: ProxyConfig, *, key: str | None = None) -> Starlette:
    """The ASGI app of `coachlab serve` (run it under uvicorn or any ASGI server).

    Args:
        live: The library served (reloaded by the app every `config.reload_interval_s`).
        config: The upstream and its timeouts.
        key: The upstream key (`upstream_key(config)`); None passes the caller's Authorization.
    """
    proxy = _Proxy(live, config, key)
    routes = [
        Route("/healthz", proxy.healthz, methods=["GET"]),
        Route("/v1/chat/completions", proxy.chat, methods=["POST"]),
        Route("/v1/{path:path}", proxy.passthrough, methods=_METHODS),
        Route("/{path:path}", proxy.not_found, methods=_METHODS),
    ]
    return Starlette(routes=routes, lifespan=proxy.lifespan)
