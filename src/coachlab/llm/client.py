"""`Backend` (one model, shared by a run) and `RoleClient` (one role in one episode).

Every model call of every agent goes through a `RoleClient`. It adds what AutoGen's clients
leave to the caller: a per-backend concurrency limit, retries with backoff on transient errors
(honouring `Retry-After`), a per-call timeout, a per-trial seed, the role-aware response cache,
the judge's structured-output mode, and per role: calls, tokens sent and generated, prompt tokens
processed (`coachlab.llm.metering`) and seconds in the model.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel, ValidationError
from typing_extensions import override

from coachlab.errors import CoachlabError
from coachlab.llm._base import EngineContexts, WholeReplyClient
from coachlab.llm.cache import CacheKey, ResponseCache
from coachlab.llm.components import IN_PROCESS_PROVIDERS, ModelEntry, RetryPolicy, build_chat_client
from coachlab.llm.identity import ModelIdentity, resolve_identity
from coachlab.llm.metering import MeteredResult, metering
from coachlab.llm.replay import ReplayMiss, ReplayOnlyClient
from coachlab.redact import redact
from coachlab.retry import backoff, is_transient
from coachlab.schema import RoleUsage

__all__ = ["Backend", "BackendError", "RoleClient", "close_backends", "is_transient"]

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class BackendError(Exception):
    """A model call failed for good (after retries, or a non-transient error).

    Its message is redacted (a server that rejects a key may echo it); `cause` is the original
    exception, unredacted: read its status or type, never print it.
    """

    def __init__(self, backend: str, cause: BaseException, attempts: int) -> None:
        super().__init__(f"{backend}: {type(cause).__name__}: {redact(str(cause))} (after {attempts} attempt(s))")
        self.backend = backend
        self.cause = cause
        self.attempts = attempts


@dataclass
class Backend:
    """One model entry of a run: the built client and its shared limits.

    Build it once per run (`Backend.from_entry`) and share it across episodes; each episode wraps
    it in `RoleClient`s.
    """

    name: str
    client: ChatCompletionClient
    identity: str
    """A short label for people (`Class:model@endpoint`); cache keys use `resolved`."""
    temperature: float | None = None
    concurrency: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    structured_output: Literal["native", "json_object_schema", "prompt"] = "native"
    send_seed: bool = True
    cost_per_1k_prompt: float = 0.0
    cost_per_1k_completion: float = 0.0
    resolved: ModelIdentity | None = None
    """What the backend answers with: the cache keys on it and the resolved run config records it."""
    replay: ResponseCache | None = None
    """A recorded run's cache: with it, every answer comes from there and no model is called (`--replay`)."""
    in_process: bool = False
    """The entry's model runs in this process (`IN_PROCESS_PROVIDERS`): its calls take turns on this machine's
    CPU, and its prompt cache is the KV cache of each engine context."""
    _semaphore: asyncio.Semaphore | None = field(default=None, repr=False)
    _key: str | None = field(default=None, repr=False)

    @classmethod
    def from_entry(cls, name: str, entry: ModelEntry, *, where: str) -> Backend:
        """Build the client of a YAML model entry (see `build_chat_client`)."""
        client = build_chat_client(entry, where=where)
        identity = resolve_identity(entry, name=name, where=where, model_info=dict(client.model_info))
        return cls._with(name, client, entry, identity)

    @classmethod
    def from_client(cls, name: str, client: ChatCompletionClient, *, entry: ModelEntry | None = None) -> Backend:
        """Wrap an already built client (tests, notebooks, dry runs) with the entry's settings."""
        entry = entry or ModelEntry(provider=type(client).__module__ + "." + type(client).__name__)
        return cls._with(name, client, entry, resolve_identity(entry, name=name, ready_client=client))

    @classmethod
    def replaying(cls, name: str, entry: ModelEntry, identity: ModelIdentity, recording: ResponseCache) -> Backend:
        """A backend that answers only from `recording`, as the model `identity` recorded there did.

        No client is built and no key is read: a call the recording does not hold raises `ReplayMiss`.
        """
        client = ReplayOnlyClient(name, identity.model_info)
        backend = cls._with(name, client, entry, identity)
        backend.replay = recording
        return backend

    @classmethod
    def _with(cls, name: str, client: ChatCompletionClient, entry: ModelEntry, identity: ModelIdentity) -> Backend:
        return cls(
            name=name,
            client=client,
            identity=identity.label,
            temperature=entry.temperature,
            concurrency=entry.concurrency,
            retry=entry.retry.model_copy(update={"timeout_s": entry.call_timeout_s}),
            structured_output=entry.structured_output,
            send_seed=entry.send_seed,
            cost_per_1k_prompt=entry.cost_per_1k_prompt,
            cost_per_1k_completion=entry.cost_per_1k_completion,
            resolved=identity,
            in_process=entry.provider_path in IN_PROCESS_PROVIDERS,
        )

    @property
    def model_key(self) -> str:
        """What cache keys hold for this backend (`ModelIdentity.key`, or the label without one)."""
        if self._key is None:
            self._key = self.resolved.key() if self.resolved is not None else self.identity
        return self._key

    @property
    def semaphore(self) -> asyncio.Semaphore:
        """The limit on calls in flight (created lazily inside the running loop)."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._semaphore

    def client_for(self, context: str | None) -> ChatCompletionClient:
        """The client that serves calls made in the engine context `context` (None: the main one).

        A client with per-context prompt caches (`EngineContexts`: the embedded model) gives each context
        its own; any other client serves every context itself (a server keeps its own prompt cache).
        """
        if context is None or not isinstance(self.client, EngineContexts):
            return self.client
        return self.client.engine_context(context)

    async def close(self) -> None:
        """Close the client's connections (call once the run is over, inside an event loop)."""
        await self.client.close()

    def cost(self, usage: RoleUsage) -> float:
        """Estimated price of `usage` on this backend."""
        return (
            usage.prompt_tokens * self.cost_per_1k_prompt + usage.completion_tokens * self.cost_per_1k_completion
        ) / 1000


async def close_backends(backends: Iterable[Backend]) -> None:
    """Close every distinct client of `backends` (a client shared by two entries is closed once).

    A client that fails to close is logged, not raised: the run's results are already written.
    """
    seen: set[int] = set()
    for backend in backends:
        if id(backend.client) in seen:
            continue
        seen.add(id(backend.client))
        try:
            await backend.close()
        except Exception as exc:
            logger.warning("%s: closing the client failed: %s: %s", backend.name, type(exc).__name__, redact(str(exc)))


class RoleClient(WholeReplyClient):
    """The client one role uses in one episode: limits, retries, seed, cache and usage.

    Args:
        backend: The shared backend.
        role: The role name ("customer", "agent", "judge", ...); part of cache keys.
        seed: The seed sent with every call (when the backend accepts one); part of cache keys.
        trial: The trial index; part of cache keys.
        cache: The response cache, or None. A replaying backend answers from its recording instead.
        context: The engine context that serves the role (`Backend.client_for`): roles of one backend whose
            prompts share no prefix take different ones. None: the backend's main context. Not part of
            cache keys: it decides which engine cache a prompt is processed in, not what is asked.
        create_args: Arguments sent with every call of this role (e.g. `{"temperature": 0.0}` for a grader);
            a call's own `extra_create_args` win. Part of cache keys.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        role: str,
        seed: int | None = None,
        trial: int | None = None,
        cache: ResponseCache | None = None,
        context: str | None = None,
        create_args: Mapping[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.role = role
        self.context = context
        self.create_args = dict(create_args or {})
        self.seed = seed
        self.trial = trial
        self.cache = cache
        self.usage = RoleUsage()
        self._calls = 0
        self._made = 0

    def _next_seed(self) -> int | None:
        """The seed of the next call: the role's seed plus the call's index.

        A re-ask with a near-identical prompt samples afresh, while a resumed episode repeats the
        same sequence (and so hits the cache).
        """
        if self.seed is None:
            return None
        seed = (self.seed + self._calls) & 0x7FFFFFFF
        self._calls += 1
        return seed

    def _prepare(
        self, json_output: bool | type[BaseModel] | None, extra_create_args: Mapping[str, Any], seed: int | None
    ) -> tuple[bool | type[BaseModel] | None, dict[str, Any]]:
        args = dict(extra_create_args)
        if self.backend.send_seed and seed is not None and "seed" not in args:
            args["seed"] = seed
        mode = self.backend.structured_output
        if isinstance(json_output, type) and mode != "native":
            if mode == "json_object_schema":
                args.setdefault("response_format", {"type": "json_object", "schema": json_output.model_json_schema()})
            return None, args
        return json_output, args

    @override
    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """One model call with cache, limit, retries and accounting.

        Transient errors (timeouts, dropped connections, 429, 5xx) are retried with exponential
        backoff and jitter, or after the wait the server asked for (`Retry-After`), capped at the
        policy's `max_backoff_s`.

        Raises:
            BackendError: The call failed for good.
            ReplayMiss: The backend replays a recording that does not hold this call.
            pydantic.ValidationError: With `json_output=<model class>` on a backend that parses
                structured output itself: the model's answer did not fit (no retry here; the
                caller re-asks with the problem).
        """
        extra_create_args = {**self.create_args, **extra_create_args}
        seed = self._next_seed()
        call = self._made
        self._made += 1
        recording = self.backend.replay
        cache = recording or self.cache
        key: CacheKey | None = None
        if cache is not None and not tools:
            greedy = extra_create_args.get("temperature", self.backend.temperature) == 0
            key = CacheKey(
                role=self.role,
                model=self.backend.model_key,
                temperature=self.backend.temperature,
                seed=None if greedy else seed,  # a greedy answer is the same whatever the seed: ask once
                trial=None if greedy else self.trial,
                messages=messages,
                json_output=json_output,
                extra=extra_create_args or None,
            )
            hit = cache.get(key)
            if hit is not None:
                self._count(hit)
                return hit
        if recording is not None:
            raise ReplayMiss(
                role=self.role,
                backend=self.backend.name,
                trial=self.trial,
                seed=seed,
                call=call,
                messages=messages,
                recorded=len(recording),
            )
        send_json, args = self._prepare(json_output, extra_create_args, seed)
        result = await self._call_with_retries(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=send_json,
            args=args,
            cancellation_token=cancellation_token,
        )
        if isinstance(json_output, type) and isinstance(result.content, str):
            match = _FENCE.match(result.content)
            if match:
                result = result.model_copy(update={"content": match.group(1)})
        if key is not None and self.cache is not None and result.finish_reason != "unknown":
            result = self.cache.put(key, result)  # an overlapping identical call's answer, if it came first
        self._count(result)
        logger.debug(
            "%s (%s): %d prompt tokens sent, %s processed, %d generated, %s s",
            self.backend.name,
            self.role,
            result.usage.prompt_tokens,
            getattr(result, "prompt_processed", None),
            result.usage.completion_tokens,
            getattr(result, "model_seconds", None),
        )
        return result

    async def _call_with_retries(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | Literal["auto", "required", "none"],
        json_output: bool | type[BaseModel] | None,
        args: dict[str, Any],
        cancellation_token: CancellationToken | None,
    ) -> MeteredResult:
        """The backend's answer, with the prompt tokens it processed and the seconds every attempt took."""
        policy = self.backend.retry
        attempt = 0
        seconds = 0.0
        while True:
            attempt += 1
            try:
                async with self.backend.semaphore:
                    started = time.perf_counter()
                    try:
                        with metering() as meter:
                            call = self.backend.client_for(self.context).create(
                                messages,
                                tools=tools,
                                tool_choice=tool_choice,
                                json_output=json_output,
                                extra_create_args=args,
                                cancellation_token=cancellation_token,
                            )
                            async with asyncio.timeout(policy.timeout_s):
                                result = await call
                    finally:
                        seconds += time.perf_counter() - started
                    fields: dict[str, Any] = {**dict(result), "prompt_processed": meter.prompt_processed}
                    return MeteredResult.model_construct(None, **fields, model_seconds=round(seconds, 3))
            except (asyncio.CancelledError, CoachlabError):
                raise  # a user error (missing model, bad config) is not a backend fault
            except Exception as exc:
                if isinstance(exc, ValidationError) and isinstance(json_output, type):
                    # The client parsed the model's structured answer and it did not fit: the model
                    # answered badly, the backend did not fail. The caller re-asks (`ask_structured`).
                    raise
                if not is_transient(exc) or attempt > policy.max_retries:
                    # from None: a printed traceback would show the cause's text, key echoes included
                    raise BackendError(self.backend.name, exc, attempt) from None
                wait = backoff(policy, attempt, exc)
                logger.warning(
                    "%s (%s): %s; retry %d/%d in %.1fs",
                    self.backend.name,
                    self.role,
                    type(exc).__name__,
                    attempt,
                    policy.max_retries,
                    wait,
                )
                await asyncio.sleep(wait)

    def _count(self, result: CreateResult) -> None:
        metered = result if isinstance(result, MeteredResult) else None
        self.usage = self.usage + RoleUsage(
            calls=1,
            cached_calls=1 if result.cached else 0,
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            prompt_processed=metered.prompt_processed if metered is not None else None,
            model_seconds=metered.model_seconds if metered is not None else None,
        )

    @override
    async def close(self) -> None:
        """Nothing to close: the backend outlives the role (close the backend's client instead)."""

    @override
    def actual_usage(self) -> RequestUsage:
        """Tokens this role spent in this episode (cache hits included)."""
        return RequestUsage(prompt_tokens=self.usage.prompt_tokens, completion_tokens=self.usage.completion_tokens)

    @override
    def total_usage(self) -> RequestUsage:
        """Same as `actual_usage`."""
        return self.actual_usage()

    @override
    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Delegated to the backend's client."""
        return self.backend.client.count_tokens(messages, tools=tools)

    @override
    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Delegated to the backend's client."""
        return self.backend.client.remaining_tokens(messages, tools=tools)

    @property
    @override
    def model_info(self) -> ModelInfo:
        """The backend client's model info."""
        return self.backend.client.model_info
