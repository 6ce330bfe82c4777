"""Retrieval at deployment: which approved strategies fit the service agent's situation now.

The situation is the conversation alone, the last lines of the dialogue (`situation_text`): what a
deployed agent has too (production traffic has no scenario title, and never the persona's private
fields), so what simulation measures is what `coachlab.library.coaching` runs in production.
`LexicalRetriever` (BM25) needs nothing installed and is the fallback; `EmbeddingRetriever`
(`coachlab.library.dense`) plugs in through the same `Retriever` protocol, and `make_retriever`
picks one by name.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from coachlab.errors import UsageError
from coachlab.library.openai_embedder import OpenAIEmbedderConfig
from coachlab.schema import AuditStatus, Dialogue, Guidance, GuidanceProvider, Scenario, Strategy

__all__ = [
    "MAX_LINE_CHARS",
    "AsyncRetriever",
    "LexicalRetriever",
    "Placement",
    "RetrievalConfig",
    "Retriever",
    "RetrieverKind",
    "content_words",
    "default_floor",
    "embedding_unavailable",
    "make_retriever",
    "resolve_retriever_kind",
    "retrieval_guidance",
    "situation_text",
]

logger = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z0-9']+")
_STOP_WORDS = (
    "a an the and or but if of to in on at for with from by is are was were be been it its this that "
    "i you he she we they me my your our their them us do does did not no so as can could would will "
    "just have has had what when how there here than then about into please customer agent"
)
_STOP = frozenset(_STOP_WORDS.split())


def _tokens(text: str) -> list[str]:
    return [w.rstrip("'s") or w for w in _WORD.findall(text.lower()) if w not in _STOP]


def content_words(text: str) -> set[str]:
    """The words BM25 retrieval matches on: lower-cased, stop words dropped, a trailing 's' cut."""
    return set(_tokens(text))


MAX_LINE_CHARS = 1000
"""A line of the situation is cut here (a 1 MB message must not cost a 1 MB query)."""


def situation_text(dialogue: Dialogue, *, last: int = 4) -> str:
    """The retrieval query: the last `last` lines of the dialogue, `who: text` one a line.

    `who` is `customer` or `agent`. The same function builds the query in simulation (per agent
    turn) and in production (`coachlab.library.coaching.situation_from_messages`), so what was
    measured is what runs. Whitespace inside a line is collapsed to single spaces and a line is
    cut at `MAX_LINE_CHARS`.
    """
    recent = dialogue[-last:] if last > 0 else ()
    return "\n".join(f"{who}: {' '.join(text.split())[:MAX_LINE_CHARS]}" for who, text in recent)


class Retriever(Protocol):
    """Finds the strategies that fit a situation."""

    def search(self, situation: str, *, k: int, floor: float) -> list[tuple[Strategy, float]]:
        """The top `k` approved strategies scoring at least `floor` (0..1), best first."""
        ...


@runtime_checkable
class AsyncRetriever(Retriever, Protocol):
    """A retriever whose search can wait on I/O (an embedding endpoint) without blocking the loop.

    `retrieval_guidance` awaits `asearch` when a retriever has it and calls `search` otherwise.
    """

    async def asearch(self, situation: str, *, k: int, floor: float) -> list[tuple[Strategy, float]]:
        """`search`, awaitable."""
        ...


class LexicalRetriever:
    """BM25 over each strategy's situation (weighted double) and guidance.

    A strategy's score is divided by the score it would get against its own words, i.e. the share
    of the strategy's weight that the situation covers, so a `floor` in 0..1 reads the same for
    short and long situations and across libraries.

    Args:
        strategies: The library's strategies; only approved ones are ever returned.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
    """

    def __init__(self, strategies: Sequence[Strategy], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.strategies = [s for s in strategies if s.status is AuditStatus.APPROVED]
        self.k1, self.b = k1, b
        self.docs = [Counter(_tokens(f"{s.situation} {s.situation} {s.guidance}")) for s in self.strategies]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = (sum(self.lengths) / len(self.lengths)) if self.lengths else 1.0
        n = len(self.docs)
        df: Counter[str] = Counter(t for d in self.docs for t in d)
        self.idf = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
        self.self_scores = [self._score(list(d), i) for i, d in enumerate(self.docs)]

    def _score(self, query: list[str], i: int) -> float:
        doc, length = self.docs[i], self.lengths[i]
        total = 0.0
        for term in query:
            tf = doc.get(term, 0)
            if tf:
                norm = tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * length / self.avg))
                total += self.idf[term] * norm
        return total

    def search(self, situation: str, *, k: int, floor: float) -> list[tuple[Strategy, float]]:
        """The best-matching approved strategies (see `Retriever.search`)."""
        query = list(dict.fromkeys(_tokens(situation)))
        scored = [
            (self.strategies[i], self._score(query, i) / self.self_scores[i])
            for i in range(len(self.docs))
            if self.self_scores[i] > 0
        ]
        hits = [(s, score) for s, score in scored if score >= floor and score > 0]
        return sorted(hits, key=lambda x: -x[1])[:k]


def retrieval_guidance(retriever: Retriever, *, k: int = 3, floor: float = 0.1) -> GuidanceProvider:
    """A per-turn guidance provider for the episode runner (`run_episode(guidance=...)`).

    An `AsyncRetriever` is awaited (`asearch`); a plain `Retriever` is called (`search`).
    """

    async def provide(_: Scenario, dialogue: Dialogue) -> Sequence[Guidance]:
        situation = situation_text(dialogue)
        if isinstance(retriever, AsyncRetriever):
            hits = await retriever.asearch(situation, k=k, floor=floor)
        else:
            hits = retriever.search(situation, k=k, floor=floor)
        return [s.as_guidance(score) for s, score in hits]

    return provide


RetrieverKind = Literal["auto", "embedding", "lexical", "openai"]
"""How `make_retriever` retrieves: `auto` is `embedding` when it can run here, else `lexical`."""

_KINDS: tuple[RetrieverKind, ...] = ("auto", "embedding", "lexical", "openai")
_INSTALL = "pip install numpy tokenizers"


def _missing_packages() -> list[str]:
    return [name for name in ("numpy", "tokenizers") if importlib.util.find_spec(name) is None]


def embedding_unavailable(model: str | os.PathLike[str]) -> str | None:
    """Why the offline embedding model cannot run here (missing packages or weights), or None."""
    from coachlab.llm.weights import catalog, is_fetched

    missing = _missing_packages()
    if missing:
        return f"the package(s) {', '.join(missing)} are not installed ({_INSTALL})"
    text = os.fspath(model)
    if text in catalog():
        return None if is_fetched(text) else f"{text} is not fetched (coachlab models fetch {text})"
    return None if Path(text).expanduser().is_dir() else f"{text} is not a model folder"


def resolve_retriever_kind(kind: RetrieverKind, *, model: str | os.PathLike[str] = "all-minilm-l6-v2") -> RetrieverKind:
    """The kind `make_retriever` builds: `auto` becomes `embedding` or `lexical`, and the choice is logged.

    Call it once when a run starts (and pass its answer to `make_retriever`) to log the choice
    once and keep it fixed for the whole run.

    Raises:
        UsageError: An unknown kind.
    """
    if kind not in _KINDS:
        raise UsageError(f"Unknown retriever kind {kind!r}: use one of {', '.join(_KINDS)}.")
    if kind != "auto":
        return kind
    why_not = embedding_unavailable(model)
    if why_not is not None:
        logger.info("Retrieval: lexical (BM25), because %s", why_not)
        return "lexical"
    logger.info("Retrieval: embedding (%s)", os.fspath(model))
    return "embedding"


def make_retriever(
    kind: RetrieverKind,
    strategies: Sequence[Strategy],
    *,
    model: str | os.PathLike[str] = "all-minilm-l6-v2",
    endpoint: OpenAIEmbedderConfig | None = None,
) -> Retriever:
    """The retriever of a kind, over the library's strategies (only approved ones are returned).

    - `lexical`: BM25 (`LexicalRetriever`); needs nothing.
    - `embedding`: `EmbeddingRetriever` over the offline `model` (numpy; loaded once per process).
    - `openai`: `EmbeddingRetriever` over an OpenAI-compatible embeddings `endpoint`.
    - `auto`: `embedding` when numpy and tokenizers are installed and `model` is fetched, else
      `lexical`; the choice is logged (INFO).

    Floors differ by kind: BM25 scores are shares of a strategy's words (0.1 is the default of
    `retrieval_guidance`); embedding scores are cosine similarities, where about 0.4 separates
    paraphrases from unrelated problems with all-MiniLM-L6-v2.

    Args:
        kind: `auto`, `embedding`, `lexical` or `openai`.
        strategies: The library's strategies.
        model: The offline embedding model: a catalog name or a sentence-transformers folder.
        endpoint: The embeddings endpoint; required for `openai`.

    Raises:
        UsageError: An unknown kind; `embedding` when the packages or the weights are missing (the
            message names the command that fixes it); `openai` without an endpoint or its key.
    """
    kind = resolve_retriever_kind(kind, model=model)
    if kind == "lexical":
        return LexicalRetriever(strategies)
    if kind == "openai":
        if endpoint is None:
            raise UsageError("The openai retriever needs an endpoint (OpenAIEmbedderConfig: model, base_url, ...).")
        if importlib.util.find_spec("numpy") is None:
            raise UsageError("The openai retriever needs the numpy package: pip install numpy")
        from coachlab.library.dense import EmbeddingRetriever
        from coachlab.library.openai_embedder import OpenAIEmbedder

        return EmbeddingRetriever(strategies, OpenAIEmbedder(endpoint))
    missing = _missing_packages()
    if missing:
        raise UsageError(f"The embedding retriever needs the package(s) {', '.join(missing)}: {_INSTALL}")
    from coachlab.library.dense import EmbeddingRetriever
    from coachlab.library.embedding import load_embedder

    return EmbeddingRetriever(strategies, load_embedder(model))


def default_floor(retriever: Retriever) -> float:
    """The floor `RetrievalConfig` uses when none is set: 0.1 for BM25 (share of words), 0.4 for cosines."""
    return 0.1 if isinstance(retriever, LexicalRetriever) else 0.4


Placement = Literal["system", "before_last", "reminder"]
"""Where the strategies shown in a turn sit in the service agent's messages (`RetrievalConfig.placement`).

- `system`: the coaching block at the end of the system prompt;
- `before_last`: the block in a system message of its own, right before the customer's last line;
- `reminder`: the block at the end of the system prompt, and the best strategy again, as one line in a
  system message right before the customer's last line.
"""


class RetrievalConfig(BaseModel):
    """The `retrieval:` section of an experiment: how the service agent finds strategies per turn.

    `coachlab serve` and `CoachingLibrary` read the same section from the run, so production finds
    and places strategies as simulation did.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RetrieverKind = Field(
        default="auto", description="auto (embedding when fetched, else lexical), embedding, lexical or openai."
    )
    k: int = Field(default=3, ge=1, le=20, description="Strategies shown per turn, at most.")
    floor: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Lowest score shown; default per kind: 0.1 for lexical (share of words), 0.4 for embeddings.",
    )
    model: str = Field(default="all-minilm-l6-v2", description="The offline embedding model (catalog name or folder).")
    endpoint: OpenAIEmbedderConfig | None = Field(default=None, description="The embeddings endpoint for `openai`.")
    placement: Placement = Field(
        default="system",
        description="Where the strategies sit in the agent's messages: system (end of the system prompt), before_last "
        "(a system message right before the customer's last line) or reminder (both: the block in the system prompt "
        "and the best strategy as one line before the customer's last line).",
    )

    def retriever(self, strategies: Sequence[Strategy]) -> Retriever:
        """The retriever over `strategies` (see `make_retriever`)."""
        return make_retriever(self.kind, strategies, model=self.model, endpoint=self.endpoint)

    def floor_for(self, kind: RetrieverKind) -> float:
        """The floor in effect for a resolved `kind`: `floor`, else 0.1 for lexical and 0.4 for embeddings."""
        if self.floor is not None:
            return self.floor
        return 0.1 if kind == "lexical" else 0.4

    def resolved(self) -> RetrievalConfig:
        """This config with `auto` replaced by the kind it picks here (see `resolve_retriever_kind`).

        A run resolves it once and keeps it, so the kind it records is the kind it uses throughout.
        """
        return self.model_copy(update={"kind": resolve_retriever_kind(self.kind, model=self.model)})

    def provider(self, strategies: Sequence[Strategy]) -> GuidanceProvider:
        """A per-turn guidance provider over `strategies`, with the floor of the kind actually used."""
        retriever = self.retriever(strategies)
        floor = self.floor if self.floor is not None else default_floor(retriever)
        return retrieval_guidance(retriever, k=self.k, floor=floor)
