"""Retrieval by embeddings: cosine similarity between the situation and each strategy's situation.

`EmbeddingRetriever` implements the `Retriever` protocol (and `asearch`, its async form) over
any `Embedder`: the offline `BertEmbedder` (all-MiniLM-L6-v2 in numpy) or `OpenAIEmbedder`
(an OpenAI-compatible `/v1/embeddings` endpoint).

What is embedded for a strategy is its *situation* alone ("When the customer repeats a
complaint about a late parcel"), not its guidance: the query is a situation too (the scenario and
the last lines of the dialogue), so like is compared with like. The guidance says what the agent
should do, in words that a conversation where it does not apply can share ("refund", "apologise"),
which pulls unrelated strategies up; `EmbeddingRetriever(text=...)` can change that.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol, cast

import numpy as np
from numpy.typing import NDArray

from coachlab.schema import AuditStatus, Strategy

__all__ = ["Embedder", "EmbeddingRetriever", "strategy_situation"]

_CACHE_SIZE = 8192
_QUERY_CACHE_SIZE = 4096


class Embedder(Protocol):
    """Turns texts into unit vectors, one row per text; a dot product of two rows is their cosine."""

    @property
    def key(self) -> str:
        """Identifies the vector space (model and settings): vectors with equal keys are comparable."""
        ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """The vectors of `texts`, shape `(len(texts), dimensions)`, in the input order."""
        ...

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """`embed` without blocking the event loop."""
        ...


def strategy_situation(strategy: Strategy) -> str:
    """What `EmbeddingRetriever` embeds for a strategy by default: its situation."""
    return strategy.situation


class _VectorCache:
    """Vectors by (embedder key, text), least recently used dropped first.

    One holds strategy vectors, so rebuilding a retriever re-embeds only new strategies; one holds
    query vectors, so a situation met again (the same dialogue prefix in every trial, a retried
    request, a library reloaded) is not embedded again. Either returns the vector the embedder made.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[tuple[str, str], NDArray[np.float32]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str, text: str) -> NDArray[np.float32] | None:
        with self.lock:
            row = self.items.get((key, text))
            if row is not None:
                self.items.move_to_end((key, text))
            return row

    def put(self, key: str, text: str, row: NDArray[np.float32]) -> None:
        with self.lock:
            self.items[key, text] = row
            self.items.move_to_end((key, text))
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def embed(self, embedder: Embedder, texts: Sequence[str]) -> NDArray[np.float32]:
        key = embedder.key
        with self.lock:
            found = {t: self.items.get((key, t)) for t in texts}
        missing = [t for t, row in found.items() if row is None]
        if missing:
            found.update(zip(missing, embedder.embed(missing), strict=True))
        with self.lock:
            for text, row in found.items():
                if row is not None:
                    self.items[key, text] = row
                    self.items.move_to_end((key, text))
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return np.stack([cast(NDArray[np.float32], found[t]) for t in texts])


_CACHE = _VectorCache(_CACHE_SIZE)
_QUERIES = _VectorCache(_QUERY_CACHE_SIZE)


class EmbeddingRetriever:
    """Ranks approved strategies by the cosine similarity of their embedding with the situation's.

    The strategies are embedded once, when the retriever is built (through a per-process cache,
    so a retriever rebuilt for a grown library embeds only the new ones); each search embeds the
    situation, unless the same situation was embedded lately (a per-process cache of query vectors
    by embedder and text: the vector is the one the embedder made, so a hit ranks exactly as a
    miss). `search` calls the embedder in the calling thread; `asearch` (what
    `retrieval_guidance`, the AutoGen memory and `coachlab serve` use) does not block the event
    loop, and the offline model batches concurrent searches into shared forward passes.

    Scores are cosine similarities (at most 1). Measured with all-MiniLM-L6-v2 on short
    customer-service situations: the matching strategy scored 0.47 to 0.70, other strategies of
    the same library up to about 0.45, and situations from another domain below 0.3. A `floor` of
    about 0.4 drops the unrelated ones and `k` bounds the rest; check it on your own library.

    Args:
        strategies: The library's strategies; only approved ones are ever returned.
        embedder: Makes the vectors (`BertEmbedder`, `OpenAIEmbedder`, or any `Embedder`).
        text: What to embed for a strategy (its situation by default).
    """

    def __init__(
        self,
        strategies: Sequence[Strategy],
        embedder: Embedder,
        *,
        text: Callable[[Strategy], str] = strategy_situation,
    ) -> None:
        self.strategies = [s for s in strategies if s.status is AuditStatus.APPROVED]
        self.embedder = embedder
        self.matrix = _CACHE.embed(embedder, [text(s) for s in self.strategies]) if self.strategies else None

    def _rank(self, query: NDArray[np.float32], k: int, floor: float) -> list[tuple[Strategy, float]]:
        if self.matrix is None:
            return []
        scores = self.matrix @ query
        order: list[int] = np.argsort(-scores, kind="stable")[:k].tolist()
        hits = [(self.strategies[i], float(scores[i])) for i in order]
        return [(s, score) for s, score in hits if score >= floor and score > 0]

    def search(self, situation: str, *, k: int, floor: float) -> list[tuple[Strategy, float]]:
        """The top `k` approved strategies with a cosine similarity of at least `floor`, best first."""
        if self.matrix is None or k <= 0:
            return []
        key = self.embedder.key
        query = _QUERIES.get(key, situation)
        if query is None:
            query = self.embedder.embed([situation])[0]
            _QUERIES.put(key, situation, query)
        return self._rank(query, k, floor)

    async def asearch(self, situation: str, *, k: int, floor: float) -> list[tuple[Strategy, float]]:
        """`search` without blocking the event loop (the embedder's `aembed`)."""
        if self.matrix is None or k <= 0:
            return []
        key = self.embedder.key
        query = _QUERIES.get(key, situation)
        if query is None:
            query = (await self.embedder.aembed([situation]))[0]
            _QUERIES.put(key, situation, query)
        return self._rank(query, k, floor)
