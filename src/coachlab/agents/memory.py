"""`CoachingMemory`: a trained library as an AutoGen `Memory` for your own `AssistantAgent`.

Before each model call, AutoGen's `AssistantAgent` asks its memories to update the model
context. `CoachingMemory` reads the conversation in the context (user and assistant lines, as
simulation did), retrieves the approved strategies that fit it, and adds the coaching block as a
system message right after the agent's own system prompt (where simulation put it), replacing
the block of the previous turn. The strategies shown come back as a `MemoryQueryEvent` in the
agent's inner messages, with their ids and scores.

Example::

    from autogen_agentchat.agents import AssistantAgent
    from coachlab import CoachingMemory

    agent = AssistantAgent(
        "support",
        model_client=my_client,
        system_message="You are the support agent of Acme.",
        memory=[CoachingMemory("runs/quickstart")],
    )

The adapter lives in `coachlab.agents` because only the models layer, the agents and the
environments import AutoGen; the retrieval itself is `coachlab.library.coaching`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self, cast

from autogen_core import CancellationToken, Component
from autogen_core.memory import Memory, MemoryContent, MemoryMimeType, MemoryQueryResult, UpdateContextResult
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import AssistantMessage, LLMMessage, SystemMessage, UserMessage
from pydantic import BaseModel, ConfigDict, Field

from coachlab.errors import UsageError
from coachlab.library.coaching import COACHING_HEADER, CoachingLibrary, LiveLibrary, coaching_block
from coachlab.library.retrieval import RetrievalConfig, situation_text
from coachlab.schema import Guidance, Line

__all__ = ["CoachingMemory", "CoachingMemoryConfig"]

logger = logging.getLogger(__name__)

RELOAD_EVERY_S = 2.0
"""How often, at most, `update_context` looks for a new library version."""


class CoachingMemoryConfig(BaseModel):
    """The component config of `CoachingMemory` (what `dump_component` writes)."""

    model_config = ConfigDict(extra="forbid")

    library: str = Field(description="A run folder (runs/quickstart) or a library folder (runs/quickstart/library).")
    version: int | None = Field(
        default=None, ge=1, description="Pin a library version (default: the latest, reloaded)."
    )
    retrieval: RetrievalConfig | None = Field(
        default=None, description="Retriever settings (default: the run's experiment.yaml `retrieval:`)."
    )
    name: str | None = Field(default=None, description="The memory's name.")


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part for part in cast(list[object], content) if isinstance(part, str))
    return ""


def _dialogue(messages: Sequence[LLMMessage]) -> list[Line]:
    """The customer's (user) and the agent's (assistant) lines of a model context, as simulation saw them."""
    dialogue: list[Line] = []
    for message in messages:
        if isinstance(message, UserMessage):
            who = "customer"
        elif isinstance(message, AssistantMessage):
            who = "agent"
        else:
            continue
        text = _text(message.content).strip()
        if text:
            dialogue.append((who, text))
    return dialogue


def _is_coaching(message: object) -> bool:
    """A coaching block this memory added (a dumped `SystemMessage` or the message itself)."""
    if isinstance(message, SystemMessage):
        return message.content.startswith(COACHING_HEADER)
    if isinstance(message, Mapping):
        fields = cast(Mapping[str, object], message)
        content = fields.get("content")
        return _is_system(fields) and isinstance(content, str) and content.startswith(COACHING_HEADER)
    return False


def _is_system(message: object) -> bool:
    """A dumped `SystemMessage` (an entry of a context's saved state)."""
    return isinstance(message, Mapping) and cast(Mapping[str, object], message).get("type") == "SystemMessage"


def _results(guidance: Sequence[Guidance], version: int) -> MemoryQueryResult:
    return MemoryQueryResult(
        results=[
            MemoryContent(
                content=f"{g.situation}: {g.guidance}",
                mime_type=MemoryMimeType.TEXT,
                metadata={"strategy_id": g.id, "score": round(g.score, 4), "library_version": version},
            )
            for g in guidance
        ]
    )


class CoachingMemory(Memory, Component[CoachingMemoryConfig]):
    """A coachlab strategy library as an AutoGen memory: per-turn coaching for an `AssistantAgent`.

    Only approved strategies are retrieved. The library is read-only here: strategies enter it
    through `coachlab train` and an audit (`coachlab library approve`), so `add` refuses. A new
    library version written to the folder is picked up at the next model call (checked at most
    every `RELOAD_EVERY_S` seconds) unless a `version` is pinned.

    Args:
        library: A run folder or library folder, or a `CoachingLibrary` already built (e.g. over
            your own retriever; then nothing is reloaded).
        version: Pin this library version (default: the latest).
        retrieval: Retriever settings (default: the run's, as `coachlab.load_library` reads them).
        name: The memory's name (default: `coachlab`).

    Raises:
        UsageError: No library at `library`, or the retriever cannot be built.
        ConfigError: A library file or the run's `retrieval:` section is not valid.
    """

    component_type = "memory"
    component_config_schema = CoachingMemoryConfig
    component_provider_override = "coachlab.CoachingMemory"

    def __init__(
        self,
        library: str | Path | CoachingLibrary,
        *,
        version: int | None = None,
        retrieval: RetrievalConfig | None = None,
        name: str | None = None,
    ) -> None:
        self._name = name or "coachlab"
        self._retrieval = retrieval
        self._live: LiveLibrary | None = None
        if isinstance(library, CoachingLibrary):
            self._library = library
            self._version = library.version if library.folder is not None else version
        else:
            self._live = LiveLibrary(library, version=version, retrieval=retrieval)
            self._library = self._live.current
            self._version = version
        self._checked = time.monotonic()

    @property
    def name(self) -> str:
        """The memory's name."""
        return self._name

    @property
    def library(self) -> CoachingLibrary:
        """The library version being served now."""
        return self._live.current if self._live is not None else self._library

    async def _refresh(self) -> None:
        if self._live is None or time.monotonic() - self._checked < RELOAD_EVERY_S:
            return
        self._checked = time.monotonic()
        await self._live.refresh()

    async def update_context(self, model_context: ChatCompletionContext) -> UpdateContextResult:
        """Retrieve for the conversation in `model_context` and put the coaching block into it.

        The block replaces the one added at the previous turn. It goes right after the context's
        leading system messages (next to the agent's system prompt, so models that take one system
        message get one), or at the end when the context would not show it there (a buffered
        context that keeps only the last messages).

        Returns:
            The strategies shown, one `MemoryContent` each (metadata: `strategy_id`, `score`,
            `library_version`); empty when none fits.
        """
        await self._refresh()
        library = self.library
        visible = [m for m in await model_context.get_messages() if not _is_coaching(m)]
        shown = await library.asearch(situation_text(_dialogue(visible)))
        state = dict(await model_context.save_state())
        stored = list(cast(list[object], state.get("messages", [])))
        kept = [m for m in stored if not _is_coaching(m)]
        if not shown and len(kept) == len(stored):
            return UpdateContextResult(memories=MemoryQueryResult(results=[]))
        if shown:
            block = SystemMessage(content=coaching_block(shown)).model_dump()
            at = 0
            while at < len(kept) and _is_system(kept[at]):
                at += 1
            await model_context.load_state({**state, "messages": [*kept[:at], block, *kept[at:]]})
            if not any(_is_coaching(m) for m in await model_context.get_messages()):
                await model_context.load_state({**state, "messages": [*kept, block]})
        else:
            await model_context.load_state({**state, "messages": kept})
        if shown:
            logger.debug("coaching memory: library v%d, strategies %s", library.version, [g.id for g in shown])
        return UpdateContextResult(memories=_results(shown, library.version))

    async def query(
        self, query: str | MemoryContent, cancellation_token: CancellationToken | None = None, **kwargs: Any
    ) -> MemoryQueryResult:
        """The strategies for one customer message (a string, or a `MemoryContent` holding one).

        For a whole conversation, `update_context` reads the model context instead.
        """
        await self._refresh()
        content = query.content if isinstance(query, MemoryContent) else query
        text = content.strip() if isinstance(content, str) else ""
        shown = await self.library.asearch(situation_text([("customer", text)])) if text else []
        return _results(shown, self.library.version)

    async def add(self, content: MemoryContent, cancellation_token: CancellationToken | None = None) -> None:
        """Refused: strategies enter the library through training and an audit, never at run time.

        Raises:
            UsageError: Always.
        """
        raise UsageError(
            "CoachingMemory is read-only: strategies enter the library through coachlab train and "
            "an audit (coachlab library approve RUN_DIR ID --by NAME)."
        )

    async def clear(self) -> None:
        """Nothing to clear in a read-only library: forgets cached searches only."""
        self.library.clear_cache()

    async def close(self) -> None:
        """Close the embeddings endpoint's connections, if the retriever has one."""
        embedder: object = getattr(self.library.retriever, "embedder", None)
        close: object = getattr(embedder, "close", None)
        if callable(close):
            close()

    def _to_config(self) -> CoachingMemoryConfig:
        folder = self.library.folder
        if folder is None:
            raise UsageError("This CoachingMemory holds a library built in memory: load it from a folder to dump it.")
        return CoachingMemoryConfig(
            library=str(folder), version=self._version, retrieval=self._retrieval, name=self._name
        )

    @classmethod
    def _from_config(cls, config: CoachingMemoryConfig) -> Self:
        return cls(config.library, version=config.version, retrieval=config.retrieval, name=config.name)
