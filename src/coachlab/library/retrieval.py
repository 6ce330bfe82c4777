"""Retrieval at deployment: which approved strategies fit the service agent's situation now.

The situation is what the agent itself knows: the scenario's title and domain and the dialogue so
far (never the persona's private fields). `LexicalRetriever` (BM25) needs nothing installed and is
the fallback; an embedding retriever plugs in through the same `Retriever` protocol.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from coachlab.schema import AuditStatus, Guidance, Scenario, Strategy

__all__ = ["LexicalRetriever", "Retriever", "retrieval_guidance", "situation_text"]

_WORD = re.compile(r"[a-z0-9']+")
_STOP_WORDS = (
    "a an the and or but if of to in on at for with from by is are was were be been it its this that "
    "i you he she we they me my your our their them us do does did not no so as can could would will "
    "just have has had what when how there here than then about into please customer agent"
)
_STOP = frozenset(_STOP_WORDS.split())


def _tokens(text: str) -> list[str]:
    return [w.rstrip("'s") or w for w in _WORD.findall(text.lower()) if w not in _STOP]


def situation_text(scenario: Scenario, dialogue: Sequence[tuple[str, str]], *, last: int = 4) -> str:
    """The service agent's situation: scenario title, domain and the last `last` lines."""
    lines = [f"{who}: {text}" for who, text in dialogue[-last:]]
    return "\n".join([f"{scenario.domain}: {scenario.title}", *lines])


class Retriever(Protocol):
    """Finds the strategies that fit a situation."""

    def search(self, situation: str, *, k: int, floor: float) -> list[tuple[Strategy, float]]:
        """The top `k` approved strategies scoring at least `floor` (0..1), best first."""
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


def retrieval_guidance(
    retriever: Retriever, *, k: int = 3, floor: float = 0.1
) -> Callable[[Scenario, Sequence[tuple[str, str]]], Awaitable[Sequence[Guidance]]]:
    """A per-turn guidance provider for the episode runner (`run_episode(guidance=...)`)."""

    async def provide(scenario: Scenario, dialogue: Sequence[tuple[str, str]]) -> Sequence[Guidance]:
        hits = retriever.search(situation_text(scenario, dialogue), k=k, floor=floor)
        return [s.as_guidance(score) for s, score in hits]

    return provide
