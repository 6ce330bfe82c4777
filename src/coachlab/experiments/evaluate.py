"""`evaluate`: held-out scenarios under every condition, for every student, with gap closed.

Conditions: `baseline` (no strategies), `generic` (one fixed list of the library's strongest
guidance, no retrieval), `library` (per-turn retrieval of approved strategies) and `teacher` (the
teacher as the agent: the ceiling). Trial i of a scenario has the same seed under every
condition, so conditions are compared on paired customer randomness. Gap closed is
(library - baseline) / (teacher - baseline), with a bootstrap CI that resamples (scenario, trial)
pairs jointly across conditions.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from coachlab.environments import GuidanceProvider
from coachlab.experiments.simulate import EpisodePlan
from coachlab.library import RetrievalConfig
from coachlab.schema import AuditStatus, Episode, Guidance, RoleUsage, Scenario, Strategy, TerminationReason
from coachlab.stats import Estimate, bootstrap_mean, seed_for

__all__ = [
    "CONDITIONS",
    "ConditionResult",
    "EvaluateConfig",
    "EvaluationReport",
    "Price",
    "StudentResult",
    "evaluation_plans",
    "generic_guidance",
    "summarize_evaluation",
    "to_markdown",
]

Price = tuple[float, float]
"""A model entry's estimated price per 1,000 prompt and completion tokens."""

Condition = Literal["baseline", "generic", "library", "teacher"]
CONDITIONS: tuple[Condition, ...] = ("baseline", "generic", "library", "teacher")


class EvaluateConfig(BaseModel):
    """The `evaluate:` section of an experiment file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenarios: list[str] = Field(min_length=1, description="Held-out scenario ids (never used by train).")
    students: list[str] = Field(default_factory=lambda: ["student"], description="Students: the transfer matrix.")
    teacher: str = "teacher"
    conditions: list[Condition] = Field(default_factory=lambda: list(CONDITIONS))
    trials: int = Field(default=4, ge=1, le=1000)
    generic_size: int = Field(default=5, ge=1, description="Strategies in the generic condition's fixed list.")
    threshold: int = Field(default=7, ge=1, le=10, description="pass^k threshold.")
    seed: int = 0


def generic_guidance(strategies: Sequence[Strategy], size: int) -> GuidanceProvider:
    """The `generic` condition: the same strongest approved strategies every turn, no retrieval."""
    approved = [s for s in strategies if s.status is AuditStatus.APPROVED]
    ranked = sorted(approved, key=lambda s: -s.evidence.gain if s.evidence else 0.0)[:size]
    fixed = [s.as_guidance() for s in ranked]

    async def provide(_: Scenario, __: Sequence[tuple[str, str]]) -> Sequence[Guidance]:
        return fixed

    return provide


def evaluation_plans(
    config: EvaluateConfig,
    scenarios: Sequence[Scenario],
    strategies: Sequence[Strategy],
    retrieval: RetrievalConfig | None = None,
) -> list[EpisodePlan]:
    """Every (scenario, trial) under every condition and student; the teacher once per (scenario, trial)."""
    library = (retrieval or RetrievalConfig()).provider(strategies)
    generic = generic_guidance(strategies, config.generic_size)
    guidance: dict[str, GuidanceProvider | None] = {"baseline": None, "generic": generic, "library": library}
    plans: list[EpisodePlan] = []
    for trial in range(config.trials):
        for scenario in scenarios:
            seed = seed_for(config.seed, "evaluate", scenario.id, trial)
            for condition in config.conditions:
                if condition == "teacher":
                    plans.append(EpisodePlan(scenario, config.teacher, "teacher", trial, seed))
                    continue
                for student in config.students:
                    plans.append(EpisodePlan(scenario, student, condition, trial, seed, guidance[condition]))
    return plans


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
    satisfaction: Estimate
    pass_k: float | None = Field(description="Share of scenarios whose every trial reached the threshold.")
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


class StudentResult(BaseModel):
    """A student's rows and the share of the teacher gap the library closes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    student: str
    rows: list[ConditionResult]
    gap_closed: Estimate


class EvaluationReport(BaseModel):
    """Everything `evaluate` reports (saved as results.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    students: list[StudentResult]
    teacher: ConditionResult | None
    infrastructure_errors: int = Field(default=0, description="All rows' episodes that ended on infrastructure errors.")
    judge_errors: int = Field(default=0, description="All rows' episodes the judge could not score.")
    library_version: int
    package_version: str
    experiment: str = Field(description="The experiment file as run (keys stay ${VAR} references).")


def _role_model(role: str, agent_model: str) -> str:
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
    judged = [e for e in episodes if e.verdict is not None]
    scores = [float(e.verdict.satisfaction) for e in judged if e.verdict is not None]
    by_scenario: dict[str, list[float]] = defaultdict(list)
    for e in judged:
        if e.verdict is not None:
            by_scenario[e.scenario_id].append(float(e.verdict.satisfaction))
    usage: dict[str, RoleUsage] = defaultdict(RoleUsage)
    for e in episodes:
        for role, u in e.usage.items():
            usage[role] = usage[role] + u
    return ConditionResult(
        condition=condition,
        agent_model=model,
        episodes=len(episodes),
        judged=len(judged),
        infrastructure_errors=sum(e.termination is TerminationReason.INFRASTRUCTURE_ERROR for e in episodes),
        judge_errors=sum(
            e.judge_error is not None and e.termination is not TerminationReason.INFRASTRUCTURE_ERROR for e in episodes
        ),
        satisfaction=bootstrap_mean(scores, seed=seed),
        pass_k=(sum(all(s >= threshold for s in v) for v in by_scenario.values()) / len(by_scenario))
        if by_scenario
        else None,
        resolved_rate=(sum(bool(e.verdict and e.verdict.resolved) for e in judged) / len(judged)) if judged else None,
        usage=dict(usage),
        cost={role: _price(u, prices.get(_role_model(role, model), (0.0, 0.0))) for role, u in usage.items()},
    )


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
    keys = sorted(set(baseline) & set(library) & set(teacher))
    if not keys:
        return Estimate(mean=None, low=None, high=None, n=0)

    def gap(sample: Sequence[tuple[str, int]]) -> float | None:
        b = sum(baseline[k] for k in sample) / len(sample)
        lib = sum(library[k] for k in sample) / len(sample)
        t = sum(teacher[k] for k in sample) / len(sample)
        return None if t - b <= 0 else (lib - b) / (t - b)

    point = gap(keys)
    rng = random.Random(seed)
    values = sorted(g for g in (gap(rng.choices(keys, k=len(keys))) for _ in range(resamples)) if g is not None)
    if point is None or not values:
        return Estimate(mean=point, low=None, high=None, n=len(keys))
    low = values[int(0.025 * (len(values) - 1))]
    high = values[int(0.975 * (len(values) - 1))]
    return Estimate(mean=point, low=low, high=high, n=len(keys))


def summarize_evaluation(
    episodes: Sequence[Episode],
    config: EvaluateConfig,
    *,
    library_version: int,
    package_version: str,
    experiment: str,
    prices: Mapping[str, Price] | None = None,
) -> EvaluationReport:
    """The evaluation table: per student and condition, and gap closed.

    `prices` maps model entry names to their price per 1,000 prompt / completion tokens (default 0).
    """
    prices = prices or {}
    by: dict[tuple[str, str], list[Episode]] = defaultdict(list)
    for e in episodes:
        by[(e.condition, e.agent_model)].append(e)

    def scores(condition: str, model: str) -> dict[tuple[str, int], float]:
        return {
            (e.scenario_id, e.trial): float(e.verdict.satisfaction)
            for e in by.get((condition, model), [])
            if e.verdict is not None
        }

    teacher_eps = by.get(("teacher", config.teacher), [])
    teacher_row = (
        _row("teacher", config.teacher, teacher_eps, config.threshold, config.seed, prices) if teacher_eps else None
    )
    students: list[StudentResult] = []
    for student in config.students:
        rows = [
            _row(c, student, by[(c, student)], config.threshold, config.seed, prices)
            for c in config.conditions
            if c != "teacher" and (c, student) in by
        ]
        students.append(
            StudentResult(
                student=student,
                rows=rows,
                gap_closed=_gap_closed(
                    scores("baseline", student),
                    scores("library", student),
                    scores("teacher", config.teacher),
                    seed=config.seed,
                ),
            )
        )
    rows = [r for s in students for r in s.rows] + ([teacher_row] if teacher_row is not None else [])
    return EvaluationReport(
        students=students,
        teacher=teacher_row,
        infrastructure_errors=sum(r.infrastructure_errors for r in rows),
        judge_errors=sum(r.judge_errors for r in rows),
        library_version=library_version,
        package_version=package_version,
        experiment=experiment,
    )


def _money(x: float) -> str:
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def _errors_line(report: EvaluationReport) -> str:
    """How many episodes were not scored, and why (n counts judged / run episodes)."""
    if not report.infrastructure_errors and not report.judge_errors:
        return "Every episode was judged: no infrastructure errors, no judge errors."
    return (
        f"Not scored: {report.infrastructure_errors} episode(s) ended on infrastructure errors (a backend failed "
        f"for good; re-run them with --resume --retry-failed) and {report.judge_errors} the judge could not read. "
        "Neither counts as a customer verdict."
    )


def to_markdown(report: EvaluationReport) -> str:
    """The evaluation table as Markdown, then tokens and estimated cost per role."""
    out = [
        "| student | condition | n | satisfaction (95% CI) | pass^k | resolved | infra / judge errors | tokens/episode "
        "| est. cost |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f}%"

    def line(student: str, r: ConditionResult) -> str:
        return (
            f"| {student} | {r.condition} | {r.judged}/{r.episodes} | {r.satisfaction} | {pct(r.pass_k)} | "
            f"{pct(r.resolved_rate)} | {r.infrastructure_errors} / {r.judge_errors} | {r.tokens_per_episode:,.0f} | "
            f"{_money(r.total_cost)} |"
        )

    rows = [(s.student, r) for s in report.students for r in s.rows]
    if report.teacher is not None:
        rows.append((report.teacher.agent_model, report.teacher))
    out += [line(student, r) for student, r in rows]
    out += ["", _errors_line(report)]
    out += [
        "",
        "Tokens and estimated cost per role (cached calls count: they are what the condition costs to run):",
        "",
        "| student | condition | role | model | calls | prompt tokens | completion tokens | est. cost |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for student, r in rows:
        for role, u in sorted(r.usage.items()):
            out.append(
                f"| {student} | {r.condition} | {role} | {_role_model(role, r.agent_model)} | {u.calls:,} | "
                f"{u.prompt_tokens:,} | {u.completion_tokens:,} | {_money(r.cost.get(role, 0.0))} |"
            )
    out.append("")
    for s in report.students:
        out.append(f"Gap closed by the library for {s.student}: {s.gap_closed} over {s.gap_closed.n} paired trials.")
    out.append(f"Library version {report.library_version}; coachlab {report.package_version}.")
    return "\n".join(out) + "\n"
