"""Retrieval hit rate: on held-out scenarios, did the library show strategies learned on the same situation?

A scenario may name its `situation` (a slug shared by the training and held-out cases of one
recurring problem: `stalled-tracking`, `bill-shock`...). A strategy was learned on the situation of
the scenario its provenance names (a child node of the scenario tree counts as its root training
scenario; a strategy that absorbed near-duplicates was learned on theirs too). Over the agent turns
of the `library` condition on held-out scenarios that have a situation, `retrieval_hit_rate` counts:

- **shown**: turns where retrieval put at least one strategy in the agent's prompt;
- **hit**: turns where at least one shown strategy was learned on the scenario's situation;
- **available**: turns whose situation has an approved strategy learned on it at all: the ceiling
  of the hit rate (retrieval cannot find what training never wrote).

Every library episode counts, scored or not (retrieval ran in each of its agent turns). The
figures say whether a held-out gain or its absence comes from retrieval: a low hit rate under a
high ceiling is retrieval's fault; a low ceiling is training's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from coachlab.explorer.tree import ScenarioTree
from coachlab.schema import AgentMessage, Episode, Provenance, Scenario, Strategy, StrategyShown

__all__ = [
    "RetrievalHitRate",
    "hit_rate_line",
    "learned_situations",
    "retrieval_hit_rate",
    "situations_by_origin",
]


class RetrievalHitRate(BaseModel):
    """Retrieval on the held-out scenarios, for one student's `library` condition (module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    student: str
    scenarios: int = Field(description="Held-out scenarios with a situation that the library condition ran.")
    turns: int = Field(description="Agent turns of those scenarios' library episodes.")
    shown: int = Field(description="Turns where at least one strategy was shown.")
    hits: int = Field(description="Turns where a shown strategy was learned on a scenario of the same situation.")
    available: int = Field(
        description="Turns whose situation has an approved strategy learned on it (the ceiling of `hits`)."
    )

    @property
    def shown_rate(self) -> float | None:
        """Share of turns with a strategy shown."""
        return self.shown / self.turns if self.turns else None

    @property
    def hit_rate(self) -> float | None:
        """Share of turns with a same-situation strategy shown."""
        return self.hits / self.turns if self.turns else None

    @property
    def ceiling(self) -> float | None:
        """Share of turns for which the library held a same-situation strategy."""
        return self.available / self.turns if self.turns else None


def situations_by_origin(scenarios: Iterable[Scenario], tree: ScenarioTree | None = None) -> dict[str, str]:
    """The situation of every scenario id and tree node id that has one.

    A tree node without a situation of its own takes its root's (from the tree, else from
    `scenarios` by the root's id): a tree trained before scenarios had situations still maps.
    """
    out = {s.id: s.situation for s in scenarios if s.situation is not None}
    if tree is not None:
        for node in tree.nodes():
            root = tree.root_of(node.id)
            found = node.scenario.situation or root.scenario.situation or out.get(root.id)
            if found is not None:
                out[node.id] = found
                out.setdefault(node.scenario.id, found)
    return out


def _situation_of(provenance: Provenance | None, situations: Mapping[str, str]) -> str | None:
    if provenance is None:
        return None
    for key in (provenance.node_id, provenance.scenario_id):
        if key is not None and key in situations:
            return situations[key]
    return None


def learned_situations(strategies: Iterable[Strategy], situations: Mapping[str, str]) -> dict[str, frozenset[str]]:
    """Per strategy id: the situations it was learned on (its provenance and that of the candidates merged into it).

    Args:
        strategies: The library's strategies.
        situations: Situation by scenario id and node id (`situations_by_origin`).
    """
    out: dict[str, frozenset[str]] = {}
    for s in strategies:
        found = {_situation_of(p, situations) for p in (s.provenance, *(m.provenance for m in s.merged))}
        out[s.id] = frozenset(x for x in found if x is not None)
    return out


def _agent_turns(episode: Episode) -> tuple[set[int], dict[int, list[str]]]:
    """The turns the agent model spoke (or was shown strategies for), and the strategies shown per turn."""
    turns = {e.turn for e in episode.events if isinstance(e, AgentMessage) and e.origin == "model"}
    shown = {e.turn: e.strategy_ids for e in episode.events if isinstance(e, StrategyShown) and e.strategy_ids}
    return turns | set(shown), shown


def retrieval_hit_rate(
    episodes: Sequence[Episode],
    *,
    student: str,
    situations: Mapping[str, str],
    learned_in: Mapping[str, Collection[str]],
    strategy_ids: Iterable[str],
) -> RetrievalHitRate | None:
    """The retrieval hit rate of `student`'s library condition; None when no held-out scenario has a situation.

    Args:
        episodes: The evaluation's episodes (every condition and student; only `library` ones count).
        student: The student measured.
        situations: The held-out scenarios' situations, by scenario id (those without one are left out).
        learned_in: Per strategy id, the situations it was learned on (`learned_situations`).
        strategy_ids: The approved strategies the library condition could show (the ceiling's pool).
    """
    if not situations:
        return None
    pool: set[str] = set()
    for sid in strategy_ids:
        pool.update(learned_in.get(sid, ()))
    ran: set[str] = set()
    turns = shown = hits = available = 0
    for e in episodes:
        situation = situations.get(e.scenario_id)
        if e.condition != "library" or e.agent_model != student or situation is None:
            continue
        ran.add(e.scenario_id)
        agent_turns, by_turn = _agent_turns(e)
        for turn in agent_turns:
            ids = by_turn.get(turn, [])
            turns += 1
            shown += bool(ids)
            hits += any(situation in learned_in.get(i, ()) for i in ids)
            available += situation in pool
    return RetrievalHitRate(
        student=student, scenarios=len(ran), turns=turns, shown=shown, hits=hits, available=available
    )


def _share(count: int, rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.0f}% ({count})"


def hit_rate_line(student: str, hit: RetrievalHitRate | None) -> str:
    """One line on `student`'s retrieval hit rate (n/a when no held-out scenario has a situation)."""
    if hit is None:
        return (
            f"Retrieval hit rate for {student}: n/a (no held-out scenario has a `situation`; give scenarios of one "
            "situation the same one to measure it)."
        )
    return (
        f"Retrieval hit rate for {student} (library condition, {hit.turns} agent turns of {hit.scenarios} held-out "
        f"scenario(s) with a situation): a strategy shown in {_share(hit.shown, hit.shown_rate)}; one learned on "
        f"the same situation in {_share(hit.hits, hit.hit_rate)}; the library holds one for the situation in "
        f"{_share(hit.available, hit.ceiling)} (the ceiling)."
    )
