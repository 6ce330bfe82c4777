"""Coaching a live conversation with a trained library: the API behind `coachlab.load_library`.

A deployed agent has no scenario and no experiment file, only its conversation, as OpenAI-style
messages (`[{"role": "user", "content": "..."}]`). `CoachingLibrary` finds the approved strategies
that fit it exactly as simulation did: the same query (`situation_text` over the user and
assistant lines), the same retriever settings (`kind`, `k`, `floor`, read from the run's
`experiment.yaml`), and the same coaching block at the end of the system prompt.

Example::

    import coachlab

    library = coachlab.load_library("runs/quickstart")  # the latest version, approved strategies only
    messages = [
        {"role": "system", "content": "You are the support agent of Acme."},
        {"role": "user", "content": "My parcel is a week late and nobody answers my emails."},
    ]
    shown = library.retrieve(messages)                   # [Guidance(id=..., situation=..., score=...)]
    messages = coachlab.add_coaching(messages, shown)    # the block appended to the system message
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from coachlab.errors import UsageError
from coachlab.library.retrieval import (
    AsyncRetriever,
    LexicalRetriever,
    Placement,
    RetrievalConfig,
    Retriever,
    default_floor,
    resolve_retriever_kind,
    situation_text,
)
from coachlab.library.store import LibraryStore
from coachlab.schema import AuditStatus, Guidance, Line, Speaker, Strategy
from coachlab.yamlio import load_yaml, validate_yaml

__all__ = [
    "COACHING_HEADER",
    "REMINDER_HEADER",
    "CoachingLibrary",
    "LiveLibrary",
    "add_coaching",
    "coaching_block",
    "coaching_parts",
    "dialogue_from_messages",
    "library_folder",
    "load_library",
    "run_retrieval_config",
    "situation_from_messages",
]

logger = logging.getLogger(__name__)

COACHING_HEADER = "Guidance from your coach (apply it when the situation fits):"
"""The first line of the coaching block (the service agent read the same line in simulation)."""

_SPEAKERS: dict[str, Speaker] = {"user": "customer", "assistant": "agent"}
_SYSTEM_ROLES = ("system", "developer")


def coaching_block(guidance: Sequence[Guidance]) -> str:
    """The coaching block for a system prompt: `COACHING_HEADER`, then `- situation: guidance` per strategy.

    This is the text the service agent read in simulation (`service_system_prompt`); it is empty
    when `guidance` is.
    """
    if not guidance:
        return ""
    return "\n".join([COACHING_HEADER, *(f"- {g.situation}: {g.guidance}" for g in guidance)])


REMINDER_HEADER = "Reminder from your coach:"
"""How the one-line reminder of the best strategy begins (`placement: reminder`)."""


def coaching_parts(guidance: Sequence[Guidance], placement: Placement = "system") -> tuple[str, str]:
    """Where a turn's strategies go: (the end of the system prompt, a system message before the customer's last line).

    Either is "" when that place gets nothing, both when `guidance` is empty. Simulation
    (`service_view`) and production (`add_coaching`) both place the strategies from these two
    texts, so what was measured is what runs.
    """
    if not guidance:
        return "", ""
    block = coaching_block(guidance)
    if placement == "before_last":
        return "", block
    if placement == "reminder":
        first = guidance[0]
        return block, f"{REMINDER_HEADER} {first.situation}: {first.guidance}"
    return block, ""


def _content_text(content: object) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in cast(list[object], content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping):
                text = cast(Mapping[str, object], part).get("text")
                if isinstance(text, str):
                    texts.append(text)
        return " ".join(texts)
    return ""


def dialogue_from_messages(messages: Iterable[object]) -> list[Line]:
    """The dialogue of OpenAI-style messages: `("customer", text)` per user and `("agent", text)` per assistant message.

    System, developer and tool messages, assistant messages without text (tool calls only) and
    anything that is not a mapping with a `role` are left out: they are not part of what the
    customer and the agent said to each other, and simulation never saw them.
    """
    dialogue: list[Line] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        fields = cast(Mapping[str, object], message)
        who = _SPEAKERS.get(str(fields.get("role")))
        if who is None:
            continue
        text = _content_text(fields.get("content")).strip()
        if text:
            dialogue.append((who, text))
    return dialogue


def situation_from_messages(messages: Iterable[object], *, last: int = 4) -> str:
    """The retrieval query of a conversation: its last `last` user/assistant lines (see `situation_text`).

    Simulation builds its query with the same `situation_text`, from the same lines.
    """
    return situation_text(dialogue_from_messages(messages), last=last)


def add_coaching(
    messages: Sequence[Mapping[str, Any]], guidance: Sequence[Guidance], *, placement: Placement = "system"
) -> list[dict[str, Any]]:
    """A copy of `messages` with the strategies placed as simulation placed them (`coaching_parts`).

    With `system` (the default) the coaching block goes at the end of the last system (or
    developer) message that opens the conversation, on a new line; without one, a system message
    holding the block is put first. A system message whose content is a list of parts gets the
    block as one more text part. With `before_last` the block is a system message of its own right
    before the last user message (at the end without one); with `reminder` the block goes in the
    system prompt and a one-line reminder of the best strategy before the last user message.
    Without guidance, the messages come back unchanged (copied). The input is never modified.
    """
    out = [dict(m) for m in messages]
    in_system, before_last = coaching_parts(guidance, placement)
    if in_system:
        out = _append_to_system(out, in_system)
    if before_last:
        users = [i for i, m in enumerate(out) if m.get("role") == "user"]
        at = users[-1] if users else len(out)
        out.insert(at, {"role": "system", "content": before_last})
    return out


def _append_to_system(out: list[dict[str, Any]], block: str) -> list[dict[str, Any]]:
    lead = 0
    while lead < len(out) and out[lead].get("role") in _SYSTEM_ROLES:
        lead += 1
    if lead == 0:
        return [{"role": "system", "content": block}, *out]
    system = out[lead - 1]
    content = system.get("content")
    if isinstance(content, list):
        system["content"] = [*cast(list[object], content), {"type": "text", "text": "\n" + block}]
    elif isinstance(content, str) and content.strip():
        system["content"] = f"{content.rstrip()}\n{block}"
    else:
        system["content"] = block
    return out


def library_folder(path: str | Path) -> Path:
    """The folder of library versions at `path`: a run folder's `library/`, or `path` itself.

    Raises:
        UsageError: Neither holds a library version (`v0001.json`, ...).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder (give a run folder such as runs/quickstart, or its library/).")
    for folder in (root / "library", root):
        if LibraryStore(folder).versions():
            return folder
    raise UsageError(
        f"{root}: no strategy library here: give a run folder (with library/v0001.json ...) "
        "or a library folder (v0001.json ...); coachlab train writes one."
    )


def run_retrieval_config(folder: Path) -> RetrievalConfig | None:
    """The `retrieval:` section of the run that wrote the library in `folder`, or None.

    The run's `experiment.yaml` (copied there by `coachlab train`) sits beside a run's `library/`
    folder; only its `retrieval:` section is read.

    Raises:
        ConfigError: The section is not valid (the message names the file, line and field).
    """
    if folder.name != "library":
        return None
    path = folder.parent / "experiment.yaml"
    if not path.is_file():
        return None
    doc = load_yaml(path, what="experiment file")
    data: object = doc.data
    section = cast(Mapping[str, object], data).get("retrieval") if isinstance(data, Mapping) else None
    if section is None:
        return None
    return validate_yaml(RetrievalConfig, doc, data=section, prefix=("retrieval",))


class CoachingLibrary:
    """The approved strategies of one library version, ready to coach conversations.

    Build it with `load_library` (from a folder), or directly from strategies. Searches are cached
    per query (the same conversation asked twice, e.g. a retried request, is retrieved once).

    Args:
        strategies: The library's strategies; only approved ones are ever retrieved.
        retrieval: The retriever settings (default: `RetrievalConfig()`, i.e. `auto`, k 3, the
            kind's floor).
        version: The library version the strategies come from (reported with each use).
        folder: The folder they were loaded from, if any.
        retriever: A retriever to use instead of the one `retrieval` builds (e.g. over your own
            embedder); `retrieval.k` and `retrieval.floor` still apply.
        cache_size: Queries whose results are kept.

    Raises:
        UsageError: The retriever cannot be built (see `make_retriever`).
    """

    def __init__(
        self,
        strategies: Sequence[Strategy],
        *,
        retrieval: RetrievalConfig | None = None,
        version: int = 0,
        folder: Path | None = None,
        retriever: Retriever | None = None,
        cache_size: int = 1024,
    ) -> None:
        self.strategies = [s for s in strategies if s.status is AuditStatus.APPROVED]
        self.retrieval = retrieval or RetrievalConfig()
        self.version = version
        self.folder = folder
        if retriever is None:
            kind = resolve_retriever_kind(self.retrieval.kind, model=self.retrieval.model)
            retriever = self.retrieval.model_copy(update={"kind": kind}).retriever(self.strategies)
            self.kind: str = kind
        else:
            self.kind = "lexical" if isinstance(retriever, LexicalRetriever) else type(retriever).__name__
        self.retriever = retriever
        self.k = self.retrieval.k
        self.floor = self.retrieval.floor if self.retrieval.floor is not None else default_floor(retriever)
        self._cache: OrderedDict[str, tuple[Guidance, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def strategy_ids(self) -> list[str]:
        """The ids of the strategies this library can retrieve."""
        return [s.id for s in self.strategies]

    def describe(self) -> dict[str, Any]:
        """What is being served, as JSON-ready data (for health checks and logs)."""
        return {
            "library_version": self.version,
            "folder": str(self.folder) if self.folder is not None else None,
            "strategies": len(self.strategies),
            "retrieval": {"kind": self.kind, "k": self.k, "floor": self.floor},
        }

    def _cached(self, situation: str) -> tuple[Guidance, ...] | None:
        with self._lock:
            hit = self._cache.get(situation)
            if hit is not None:
                self._cache.move_to_end(situation)
            return hit

    def _remember(self, situation: str, hits: Sequence[tuple[Strategy, float]]) -> list[Guidance]:
        shown = tuple(s.as_guidance(score) for s, score in hits)
        with self._lock:
            self._cache[situation] = shown
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return list(shown)

    def clear_cache(self) -> None:
        """Forget the cached searches."""
        with self._lock:
            self._cache.clear()

    def search(self, situation: str) -> list[Guidance]:
        """The strategies for a situation text (`situation_text`'s shape), best first."""
        if not situation or not self.strategies:
            return []
        cached = self._cached(situation)
        if cached is not None:
            return list(cached)
        return self._remember(situation, self.retriever.search(situation, k=self.k, floor=self.floor))

    async def asearch(self, situation: str) -> list[Guidance]:
        """`search` without blocking the event loop on an embedding model or endpoint."""
        if not situation or not self.strategies:
            return []
        cached = self._cached(situation)
        if cached is not None:
            return list(cached)
        retriever = self.retriever
        if isinstance(retriever, AsyncRetriever):
            hits = await retriever.asearch(situation, k=self.k, floor=self.floor)
        else:
            hits = retriever.search(situation, k=self.k, floor=self.floor)
        return self._remember(situation, hits)

    def retrieve(self, messages: Iterable[object]) -> list[Guidance]:
        """The strategies that fit a conversation of OpenAI-style messages, best first (at most `k`).

        Example::

            library.retrieve([{"role": "user", "content": "I was charged twice for one order."}])
        """
        return self.search(situation_from_messages(messages))

    async def aretrieve(self, messages: Iterable[object]) -> list[Guidance]:
        """`retrieve` without blocking the event loop (what the AutoGen memory and the proxy use)."""
        return await self.asearch(situation_from_messages(messages))

    def coach(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """`messages` with the strategies that fit them placed as the run placed them (`add_coaching`)."""
        return add_coaching(messages, self.retrieve(messages), placement=self.retrieval.placement)

    def coaching_block(self, messages: Iterable[object]) -> str:
        """The coaching block for a conversation ("" when no strategy fits)."""
        return coaching_block(self.retrieve(messages))


def load_library(
    path: str | Path,
    *,
    version: int | None = None,
    retrieval: RetrievalConfig | None = None,
    include_proposed: bool = False,
) -> CoachingLibrary:
    """Load a trained library to coach conversations with.

    Args:
        path: A run folder (`runs/quickstart`) or a library folder (`runs/quickstart/library`).
        version: The library version (default: the latest).
        retrieval: Retriever settings (default: the `retrieval:` section of the run's
            `experiment.yaml`, i.e. what training and evaluation used; `RetrievalConfig()` when
            the folder has none).
        include_proposed: Also retrieve strategies still waiting for review (`proposed`), e.g. to
            try them on your own traffic before approving them. Never use it to serve customers:
            only approved strategies were audited.

    Returns:
        The library, ready to `retrieve` for OpenAI-style messages.

    Raises:
        UsageError: No library at `path`, no such version, or the retriever cannot be built.
        ConfigError: A version file or the run's `retrieval:` section is not valid.
    """
    folder = library_folder(path)
    lib = LibraryStore(folder).load(version)
    settings = retrieval if retrieval is not None else run_retrieval_config(folder)
    strategies = list(lib.strategies)
    if include_proposed:
        now = datetime.now(UTC)
        strategies = [
            s.with_status(AuditStatus.APPROVED, by="load_library", at=now, why="include_proposed: not audited")
            if s.status is AuditStatus.PROPOSED
            else s
            for s in strategies
        ]
        logger.warning("%s v%d: proposed strategies are retrieved too (not audited)", folder, lib.version)
    coaching = CoachingLibrary(strategies, retrieval=settings, version=lib.version, folder=folder)
    logger.info(
        "Library %s v%d: %d strategies served, retrieval %s (k %d, floor %.2f)",
        folder,
        lib.version,
        len(coaching.strategies),
        coaching.kind,
        coaching.k,
        coaching.floor,
    )
    return coaching


class LiveLibrary:
    """The latest version of a library folder, swapped in when a new version is written.

    `coachlab train` and `coachlab library approve` write new versions next to the old ones;
    `refresh` (or the `watch` loop) loads a new version in a worker thread and swaps it in, so
    the strategies served are always those of the latest version. A version that cannot be read
    is logged and skipped: the previous one keeps serving. With `version` set, nothing is reloaded.

    Args:
        path: A run folder or a library folder.
        version: Pin this version (no reloads).
        retrieval: Retriever settings (default: the run's, as in `load_library`).
        include_proposed: See `load_library`.

    Raises:
        UsageError: See `load_library`.
        ConfigError: See `load_library`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        version: int | None = None,
        retrieval: RetrievalConfig | None = None,
        include_proposed: bool = False,
    ) -> None:
        self.folder = library_folder(path)
        self.pinned = version is not None
        self.include_proposed = include_proposed
        self.current = load_library(
            self.folder, version=version, retrieval=retrieval, include_proposed=include_proposed
        )
        self._store = LibraryStore(self.folder)
        self._failed: int | None = None

    async def refresh(self) -> bool:
        """Load the latest version if it is newer than the one served; True when it was swapped in."""
        if self.pinned:
            return False
        have = self._store.versions()
        latest = have[-1] if have else 0
        if latest <= self.current.version or latest == self._failed:
            return False
        old = self.current
        try:
            new = await asyncio.to_thread(
                load_library,
                self.folder,
                version=latest,
                retrieval=old.retrieval,
                include_proposed=self.include_proposed,
            )
        except Exception as exc:  # keep serving the old version; a later version may fix it
            self._failed = latest
            logger.warning("Library %s v%d not loaded (still serving v%d): %s", self.folder, latest, old.version, exc)
            return False
        self.current = new
        logger.info(
            "Library %s: now serving v%d (%d strategies; was v%d)",
            self.folder,
            new.version,
            len(new.strategies),
            old.version,
        )
        return True

    async def watch(self, interval_s: float = 2.0) -> None:
        """Call `refresh` every `interval_s` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await self.refresh()
