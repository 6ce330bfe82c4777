"""The evaluation report: per student and condition, the outcomes with confidence intervals and gap closed.

Gap closed is (library - baseline) / (teacher - baseline) and the share of the ceiling
(library - baseline) / (oracle - baseline), both on the primary outcome, task success (satisfaction
when the scenarios have no checklist), and each is None when its ceiling is no better than the
baseline. Every arm's difference from the baseline, paired by seed, is reported beside them. Items
met (the share of checklist items met per episode) is the secondary outcome beside it: one missed
item of five fails task success, so when no condition succeeds, items met is what can still show an
effect.

Confidence intervals resample scenarios, then trials within each drawn scenario (episodes of one
scenario are not independent), jointly across conditions for gap closed. Episodes the simulated
customer spoiled are counted in every row and never scored. The report also gives the smallest
difference in task success the run could detect (80% power, 95% confidence), and per strategy what
it did where it was shown (`coachlab.experiments.effects`; with `ablate`, a leave-one-out run of the
library without each approved strategy, conditions `ablate-<id>`, beside it), and how often retrieval
showed a strategy learned on the held-out scenario's own situation (`coachlab.experiments.hit_rate`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from coachlab.experiments.config import EvaluateConfig
from coachlab.experiments.effects import StrategyEffect, strategy_effects
from coachlab.experiments.hit_rate import RetrievalHitRate, retrieval_hit_rate
from coachlab.judging.calibration import CalibrationReport
from coachlab.schema import Episode, RoleUsage, TerminationReason, Verdict
from coachlab.stats import Estimate, clustered_bootstrap, min_detectable_difference, paired_differences

__all__ = [
    "ConditionResult",
    "Contrast",
    "EvaluationReport",
    "Price",
    "StudentResult",
    "role_entry",
    "summarize_evaluation",
]

Price = tuple[float, float]
"""A model entry's estimated price per 1,000 prompt and completion tokens."""


class ConditionResult(BaseModel):
    """One row of the evaluation table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    condition: str
    agent_model: str
    episodes: int
    judged: int
    infrastructure_errors: int = Field(
        default=0, description="Episodes that ended on an infrastructure error: never scored, re-run by --retry-failed."
    )
    judge_errors: int = Field(default=0, description="Episodes the judge could not score (unreadable output).")
    simulator_faults: int = Field(default=0, description="Episodes the simulated customer spoiled: never scored.")
    task_success: Estimate = Field(
        default_factory=lambda: Estimate(mean=None, low=None, high=None, n=0),
        description="Share of scored episodes with every must item met and no policy item broken (primary).",
    )
    items_met: Estimate = Field(
        default_factory=lambda: Estimate(mean=None, low=None, high=None, n=0),
        description="Mean over scored episodes of the share of checklist items met (a forbidden item is met when not "
        "broken): the secondary outcome, which moves when task success is 0 everywhere.",
    )
    satisfaction: Estimate
    pass_k: float | None = Field(
        description="Share of scenarios whose every trial succeeded (task success; without a checklist, satisfaction "
        "at the threshold)."
    )
    policy_rate: float | None = Field(default=None, description="Share of scored episodes that broke no policy item.")
    split_votes: float | None = Field(
        default=None, description="With judge.votes > 1: share of checklist items on which the votes disagreed."
    )
    resolved_rate: float | None
    usage: dict[str, RoleUsage] = Field(description="By role: calls and tokens (cached calls included).")
    cost: dict[str, float] = Field(
        default_factory=lambda: {}, description="By role: estimated price of the tokens (the model entries' prices)."
    )

    @property
    def tokens_per_episode(self) -> float:
        """All roles' tokens divided by episodes."""
        return sum(u.total_tokens for u in self.usage.values()) / self.episodes if self.episodes else 0.0

    @property
    def total_cost(self) -> float:
        """All roles' estimated price."""
        return sum(self.cost.values())


class Contrast(BaseModel):
    """One condition against the baseline for one student, paired by (scenario, trial) seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    condition: str
    minus_baseline: Estimate = Field(
        description="The condition's primary outcome minus the baseline's, with a CI that resamples scenarios, then "
        "trials."
    )
    minus_baseline_items: Estimate | None = Field(
        default=None, description="The same on items met (0-1 scale); None without a checklist."
    )


class StudentResult(BaseModel):
    """A student's rows, the share of the teacher gap and of the oracle ceiling the library closes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    student: str
    rows: list[ConditionResult]
    gap_closed: Estimate = Field(description="On the primary outcome (task success, else satisfaction).")
    gap_closed_satisfaction: Estimate | None = Field(default=None, description="On satisfaction, beside it.")
    library_minus_baseline: Estimate = Field(
        default_factory=lambda: Estimate(mean=None, low=None, high=None, n=0),
        description="Paired by (scenario, trial) seed: the library's primary outcome minus the baseline's, with a "
        "CI that resamples scenarios, then trials (above 0 at its lower bound: the library helped).",
    )
    gap_closed_items: Estimate | None = Field(
        default=None, description="On items met, beside it; None without a checklist."
    )
    library_minus_baseline_items: Estimate = Field(
        default_factory=lambda: Estimate(mean=None, low=None, high=None, n=0),
        description="As library_minus_baseline, on items met (0-1 scale).",
    )
    share_of_ceiling: Estimate | None = Field(
        default=None,
        description="(library - baseline) / (oracle - baseline) on the primary outcome over the paired trials, with a "
        "clustered CI (mean None when the oracle is no better than the baseline); None unless both arms ran.",
    )
    share_of_ceiling_items: Estimate | None = Field(
        default=None, description="As share_of_ceiling, on items met; None without a checklist."
    )
    contrasts: list[Contrast] = Field(
        default_factory=list[Contrast],
        description="Every condition but the baseline (and ablations) minus the baseline, in the order they ran.",
    )
    strategies: list[StrategyEffect] = Field(
        default_factory=list[StrategyEffect],
        description="Per strategy: retrieved how often in the library condition, and its effect (see effects).",
    )
    retrieval: RetrievalHitRate | None = Field(
        default=None,
        description="Retrieval hit rate on the held-out scenarios with a situation (see hit_rate); None when none "
        "has one or the library condition did not run.",
    )


class EvaluationReport(BaseModel):
    """Everything `evaluate` reports (saved as results.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    students: list[StudentResult]
    teacher: ConditionResult | None
    infrastructure_errors: int = Field(default=0, description="All rows' episodes that ended on infrastructure errors.")
    judge_errors: int = Field(default=0, description="All rows' episodes the judge could not score.")
    simulator_faults: int = Field(default=0, description="All rows' episodes the simulated customer spoiled.")
    primary: Literal["task_success", "satisfaction"] = Field(
        default="satisfaction", description="The outcome gap closed is computed on."
    )
    retired: list[str] = Field(
        default_factory=list[str],
        description="Strategies this evaluation retired in the library (harmful; evidence in their audit trail).",
    )
    min_detectable_difference: float | None = Field(
        default=None, description="Smallest difference in the primary outcome this run's size could detect."
    )
    calibration: CalibrationReport | None = Field(
        default=None, description="The judge's figures on the labelled set (coachlab judge calibrate), if measured."
    )
    library_version: int
    package_version: str
    experiment: str = Field(description="The experiment file as run (keys stay ${VAR} references).")
    fingerprint: str | None = Field(
        default=None, description="The fingerprint of the run's resolved config (resolved.json, evaluate)."
    )


def role_entry(role: str, agent_model: str) -> str:
    """The model entry that played `role` in an episode whose service agent was `agent_model`."""
    return agent_model if role == "agent" else role


def _row(
    condition: str,
    model: str,
    episodes: Sequence[Episode],
    threshold: int,
    seed: int,
    prices: Mapping[str, Price],
) -> ConditionResult:
    scored = [e for e in episodes if e.scored and e.verdict is not None]
    satisfaction: dict[str, list[float]] = defaultdict(list)
    success: dict[str, list[float]] = defaultdict(list)
    items: dict[str, list[float]] = defaultdict(list)
    for e in scored:
        if e.verdict is not None:
            satisfaction[e.scenario_id].append(float(e.verdict.satisfaction))
            if e.verdict.task_success is not None:
                success[e.scenario_id].append(float(e.verdict.task_success))
            if e.verdict.items_met is not None:
                items[e.scenario_id].append(e.verdict.items_met)
    usage: dict[str, RoleUsage] = defaultdict(RoleUsage)
    for e in episodes:
        for role, u in e.usage.items():
            usage[role] = usage[role] + u
    if success:
        pass_k = sum(all(v == 1.0 for v in vals) for vals in success.values()) / len(success)
    elif satisfaction:
        pass_k = sum(all(s >= threshold for s in v) for v in satisfaction.values()) / len(satisfaction)
    else:
        pass_k = None
    verdicts = [e.verdict for e in scored if e.verdict is not None]
    return ConditionResult(
        condition=condition,
        agent_model=model,
        episodes=len(episodes),
        judged=len(scored),
        infrastructure_errors=sum(e.termination is TerminationReason.INFRASTRUCTURE_ERROR for e in episodes),
        judge_errors=sum(
            e.judge_error is not None and e.termination is not TerminationReason.INFRASTRUCTURE_ERROR for e in episodes
        ),
        simulator_faults=sum(e.simulator_fault is not None for e in episodes),
        task_success=clustered_bootstrap(success, seed=seed),
        items_met=clustered_bootstrap(items, seed=seed),
        satisfaction=clustered_bootstrap(satisfaction, seed=seed),
        pass_k=pass_k,
        policy_rate=sum(v.policy_followed for v in verdicts) / len(verdicts) if verdicts else None,
        split_votes=_split(verdicts),
        resolved_rate=sum(v.resolved for v in verdicts) / len(verdicts) if verdicts else None,
        usage=dict(usage),
        cost={role: _price(u, prices.get(role_entry(role, model), (0.0, 0.0))) for role, u in usage.items()},
    )


def _split(verdicts: Sequence[Verdict]) -> float | None:
    items = [r for v in verdicts if v.votes > 1 for r in v.criteria]
    return sum(r.split for r in items) / len(items) if items else None


def _price(usage: RoleUsage, price: Price) -> float:
    return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1000


def _gap_closed(
    baseline: dict[tuple[str, int], float],
    library: dict[tuple[str, int], float],
    teacher: dict[tuple[str, int], float],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Gap closed over the (scenario, trial) keys all three conditions scored, with a clustered bootstrap CI.

    The three conditions share each key's seed, so a resample draws whole keys: scenarios first,
    then trials within each drawn scenario.
    """
    keys = sorted(set(baseline) & set(library) & set(teacher))
    if not keys:
        return Estimate(mean=None, low=None, high=None, n=0)
    by_scenario: dict[str, list[float]] = defaultdict(list)
    for scenario, trial in keys:
        by_scenario[scenario].append(float(trial))

    def gap(sample: Mapping[str, Sequence[float]]) -> float | None:
        drawn = [(k.split(":", 1)[-1], int(t)) for k, trials in sample.items() for t in trials]
        b = sum(baseline[k] for k in drawn) / len(drawn)
        lib = sum(library[k] for k in drawn) / len(drawn)
        t = sum(teacher[k] for k in drawn) / len(drawn)
        return None if t - b <= 0 else (lib - b) / (t - b)

    est = clustered_bootstrap(by_scenario, statistic=gap, resamples=resamples, seed=seed)
    return est.model_copy(update={"n": len(keys)})


def summarize_evaluation(
    episodes: Sequence[Episode],
    config: EvaluateConfig,
    *,
    library_version: int,
    package_version: str,
    experiment: str,
    prices: Mapping[str, Price] | None = None,
    calibration: CalibrationReport | None = None,
    strategy_ids: Sequence[str] = (),
    situations: Mapping[str, str] | None = None,
    learned_in: Mapping[str, Collection[str]] | None = None,
) -> EvaluationReport:
    """The evaluation table: per student and condition, gap closed, per-strategy effects and retrieval hit rate.

    `prices` maps model entry names to their price per 1,000 prompt / completion tokens (default 0);
    `calibration` is the judge's measured agreement with labels, printed beside the results;
    `strategy_ids` are the strategies the library condition could show, listed even when never shown;
    `situations` are the held-out scenarios' situations by scenario id and `learned_in` the situations each
    strategy was learned on (`coachlab.experiments.hit_rate`): together they give the retrieval hit rate.
    """
    prices = prices or {}
    by: dict[tuple[str, str], list[Episode]] = defaultdict(list)
    for e in episodes:
        by[(e.condition, e.agent_model)].append(e)

    checklist = any(e.verdict is not None and e.verdict.task_success is not None for e in episodes)
    primary: Literal["task_success", "satisfaction"] = "task_success" if checklist else "satisfaction"
    outcomes = ("task_success", "items_met", "satisfaction") if checklist else ("satisfaction",)

    def scores(condition: str, model: str, *, on: str = primary) -> dict[tuple[str, int], float]:
        out: dict[tuple[str, int], float] = {}
        for e in by.get((condition, model), []):
            v = e.verdict
            if not e.scored or v is None:
                continue
            if on == "task_success":
                if v.task_success is not None:
                    out[(e.scenario_id, e.trial)] = float(v.task_success)
            elif on == "items_met":
                if v.items_met is not None:
                    out[(e.scenario_id, e.trial)] = v.items_met
            else:
                out[(e.scenario_id, e.trial)] = float(v.satisfaction)
        return out

    def contrast(condition: str, student: str) -> Contrast:
        scale = 1.0 if primary == "task_success" else 0.1  # satisfaction (1-10) on a 0-1 scale
        diffs = paired_differences(scores("baseline", student), scores(condition, student), scale=scale)
        items = paired_differences(
            scores("baseline", student, on="items_met"), scores(condition, student, on="items_met")
        )
        return Contrast(
            condition=condition,
            minus_baseline=clustered_bootstrap(diffs, seed=config.seed),
            minus_baseline_items=clustered_bootstrap(items, seed=config.seed) if checklist else None,
        )

    teacher_eps = by.get(("teacher", config.teacher), [])
    teacher_row = (
        _row("teacher", config.teacher, teacher_eps, config.threshold, config.seed, prices) if teacher_eps else None
    )
    students: list[StudentResult] = []
    paired: dict[str, list[float]] = defaultdict(list)
    for student in config.students:
        rows = [
            _row(c, student, by[(c, student)], config.threshold, config.seed, prices)
            for c in config.conditions
            if c != "teacher" and (c, student) in by
        ]
        gaps = {
            on: _gap_closed(
                scores("baseline", student, on=on),
                scores("library", student, on=on),
                scores("teacher", config.teacher, on=on),
                seed=config.seed,
            )
            for on in outcomes
        }
        shares = (
            {
                on: _gap_closed(
                    scores("baseline", student, on=on),
                    scores("library", student, on=on),
                    scores("oracle", student, on=on),
                    seed=config.seed,
                )
                for on in outcomes
            }
            if {"library", "oracle"} <= {r.condition for r in rows}
            else {}
        )
        diffs = paired_differences(
            scores("baseline", student), scores("library", student), scale=1.0 if primary == "task_success" else 0.1
        )
        for scenario, values in diffs.items():
            paired[scenario].extend(values)
        diffs_items = paired_differences(
            scores("baseline", student, on="items_met"), scores("library", student, on="items_met")
        )
        ran = [r.condition for r in rows]
        contrasts = (
            [contrast(c, student) for c in ran if c != "baseline" and not c.startswith("ablate-")]
            if "baseline" in ran
            else []
        )
        effects: list[StrategyEffect] = []
        hit_rate: RetrievalHitRate | None = None
        if "library" in config.conditions:
            effects = strategy_effects(
                episodes,
                student=student,
                primary=primary,
                strategy_ids=strategy_ids,
                min_episodes=config.retire_min_episodes,
                seed=config.seed,
            )
            hit_rate = retrieval_hit_rate(
                episodes,
                student=student,
                situations=situations or {},
                learned_in=learned_in or {},
                strategy_ids=strategy_ids,
            )
        students.append(
            StudentResult(
                student=student,
                rows=rows,
                gap_closed=gaps[primary],
                gap_closed_satisfaction=gaps["satisfaction"] if primary != "satisfaction" else None,
                library_minus_baseline=clustered_bootstrap(diffs, seed=config.seed),
                gap_closed_items=gaps.get("items_met"),
                library_minus_baseline_items=clustered_bootstrap(diffs_items, seed=config.seed),
                share_of_ceiling=shares.get(primary),
                share_of_ceiling_items=shares.get("items_met"),
                contrasts=contrasts,
                strategies=effects,
                retrieval=hit_rate,
            )
        )
    rows = [r for s in students for r in s.rows] + ([teacher_row] if teacher_row is not None else [])
    return EvaluationReport(
        students=students,
        teacher=teacher_row,
        infrastructure_errors=sum(r.infrastructure_errors for r in rows),
        judge_errors=sum(r.judge_errors for r in rows),
        simulator_faults=sum(r.simulator_faults for r in rows),
        primary=primary,
        min_detectable_difference=min_detectable_difference(paired, paired=True),
        calibration=calibration,
        library_version=library_version,
        package_version=package_version,
        experiment=experiment,
    )
