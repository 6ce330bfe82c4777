"""Near-duplicate strategies: the same advice found again at another failure.

Train compares each strategy it admits with the library's approved and proposed ones (and those
admitted just before it) on their situation and guidance together: with the run's retriever's
embedder the cosine similarity, with the lexical retriever the Jaccard similarity of their content
words (`content_words`). At or above the threshold the newcomer is merged into the strategy it
repeats: that one keeps its text, status and evidence, and records the newcomer's origin and
evidence (`Strategy.merged`), so both origins stay visible in `coachlab library show`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from coachlab.library.retrieval import LexicalRetriever, RetrievalConfig, content_words
from coachlab.schema import MergedOrigin, Strategy

if TYPE_CHECKING:
    from coachlab.library.dense import Embedder

__all__ = [
    "DEFAULT_COSINE",
    "DEFAULT_JACCARD",
    "embedder_for",
    "find_duplicate",
    "jaccard",
    "merge_into",
    "strategy_text",
]

DEFAULT_COSINE = 0.9
"""Default merge threshold on embedding cosine similarity."""

DEFAULT_JACCARD = 0.7
"""Default merge threshold on content-word Jaccard similarity (the lexical retriever)."""


def strategy_text(strategy: Strategy) -> str:
    """What is compared: the situation and the guidance."""
    return f"{strategy.situation} {strategy.guidance}"


def jaccard(a: str, b: str) -> float:
    """Shared content words over all content words of the two texts (0 when both have none)."""
    x, y = content_words(a), content_words(b)
    return len(x & y) / len(x | y) if x | y else 0.0


def embedder_for(config: RetrievalConfig) -> Embedder | None:
    """The embedder of the retriever `config` builds, or None for the lexical retriever.

    Raises:
        UsageError: The retriever cannot be built here (see `make_retriever`).
    """
    retriever = config.retriever([])
    if isinstance(retriever, LexicalRetriever):
        return None
    from coachlab.library.dense import EmbeddingRetriever

    return retriever.embedder if isinstance(retriever, EmbeddingRetriever) else None


async def find_duplicate(
    candidate: Strategy, others: Sequence[Strategy], *, embedder: Embedder | None, threshold: float | None = None
) -> tuple[Strategy, float] | None:
    """The strategy of `others` most similar to `candidate` when at least `threshold`, with its similarity.

    Args:
        candidate: The newcomer.
        others: What it may repeat.
        embedder: Cosine similarity of its vectors; None: content-word Jaccard.
        threshold: Default `DEFAULT_COSINE` with an embedder, `DEFAULT_JACCARD` without.
    """
    if not others:
        return None
    texts = [strategy_text(s) for s in others]
    if embedder is None:
        scores = [jaccard(strategy_text(candidate), t) for t in texts]
        floor = DEFAULT_JACCARD if threshold is None else threshold
    else:
        vectors = await embedder.aembed([strategy_text(candidate), *texts])
        scores = [float(x) for x in (vectors[1:] @ vectors[0]).tolist()]
        floor = DEFAULT_COSINE if threshold is None else threshold
    best = max(range(len(others)), key=lambda i: scores[i])
    return (others[best], scores[best]) if scores[best] >= floor else None


def merge_into(target: Strategy, candidate: Strategy, similarity: float) -> Strategy:
    """`target` with `candidate`'s origin and evidence recorded (replacing an earlier record of the same candidate)."""
    origin = MergedOrigin(
        candidate_id=candidate.id,
        situation=candidate.situation,
        guidance=candidate.guidance,
        similarity=round(similarity, 4),
        provenance=candidate.provenance,
        evidence=candidate.evidence,
    )
    kept = [m for m in target.merged if m.candidate_id != candidate.id]
    return target.model_copy(update={"merged": [*kept, origin]})
