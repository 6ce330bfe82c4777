"""Replaying a recorded run: every answer comes from its response cache, no model is called.

A `Backend` built by `Backend.replaying` holds the recorded cache and the identity the run recorded
for it; its `RoleClient`s look every call up there and raise `ReplayMiss` at the first call the
recording does not hold, naming the role and the call. Its client stands in for the model and is
never asked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from autogen_core import CancellationToken
from autogen_core.models import CreateResult, LLMMessage, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel
from typing_extensions import override

from coachlab.errors import CoachlabError
from coachlab.llm._base import WholeReplyClient
from coachlab.llm.scripted import message_text, word_count

__all__ = ["ReplayMiss", "ReplayOnlyClient"]

_SHOWN = 160
"""Characters of the call's last message quoted in a `ReplayMiss`."""


class ReplayMiss(CoachlabError):
    """`--replay` reached a model call that the recorded run's cache does not hold.

    Attributes:
        role: The role that made the call ("agent", "judge", "teacher-refine"...).
        backend: The model entry it called.
        trial: The episode's trial index (None outside episodes).
        seed: The call's seed.
        call: The call's number within that role's calls in the episode (0 is the first).
    """

    def __init__(
        self,
        *,
        role: str,
        backend: str,
        trial: int | None,
        seed: int | None,
        call: int,
        messages: Sequence[LLMMessage],
        recorded: int,
    ) -> None:
        last = " ".join(message_text(messages[-1]).split()) if messages else ""
        shown = last if len(last) <= _SHOWN else last[: _SHOWN - 3] + "..."
        super().__init__(
            f"--replay: the recorded run holds no answer for the {role} (model {backend!r}), call {call} of that role "
            f"in trial {trial} with seed {seed}; its last message begins: {shown!r}. The run departs from the "
            f"recording here: the experiment, a scenario or coachlab changed, or the recorded run did not finish "
            f"({recorded} answers recorded)."
        )
        self.role = role
        self.backend = backend
        self.trial = trial
        self.seed = seed
        self.call = call


class ReplayOnlyClient(WholeReplyClient):
    """The client of a replaying backend: it reports the recorded model's info and answers nothing.

    Args:
        name: The model entry's name.
        model_info: The recorded client's model info (agents shape their requests by it).
    """

    def __init__(self, name: str, model_info: Mapping[str, Any] | None = None) -> None:
        self.name = name
        info = dict(model_info) if model_info else {}
        self._info = cast(
            ModelInfo,
            {
                "vision": False,
                "function_calling": False,
                "json_output": True,
                "structured_output": True,
                "family": ModelFamily.UNKNOWN,
                **info,
            },
        )

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
        """Never answers: a replay takes every answer from the recorded cache.

        Raises:
            CoachlabError: Always (a caller went around the cache).
        """
        raise CoachlabError(f"--replay: model {self.name!r} was called directly; a replay calls no model.")

    @override
    async def close(self) -> None:
        """Nothing to close."""

    @override
    def actual_usage(self) -> RequestUsage:
        """Nothing is used."""
        return RequestUsage(prompt_tokens=0, completion_tokens=0)

    @override
    def total_usage(self) -> RequestUsage:
        """Nothing is used."""
        return self.actual_usage()

    @override
    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Words in the messages (an estimate)."""
        return word_count(messages)

    @override
    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """A large budget."""
        return 1_000_000 - word_count(messages)

    @property
    @override
    def model_info(self) -> ModelInfo:
        """The recorded client's model info."""
        return self._info
