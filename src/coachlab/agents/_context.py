"""`ObservedContext`: a model context whose contents the environment sets before each call."""

from __future__ import annotations

from collections.abc import Sequence

from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import LLMMessage
from typing_extensions import override

__all__ = ["ObservedContext"]


class ObservedContext(ChatCompletionContext):
    """What an agent sees is decided by the environment, not accumulated by the agent.

    The environment calls `observe(view)` with the role's whole view (system prompt included)
    before each turn; what AssistantAgent appends afterwards (its own reply) is dropped at the
    next `observe`. This keeps the environment the single owner of observation: the service
    agent can never see the customer's private goal, because no view it is given contains it.
    """

    def observe(self, view: Sequence[LLMMessage]) -> None:
        """Replace the context with `view`."""
        self._messages = list(view)

    @override
    async def get_messages(self) -> list[LLMMessage]:
        """The current view."""
        return list(self._messages)
