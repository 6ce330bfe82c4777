"""Per-strategy effect and harm on the held-out scenarios, and retiring the strategies that do harm.

Every episode logs the strategies its agent was shown, turn by turn (`StrategyShown`). For each
strategy and student, over the `library` condition's episodes, `strategy_effects` reports:

- how often it was retrieved (episodes and turns);
- task success, items met (the share of checklist items met, which moves when task success is 0
  everywhere) and satisfaction in the episodes where it was shown and in those where it was not,
  and the difference (shown minus not shown) with a CI that resamples scenarios, then episodes
  (`coachlab.stats.clustered_difference`);
- the library minus the baseline on the same seeds, over the episodes where it was shown (when the
  `baseline` condition ran): this compares each episode with itself without any library, so a
  strategy that is retrieved only on hard scenarios is not blamed for their difficulty;
- with `evaluate.ablate`, the leave-one-out figure: the library minus the library without this
  strategy, on the same seeds (the only figure that separates it from the strategies shown beside it).

A strategy is **harmful** when, on the primary outcome (task success; satisfaction without a
checklist), the shown-minus-not-shown CI lies below 0 over at least `retire_min_episodes` scored
episodes where it was shown, and the paired comparison with the baseline (when it ran) lies below 0
too. `retire_harmful` marks such strategies `retired` in the library with the numbers in the audit
trail: never deleted, never served again, and a person can approve one again.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from coachlab.library import LibraryStore, LibraryVersion
from coachlab.schema import AuditStatus, Episode, StrategyShown
from coachlab.stats import Estimate, clustered_bootstrap, clustered_difference, paired_differences

__all__ = [
    "ABLATE_PREFIX",
    "RETIRED_BY",
    "StrategyEffect",
    "ablation_condition",
    "effects_markdown",
    "only_retired_since",
    "retire_harmful",
    "shown_strategies",
    "strategy_effects",
]

ABLATE_PREFIX = "ablate-"
"""The condition of a leave-one-out episode is this prefix and the id of the strategy left out."""

RETIRED_BY = "evaluate"
"""Who retires a strategy in its audit trail."""

_NONE = Estimate(mean=None, low=None, high=None, n=0)


def ablation_condition(strategy_id: str) -> str:
    """The condition name of the library without `strategy_id` (`evaluate.ablate`)."""
    return f"{ABLATE_PREFIX}{strategy_id}"


class StrategyEffect(BaseModel):
    """What one strategy did for one student on the held-out scenarios (the `library` condition)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy_id: str
    student: str
    primary: Literal["task_success", "satisfaction"] = Field(description="The outcome `effect` and harm are on.")
    episodes: int = Field(description="Library-condition episodes in which it was shown at least once.")
    turns: int = Field(description="Agent turns it was shown in, over those episodes.")
    success_shown: Estimate = _NONE
    success_not_shown: Estimate = _NONE
    success_effect: Estimate = Field(default=_NONE, description="Task success shown minus not shown (0-1 scale).")
    items_shown: Estimate = _NONE
    items_not_shown: Estimate = _NONE
    items_effect: Estimate = Field(
        default=_NONE, description="Items met shown minus not shown (0-1 scale); reported, never a reason to retire."
    )
    satisfaction_shown: Estimate = _NONE
    satisfaction_not_shown: Estimate = _NONE
    satisfaction_effect: Estimate = Field(default=_NONE, description="Satisfaction shown minus not shown (points).")
    vs_baseline: Estimate | None = Field(
        default=None,
        description="Primary outcome, library minus baseline on the same seeds, over the episodes where it was shown "
        "(None when the baseline did not run).",
    )
    ablation: Estimate | None = Field(
        default=None,
        description="Primary outcome, library minus the library without it on the same seeds (evaluate.ablate); "
        "above 0: it helps.",
    )
    harmful: bool = Field(default=False, description="Negative with confidence by the retirement rule (module doc).")

    @property
    def effect(self) -> Estimate:
        """Shown minus not shown on the primary outcome."""
        return self.success_effect if self.primary == "task_success" else self.satisfaction_effect

    @property
    def shown(self) -> Estimate:
        """The primary outcome in the episodes where it was shown."""
        return self.success_shown if self.primary == "task_success" else self.satisfaction_shown

    @property
    def not_shown(self) -> Estimate:
        """The primary outcome in the library episodes where it was not shown."""
        return self.success_not_shown if self.primary == "task_success" else self.satisfaction_not_shown

    @property
    def direction(self) -> Literal["helps", "harms", "unclear"]:
        """The sign of the effect when its CI excludes 0, else unclear."""
        e = self.effect
        if e.low is not None and e.low > 0:
            return "helps"
        if e.high is not None and e.high < 0:
            return "harms"
        return "unclear"

    def evidence(self) -> str:
        """One line of numbers: what the audit trail of a retired strategy says."""
        measure = "task success" if self.primary == "task_success" else "satisfaction"
        line = (
            f"{self.student}: {measure} {_mean(self.shown)} in {self.shown.n} scored episodes shown vs "
            f"{_mean(self.not_shown)} in {self.not_shown.n} not shown; effect {self.effect} (95% CI, scenarios "
            "then episodes)"
        )
        if self.vs_baseline is not None:
            line += f"; library minus baseline where shown {self.vs_baseline}"
        if self.ablation is not None:
            line += f"; library minus library without it {self.ablation}"
        return line


def _mean(e: Estimate) -> str:
    return "n/a" if e.mean is None else f"{e.mean:.2f}"


def shown_strategies(episode: Episode) -> Counter[str]:
    """The strategies shown to the agent in `episode`: id -> agent turns it was shown in."""
    counts: Counter[str] = Counter()
    for event in episode.events:
        if isinstance(event, StrategyShown):
            counts.update(dict.fromkeys(event.strategy_ids, 1))
    return counts


def _outcomes(episodes: Iterable[Episode], on: str) -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    for e in episodes:
        v = e.verdict
        if not e.scored or v is None:
            continue
        if on == "satisfaction":
            out[(e.scenario_id, e.trial)] = float(v.satisfaction)
        elif on == "items_met":
            if v.items_met is not None:
                out[(e.scenario_id, e.trial)] = v.items_met
        elif v.task_success is not None:
            out[(e.scenario_id, e.trial)] = float(v.task_success)
    return out


def _split(
    scores: Mapping[tuple[str, int], float], shown: set[tuple[str, int]]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Scores per scenario, in the episodes where a strategy was shown and in those where it was not."""
    yes: dict[str, list[float]] = defaultdict(list)
    no: dict[str, list[float]] = defaultdict(list)
    for key, value in sorted(scores.items()):
        (yes if key in shown else no)[key[0]].append(value)
    return yes, no


def strategy_effects(
    episodes: Sequence[Episode],
    *,
    student: str,
    primary: Literal["task_success", "satisfaction"],
    strategy_ids: Iterable[str] = (),
    min_episodes: int = 4,
    seed: int = 0,
) -> list[StrategyEffect]:
    """Per strategy shown to `student` in the `library` condition (and every one of `strategy_ids`): its figures.

    Args:
        episodes: All the evaluation's episodes (every condition and student).
        student: The student whose library episodes are measured.
        primary: The outcome the effect and harm are judged on.
        strategy_ids: Strategies to list even when never shown (the library's approved ones).
        min_episodes: Scored episodes where a strategy was shown before it can be found harmful.
        seed: The bootstrap seed.

    Returns:
        The figures, most retrieved first.
    """
    library = [e for e in episodes if e.condition == "library" and e.agent_model == student]
    by_condition: dict[str, list[Episode]] = defaultdict(list)
    for e in episodes:
        if e.agent_model == student:
            by_condition[e.condition].append(e)
    shown: dict[str, set[tuple[str, int]]] = defaultdict(set)
    turns: Counter[str] = Counter()
    for e in library:
        for sid, n in shown_strategies(e).items():
            shown[sid].add((e.scenario_id, e.trial))
            turns[sid] += n
    success, satisfaction = _outcomes(library, "task_success"), _outcomes(library, "satisfaction")
    items = _outcomes(library, "items_met")
    scores = success if primary == "task_success" else satisfaction
    baseline = _outcomes(by_condition.get("baseline", []), primary)
    effects: list[StrategyEffect] = []
    for sid in sorted(set(shown) | set(strategy_ids)):
        keys = shown.get(sid, set())
        s_yes, s_no = _split(success, keys)
        i_yes, i_no = _split(items, keys)
        f_yes, f_no = _split(satisfaction, keys)
        vs_baseline = None
        if baseline:
            where = {k: v for k, v in scores.items() if k in keys}
            vs_baseline = clustered_bootstrap(paired_differences(baseline, where), seed=seed)
        ablated = by_condition.get(ablation_condition(sid))
        ablation = (
            clustered_bootstrap(paired_differences(_outcomes(ablated, primary), scores), seed=seed) if ablated else None
        )
        effect = StrategyEffect(
            strategy_id=sid,
            student=student,
            primary=primary,
            episodes=len(keys),
            turns=turns[sid],
            success_shown=clustered_bootstrap(s_yes, seed=seed),
            success_not_shown=clustered_bootstrap(s_no, seed=seed),
            success_effect=clustered_difference(s_yes, s_no, seed=seed),
            items_shown=clustered_bootstrap(i_yes, seed=seed),
            items_not_shown=clustered_bootstrap(i_no, seed=seed),
            items_effect=clustered_difference(i_yes, i_no, seed=seed),
            satisfaction_shown=clustered_bootstrap(f_yes, seed=seed),
            satisfaction_not_shown=clustered_bootstrap(f_no, seed=seed),
            satisfaction_effect=clustered_difference(f_yes, f_no, seed=seed),
            vs_baseline=vs_baseline,
            ablation=ablation,
        )
        effects.append(effect.model_copy(update={"harmful": _harmful(effect, min_episodes)}))
    return sorted(effects, key=lambda e: (-e.episodes, e.strategy_id))


def _below_zero(e: Estimate) -> bool:
    return e.high is not None and e.high < 0


def _harmful(effect: StrategyEffect, min_episodes: int) -> bool:
    """The retirement rule (module doc)."""
    if effect.shown.n < min_episodes or not _below_zero(effect.effect):
        return False
    baseline = effect.vs_baseline
    return baseline is None or baseline.mean is None or _below_zero(baseline)


def retire_harmful(
    store: LibraryStore, effects: Sequence[StrategyEffect], *, evaluated: LibraryVersion
) -> dict[str, str]:
    """Mark every harmful strategy `retired` in one new library version, its numbers in the audit trail.

    Only strategies still approved with the text that was evaluated are retired (one edited or
    decided on by a person since keeps that person's decision). Nothing is written when none is.

    Args:
        store: The run's library.
        effects: `strategy_effects` of every student.
        evaluated: The library version the evaluation ran against.

    Returns:
        The retired strategies: id -> the evidence written in the audit trail.
    """
    latest = {s.id: s for s in store.load().strategies}
    measured = {s.id: s for s in evaluated.strategies}
    why: dict[str, list[str]] = defaultdict(list)
    for e in effects:
        now, then = latest.get(e.strategy_id), measured.get(e.strategy_id)
        if not e.harmful or now is None or then is None or now.status is not AuditStatus.APPROVED:
            continue
        if (now.situation, now.guidance) == (then.situation, then.guidance):
            why[e.strategy_id].append(e.evidence())
    if not why:
        return {}
    reasons = {
        sid: f"harmful on the held-out scenarios (library v{evaluated.version}): " + " | ".join(lines)
        for sid, lines in sorted(why.items())
    }
    store.set_statuses(reasons, AuditStatus.RETIRED, by=RETIRED_BY, note=f"evaluate retired {', '.join(reasons)}")
    return reasons


def only_retired_since(old: LibraryVersion, new: LibraryVersion) -> bool:
    """True when `new` is `old` but for strategies evaluate retired (the library an evaluation measured)."""
    before = {s.id: s for s in old.strategies}
    after = {s.id: s for s in new.strategies}
    if before.keys() != after.keys():
        return False
    for sid, a in before.items():
        b = after[sid]
        extra = b.audit[len(a.audit) :]
        if b.audit[: len(a.audit)] != a.audit or b.model_copy(update={"audit": a.audit}) != a:
            return False
        if any(entry.status is not AuditStatus.RETIRED or entry.by != RETIRED_BY for entry in extra):
            return False
    return True


def _pct(e: Estimate) -> str:
    return "n/a" if e.mean is None else f"{100 * e.mean:.0f}%"


def _est(e: Estimate | None) -> str:
    return "-" if e is None else str(e)


def effects_markdown(effects: Sequence[StrategyEffect], *, retired: Iterable[str] = ()) -> list[str]:
    """A table of per-strategy figures (one student's or several), Markdown lines."""
    if not effects:
        return []
    gone = set(retired)
    out = [
        "| student | strategy | shown in episodes (turns) | task success shown / not | effect [95% CI] "
        "| items met shown / not | effect [95% CI] | satisfaction shown / not | effect [95% CI] "
        "| library - baseline where shown | leave-one-out | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in effects:
        verdict = "retired" if e.strategy_id in gone and e.harmful else ("harmful" if e.harmful else e.direction)
        out.append(
            f"| {e.student} | {e.strategy_id} | {e.episodes} ({e.turns}) | {_pct(e.success_shown)} / "
            f"{_pct(e.success_not_shown)} | {e.success_effect} | {_pct(e.items_shown)} / {_pct(e.items_not_shown)} | "
            f"{e.items_effect} | {_mean(e.satisfaction_shown)} / "
            f"{_mean(e.satisfaction_not_shown)} | {e.satisfaction_effect} | {_est(e.vs_baseline)} | "
            f"{_est(e.ablation)} | {verdict} |"
        )
    return out
