"""What coachlab's own model clients share: a non-streaming `create_stream` and `capabilities`; engine contexts."""

from __future__ import annotations

from abc import ABC
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,  # pyright: ignore[reportDeprecated]
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel
from typing_extensions import override

__all__ = ["EngineContexts", "ModelClient", "WholeReplyClient"]

ModelClient = ChatCompletionClient
"""Any AutoGen chat completion client: what the rest of coachlab passes around."""


@runtime_checkable
class EngineContexts(Protocol):
    """A client whose engine keeps one prompt cache (KV cache) per context, all in this process.

    Roles that share a model entry but not their prompts ask for a context each (`Backend.client_for`),
    so one role's calls do not evict the prefix the other's next call would reuse.
    """

    def engine_context(self, name: str) -> ChatCompletionClient:
        """The client of the context `name` (made once; closed with this client)."""
        ...


class WholeReplyClient(ChatCompletionClient, ABC):
    """A client that answers whole: `create_stream` yields the full text once, then the result."""

    @override
    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Like `create`, delivered as one text chunk followed by the result."""
        result = await self.create(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args=extra_create_args,
            cancellation_token=cancellation_token,
        )
        if isinstance(result.content, str) and result.content:
            yield result.content
        yield result

    @property
    @override
    def capabilities(self) -> ModelCapabilities:  # pyright: ignore[reportDeprecated]
        """Deprecated AutoGen property, derived from `model_info`."""
        info = self.model_info
        return ModelCapabilities(  # pyright: ignore[reportDeprecated]
            vision=info["vision"], function_calling=info["function_calling"], json_output=info["json_output"]
        )
