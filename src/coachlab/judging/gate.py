"""The similarity gate: a judge's "yes" about a line counts only if the line resembles the item's example.

Measured on 32 labelled items with the embedded 1.5B judge: per-line questions alone were right on
72% of items, and 84% with this gate (MiniLM cosine >= 0.45 to one example agent line written for
the criterion). The gate turns away the judge's agreeable "yes" to lines about something else, and
spares the question for lines that cannot count. A line's similarity to an item is its best cosine
to any of the item's example lines (`Criterion.all_examples`), so good service in other words than
the first example can pass it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from coachlab.errors import UsageError
from coachlab.library.dense import Embedder
from coachlab.library.embedding import DEFAULT_EMBEDDING_MODEL, load_embedder

__all__ = ["EmbeddingSimilarity", "Similarity", "load_gate"]

logger = logging.getLogger(__name__)


class Similarity(Protocol):
    """Scores how alike two texts are (cosine, at most 1)."""

    async def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per (text, other) pair."""
        ...


class EmbeddingSimilarity:
    """Cosine similarity of sentence embeddings (all-MiniLM-L6-v2 offline by default), with a vector cache."""

    def __init__(self, embedder: Embedder, *, cache_size: int = 4096) -> None:
        self.embedder = embedder
        self.cache_size = cache_size
        self._vectors: dict[str, NDArray[np.float32]] = {}

    async def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One cosine per pair (the vectors are L2-normalised, so a dot product)."""
        texts = sorted({t for pair in pairs for t in pair} - self._vectors.keys())
        if texts:
            if len(self._vectors) + len(texts) > self.cache_size:
                self._vectors.clear()
            for text, vector in zip(texts, await self.embedder.aembed(texts), strict=True):
                self._vectors[text] = vector
        return [float(self._vectors[a] @ self._vectors[b]) for a, b in pairs]


def load_gate(kind: Literal["auto", "embedding", "off"], *, model: str = DEFAULT_EMBEDDING_MODEL) -> Similarity | None:
    """The checklist's similarity gate for the `judge.gate` setting (`auto`: when the offline model is fetched).

    Raises:
        UsageError: `embedding` was asked for and the offline embedding model cannot run here.
    """
    if kind == "off":
        return None
    from coachlab.library.retrieval import embedding_unavailable

    why_not = embedding_unavailable(model)
    if why_not is not None:
        if kind == "embedding":
            raise UsageError(f"judge.gate: embedding needs the offline embedding model, but {why_not}.")
        logger.warning("Checklist grading without the similarity gate (less accurate), because %s", why_not)
        return None
    return EmbeddingSimilarity(load_embedder(model))
