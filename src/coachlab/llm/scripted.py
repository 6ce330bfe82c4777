"""`ScriptedChatCompletionClient`: a deterministic, offline model driven by a Python function.

A test reads as a small story: the function looks at the messages a role was shown and
returns what that role says.

Example:
    >>> client = ScriptedChatCompletionClient(lambda messages: "Hello, how can I help?")
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import (
    CreateResult,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel
from typing_extensions import override

from coachlab.llm._base import WholeReplyClient

__all__ = ["ScriptFn", "ScriptedChatCompletionClient", "message_text", "word_count"]

ScriptReply = str | BaseModel | CreateResult
ScriptFn = Callable[[Sequence[LLMMessage]], ScriptReply | Awaitable[ScriptReply]]

_INFO = ModelInfo(
    vision=False,
    function_calling=False,
    json_output=True,
    structured_output=True,
    family=ModelFamily.UNKNOWN,
    multiple_system_messages=True,
)


def message_text(message: LLMMessage) -> str:
    """The text of a message (non-text parts are skipped)."""
    content: Any = message.content
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part for part in content if isinstance(part, str))  # pyright: ignore[reportUnknownVariableType]
    return str(content)


def word_count(messages: Sequence[LLMMessage]) -> int:
    """A cheap token estimate: whitespace-separated words."""
    return sum(len(message_text(m).split()) for m in messages)


class ScriptedChatCompletionClient(WholeReplyClient):
    """A chat model whose replies come from `fn(messages)`.

    Args:
        fn: Called with the messages of each request; returns the reply text, a pydantic
            object (sent as its JSON, for structured output), or a full `CreateResult`.
            May be async.
        name: The model name shown in results.
        keep: How many of the latest requests to keep in `calls` / `create_args` (None: all).
            Long dry runs set it low so memory stays flat.
    """

    def __init__(self, fn: ScriptFn, *, name: str = "scripted", keep: int | None = None) -> None:
        self._fn = fn
        self.name = name
        self.keep = keep
        self.calls: list[list[LLMMessage]] = []
        """The requests' messages, in order (the latest `keep`), for assertions."""
        self.create_args: list[dict[str, Any]] = []
        """The requests' extra_create_args plus `json_output` (the latest `keep`), for assertions."""
        self._usage = RequestUsage(prompt_tokens=0, completion_tokens=0)

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
        """Answer one request from the script."""
        if self.keep != 0:
            self.calls.append(list(messages))
            self.create_args.append({**extra_create_args, "json_output": json_output})
            if self.keep is not None and len(self.calls) > self.keep:
                del self.calls[0], self.create_args[0]
        reply = self._fn(messages)
        if inspect.isawaitable(reply):
            reply = await reply
        if isinstance(reply, CreateResult):
            result = reply
        else:
            if isinstance(reply, BaseModel) and isinstance(json_output, type) and isinstance(reply, json_output):
                # A richer model answers as the type asked for (a Verdict where a SatisfactionScore is expected).
                reply = json_output.model_validate(reply.model_dump(include=set(json_output.model_fields)))
            text = reply.model_dump_json() if isinstance(reply, BaseModel) else reply
            usage = RequestUsage(prompt_tokens=word_count(messages), completion_tokens=len(text.split()))
            result = CreateResult(finish_reason="stop", content=text, usage=usage, cached=False)
        self._usage = RequestUsage(
            prompt_tokens=self._usage.prompt_tokens + result.usage.prompt_tokens,
            completion_tokens=self._usage.completion_tokens + result.usage.completion_tokens,
        )
        return result

    @override
    async def close(self) -> None:
        """Nothing to release."""

    @override
    def actual_usage(self) -> RequestUsage:
        """Tokens counted so far."""
        return self._usage

    @override
    def total_usage(self) -> RequestUsage:
        """Tokens counted so far."""
        return self._usage

    @override
    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Words in the messages."""
        return word_count(messages)

    @override
    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """A large budget: scripts have no context limit."""
        return 1_000_000 - word_count(messages)

    @property
    @override
    def model_info(self) -> ModelInfo:
        """A text-only model with JSON output."""
        return _INFO
