"""What a model call cost the engine: the prompt tokens it processed, not only the ones sent.

On CPU an episode's time goes mostly to prompt tokens the engine has to process; the ones it finds
in its prompt cache (the KV prefix an in-process llama.cpp model kept from its last call, a server's
prompt cache) cost next to nothing. AutoGen's `CreateResult` carries only the tokens sent, so the
count travels another way: `RoleClient` opens a `metering()` scope around each call, the client
reports into it (`report_prompt_processed`), and `RoleClient` returns a `MeteredResult`, which the
response cache stores with the answer (a replayed or cached answer counts what it cost when made).

Who reports:

- `EmbeddedChatCompletionClient` counts the tokens llama.cpp evaluates before the first new token.
- `OpenAIChatCompletionClient` built from a model entry reads the response body
  (`processed_from_response`): llama.cpp's server sends `timings.prompt_n`; OpenAI and vLLM (with
  prompt-token details on) send `usage.prompt_tokens_details.cached_tokens`. A server that sends
  neither leaves the count unknown (None), never zero.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from autogen_core.models import CreateResult

__all__ = [
    "CallMeter",
    "MeteredResult",
    "metered_http_client",
    "metering",
    "processed_from_response",
    "report_prompt_processed",
]

logger = logging.getLogger(__name__)


class MeteredResult(CreateResult):
    """A `CreateResult` with what the call cost the engine (kept with the answer in the response cache)."""

    prompt_processed: int | None = None
    """Prompt tokens the engine processed; None: the backend did not say."""
    model_seconds: float | None = None
    """Wall-clock seconds of the call (every attempt; waiting for a free slot excluded)."""


@dataclass
class CallMeter:
    """Filled in by the client during one call."""

    prompt_processed: int | None = None


_current: ContextVar[CallMeter | None] = ContextVar("coachlab_call_meter", default=None)


@contextmanager
def metering() -> Generator[CallMeter]:
    """A scope in which the client of one call reports what it processed.

    The meter follows the call into tasks and worker threads started inside the scope (they copy the
    context, and the meter is one shared object).
    """
    meter = CallMeter()
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)


def report_prompt_processed(tokens: int | None) -> None:
    """Called by a client during a call: the prompt tokens its engine processed (no-op outside `metering`)."""
    meter = _current.get()
    if meter is not None:
        meter.prompt_processed = tokens


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def processed_from_response(body: Mapping[str, Any]) -> int | None:
    """The prompt tokens processed, read from an OpenAI-compatible chat-completions response body.

    llama.cpp's server: `timings.prompt_n` (it also sends `cache_n`, the tokens it reused). OpenAI,
    vLLM and others: `usage.prompt_tokens` minus `usage.prompt_tokens_details.cached_tokens`.
    None when the body says neither (no cache report is not "nothing cached").
    """
    timings = body.get("timings")
    if isinstance(timings, Mapping):
        processed = _int(timings.get("prompt_n"))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
        if processed is not None:
            return processed
    usage = body.get("usage")
    if not isinstance(usage, Mapping):
        return None
    prompt = _int(usage.get("prompt_tokens"))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
    details = usage.get("prompt_tokens_details")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
    if prompt is None or cached is None:
        return None
    return max(0, prompt - cached)


async def _read_processed(response: Any) -> None:
    """The HTTP client's response hook: report the processed prompt tokens of a whole JSON chat completion."""
    if _current.get() is None or not str(response.url.path).endswith("/chat/completions"):
        return
    if not str(response.headers.get("content-type", "")).startswith("application/json"):
        return  # an error page or a stream: never read a stream here
    await response.aread()
    try:
        body = json.loads(response.content)
    except ValueError:
        return
    if isinstance(body, dict):
        report_prompt_processed(processed_from_response(body))  # pyright: ignore[reportUnknownArgumentType]


def metered_http_client() -> Any:
    """The openai SDK's default async HTTP client, plus a hook that reports each call's processed prompt tokens."""
    import openai

    return openai.DefaultAsyncHttpxClient(event_hooks={"response": [_read_processed]})
