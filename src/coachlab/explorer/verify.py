"""Verification: does a candidate strategy make the student better on the scenario it came from?

Three criteria, chosen in YAML (`verify.criterion`):

- `uplift`: the student runs k fresh trials of the scenario with the candidate in its prompt and
  k without, trial i of both arms sharing its seed (so the customer's randomness is paired). Each
  episode's score is its task success, then (on a tie) the share of checklist items met
  (`Verdict.score`; satisfaction without a checklist).
- `checklist`: at the failure point, the student replies k times with the candidate and k times
  without; each reply is graded on the checklist items the failed rollout missed (one met: +1,
  a forbidden one broken: -1). Cheap: one reply and a few yes/no questions per trial.
- `imitation` (the paper's "until the student mimics the teacher"): at the failure point, the
  student replies k times with the candidate and k times without; the judge compares each reply
  with the teacher's reply there (in both orders across trials, against position bias); a pair
  scores 1 when the student's reply is rated at least as good as the teacher's.

Every criterion decides with the same test, which a handful of lucky trials cannot pass: an exact
one-sided test on the paired differences, ties dropped, at `1 - confidence`: `test: sign-flip`
(the default, `coachlab.stats.sign_flip_test`) weighs each difference by its size, so two more
items met count for more than one; `test: sign` counts only which side won
(`coachlab.stats.sign_test`). Both need at least `min_pairs` scored pairs and a mean difference of
at least `min_effect`. All untied pairs in favour give p = 0.5**n under either test, so at 95%
confidence at least 5 untied pairs are needed whatever `trials` says; with `trials: 6`, 5 of 6
better and none worse passes (p = 0.031); under the sign test 5 better and 1 worse does not
(p = 0.109). A candidate whose arm broke a policy item
more often than the arm without it is rejected, whatever else it raised.

Every decision keeps its numbers as `Evidence`. With `concurrency` above 1 the trials of both arms
run that many at once; their results are taken in trial order, so the decision and its numbers are
those of a run one trial at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from coachlab.environments import EpisodeRunner
from coachlab.explorer._parallel import in_order
from coachlab.schema import (
    AgentMessage,
    Criterion,
    Dialogue,
    Episode,
    Evidence,
    Guidance,
    GuidanceProvider,
    Line,
    RoleUsage,
    Scenario,
)
from coachlab.stats import SignTest, paired_uplift, sign_flip_test, sign_test

__all__ = [
    "ChecklistArm",
    "ImitationArm",
    "VerificationResult",
    "VerifyConfig",
    "checklist_arm",
    "imitation_arm",
    "missed_items",
    "verify_checklist",
    "verify_guidance",
    "verify_imitation",
]

_T = TypeVar("_T")

_Costs = list[tuple[str, RoleUsage]]
"""What one trial of a checklist or imitation arm spent, by role, in the order it was spent."""


class VerifyConfig(BaseModel):
    """How candidates are verified."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int = Field(default=6, ge=2, le=100, description="Fresh paired trials per arm.")
    criterion: Literal["uplift", "checklist", "imitation"] = Field(
        default="uplift", description="How a candidate is measured (see coachlab.explorer.verify)."
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="The test passes at p <= 1 - this.")
    # The sign-flip test uses how much better each pair was; on 16 paired replies the quickstart's
    # candidates that lifted missed items 0.3 -> 0.6-1.0 per reply missed the sign test (p = 0.07-0.15).
    test: Literal["sign-flip", "sign"] = Field(
        default="sign-flip",
        description="The paired test: sign-flip (exact, on the sizes of the differences) or sign (which side won).",
    )
    min_pairs: int = Field(default=5, ge=1, le=100, description="Scored pairs needed before any decision to admit.")
    min_effect: float = Field(
        default=0.0, ge=0, description="The mean paired difference must reach this (on the criterion's scale)."
    )
    refine_rounds: int = Field(default=2, ge=0, le=10, description="Teacher rewrites of a rejected candidate.")


@dataclass(frozen=True)
class VerificationResult:
    """The decision on one candidate, with its evidence and what was run for it."""

    accepted: bool
    evidence: Evidence
    without: list[Episode] = field(default_factory=lambda: [])
    with_guidance: list[Episode] = field(default_factory=lambda: [])
    usage: dict[str, RoleUsage] = field(default_factory=lambda: {})
    """Tokens of the replies and comparisons (imitation); episodes carry their own."""


async def verify_guidance(
    runner: EpisodeRunner,
    scenario: Scenario,
    candidate: Guidance,
    *,
    agent_model: str,
    seeds: Sequence[int],
    config: VerifyConfig,
    id_prefix: str,
    without: Sequence[Episode] | None = None,
    base: GuidanceProvider | None = None,
    mentor_model: str | None = None,
    student_share: float = 1.0,
    concurrency: int = 1,
) -> VerificationResult:
    """The `uplift` criterion: run both arms (or reuse `without`, run on the same seeds) and decide.

    `base` is the guidance both arms get (the library's retrieval); the candidate is added on top
    of it in the second arm. Pairs where either episode has no verdict (an infrastructure or judge
    error) are dropped, not scored; fewer than two scored pairs is a rejection. `mentor_model` and
    `student_share` mix the rollouts as in the train loop (the same turns in both arms). Up to
    `concurrency` episodes run at once.
    """

    async def plus_candidate(sc: Scenario, dialogue: Dialogue) -> Sequence[Guidance]:
        shown = list(await base(sc, dialogue)) if base is not None else []
        return [*(g for g in shown if g.id != candidate.id), candidate]

    arms: list[tuple[str, str, GuidanceProvider | None]] = [("with", "candidate", plus_candidate)]
    if without is None:
        arms.insert(0, ("without", "baseline", base))  # run first, as one trial at a time always did
    calls = [
        partial(
            runner.run,
            scenario,
            agent_model=agent_model,
            trial=i,
            seed=seed,
            episode_id=f"{id_prefix}/{name}/{i}",
            condition=condition,
            guidance=guidance,
            mentor_model=mentor_model,
            student_share=student_share,
        )
        for name, condition, guidance in arms
        for i, seed in enumerate(seeds)
    ]
    episodes = await in_order(calls, limit=concurrency)
    with_guidance = episodes[len(episodes) - len(seeds) :]
    if without is None:
        without = episodes[: len(seeds)]
    pairs = [(a.verdict, b.verdict) for a, b in zip(without, with_guidance, strict=True) if a.scored and b.scored]
    scored = [(a, b) for a, b in pairs if a is not None and b is not None]
    test = _paired_test(config, [a.score for a, _ in scored], [b.score for _, b in scored])
    est = paired_uplift([a.score for a, _ in scored], [b.score for _, b in scored], confidence=config.confidence)
    n = len(scored)
    breaks = (sum(not a.policy_followed for a, _ in scored), sum(not b.policy_followed for _, b in scored))
    checklist = n > 0 and all(a.task_success is not None and b.task_success is not None for a, b in scored)
    accepted, why = _decide(test, config, breaks)
    evidence = Evidence(
        trials=n,
        mean_without=sum(a.satisfaction for a, _ in scored) / n if n else None,
        mean_with=sum(b.satisfaction for _, b in scored) / n if n else None,
        uplift_low=est.low,
        uplift_high=est.high,
        criterion="uplift",
        wins=test.wins,
        losses=test.losses,
        ties=test.ties,
        p_value=test.p_value,
        success_without=sum(bool(a.task_success) for a, _ in scored) / n if checklist else None,
        success_with=sum(bool(b.task_success) for _, b in scored) / n if checklist else None,
        policy_breaks_without=breaks[0],
        policy_breaks_with=breaks[1],
        note=f"{'accepted' if accepted else 'rejected'}: {why} (episode scores: {test})",
    )
    return VerificationResult(accepted=accepted, evidence=evidence, without=list(without), with_guidance=with_guidance)


@dataclass(frozen=True)
class ImitationArm:
    """The student's replies at the failure point and the judge's comparisons with the teacher's."""

    replies: list[str]
    at_least_teacher: list[bool | None]
    """Per trial: the judge rated the student's reply at least the teacher's (None: unreadable)."""
    usage: dict[str, RoleUsage]

    @property
    def rate(self) -> float | None:
        """The share of readable comparisons the student's reply held its own, or None."""
        judged = [x for x in self.at_least_teacher if x is not None]
        return sum(judged) / len(judged) if judged else None

    @property
    def judged(self) -> int:
        """How many comparisons could be read."""
        return sum(x is not None for x in self.at_least_teacher)


async def imitation_arm(
    runner: EpisodeRunner,
    scenario: Scenario,
    prefix: list[Line],
    *,
    agent_model: str,
    teacher_reply: str,
    seeds: Sequence[int],
    guidance: Sequence[Guidance] = (),
    concurrency: int = 1,
) -> ImitationArm:
    """The student's reply after `prefix` on each seed, each compared by the judge with `teacher_reply`.

    Odd trials show the student's reply first and even ones second, so the judge's position bias
    cancels out over the arm. Up to `concurrency` trials run at once.
    """
    (arm,) = await _imitation_arms(
        runner,
        scenario,
        prefix,
        [guidance],
        agent_model=agent_model,
        teacher_reply=teacher_reply,
        seeds=seeds,
        concurrency=concurrency,
    )
    return arm


async def _imitation_arms(
    runner: EpisodeRunner,
    scenario: Scenario,
    prefix: list[Line],
    guidances: Sequence[Sequence[Guidance]],
    *,
    agent_model: str,
    teacher_reply: str,
    seeds: Sequence[int],
    concurrency: int,
) -> list[ImitationArm]:
    """An imitation arm per entry of `guidances` (what the student reads), their trials run together."""

    async def trial(i: int, seed: int, guidance: Sequence[Guidance]) -> tuple[str, bool | None, _Costs]:
        reply, cost = await runner.reply_at(scenario, prefix, agent_model=agent_model, seed=seed, guidance=guidance)
        student_first = i % 2 == 1
        first, second = (reply, teacher_reply) if student_first else (teacher_reply, reply)
        comparison, judged = await runner.compare_at(scenario, prefix, first, second, seed=seed)
        costs: _Costs = [*cost.items(), ("judge", judged)]
        if comparison is None:
            return reply, None, costs
        return reply, comparison.better == "same" or (comparison.better == "A") == student_first, costs

    return [
        ImitationArm(
            replies=[reply for reply, _, _ in arm],
            at_least_teacher=[held for _, held, _ in arm],
            usage=_usage(costs for _, _, costs in arm),
        )
        for arm in await _arms(trial, guidances, seeds, concurrency)
    ]


async def verify_imitation(
    runner: EpisodeRunner,
    scenario: Scenario,
    candidate: Guidance,
    prefix: list[Line],
    *,
    agent_model: str,
    teacher_reply: str,
    seeds: Sequence[int],
    config: VerifyConfig,
    base: Sequence[Guidance] = (),
    without: ImitationArm | None = None,
    concurrency: int = 1,
) -> tuple[VerificationResult, ImitationArm]:
    """The `imitation` criterion (see the module doc). Returns the decision and the `without` arm for reuse.

    `base` is what the library retrieves at the failure point (both arms get it); pairs with an
    unreadable comparison are dropped. Up to `concurrency` trials (of either arm) run at once.
    """
    shown = [*(g for g in base if g.id != candidate.id), candidate]
    arms = await _imitation_arms(
        runner,
        scenario,
        prefix,
        [shown] if without is not None else [base, shown],
        agent_model=agent_model,
        teacher_reply=teacher_reply,
        seeds=seeds,
        concurrency=concurrency,
    )
    without, with_ = (without, *arms) if without is not None else arms
    paired = [
        (float(a), float(b))
        for a, b in zip(without.at_least_teacher, with_.at_least_teacher, strict=True)
        if a is not None and b is not None
    ]
    test = _paired_test(config, [a for a, _ in paired], [b for _, b in paired])
    accepted, why = _decide(test, config, (0, 0))
    evidence = Evidence(
        trials=len(paired),
        criterion="imitation",
        preferred_without=without.rate,
        preferred_with=with_.rate,
        wins=test.wins,
        losses=test.losses,
        ties=test.ties,
        p_value=test.p_value,
        note=(
            f"{'accepted' if accepted else 'rejected'}: {why}; student at least the teacher in "
            f"{_share(with_.rate)} of {with_.judged} comparisons with the strategy, {_share(without.rate)} of "
            f"{without.judged} without"
        ),
    )
    return VerificationResult(accepted=accepted, evidence=evidence, usage=with_.usage), without


def _share(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.0%}"


def _paired_test(config: VerifyConfig, without: Sequence[float], with_: Sequence[float]) -> SignTest:
    """The configured exact one-sided test that `with_` beats `without`, pair by pair."""
    return sign_flip_test(without, with_) if config.test == "sign-flip" else sign_test(without, with_)


def _decide(test: SignTest, config: VerifyConfig, policy_breaks: tuple[int, int]) -> tuple[bool, str]:
    """The admission rule shared by every criterion: the sign test, the minimum pairs and effect, and policy."""
    alpha = 1 - config.confidence
    if policy_breaks[1] > policy_breaks[0]:
        return False, f"broke a policy item in {policy_breaks[1]} trials vs {policy_breaks[0]} without"
    if test.pairs < config.min_pairs:
        return False, f"{test.pairs} scored pairs, fewer than min_pairs {config.min_pairs}"
    if test.passes(alpha=alpha, min_effect=config.min_effect, min_pairs=config.min_pairs):
        return True, f"{test.method} test p={test.p_value:.3f} <= {alpha:.2f}"
    if test.mean_difference is not None and test.mean_difference < config.min_effect:
        return False, f"mean difference {test.mean_difference:+.2f} below min_effect {config.min_effect}"
    return False, f"{test.method} test p={test.p_value:.3f} > {alpha:.2f}"


@dataclass(frozen=True)
class ChecklistArm:
    """The student's replies at the failure point, each scored on the items the failed rollout missed."""

    replies: list[str]
    scores: list[float]
    usage: dict[str, RoleUsage]


def missed_items(scenario: Scenario, episode: Episode) -> list[Criterion]:
    """The checklist items `episode` did not meet (positive ones not shown, forbidden ones broken)."""
    if episode.verdict is None:
        return []
    missed = {r.id for r in episode.verdict.criteria if r.status == "not_met"}
    return [c for c in scenario.success_criteria if c.id in missed]


async def checklist_arm(
    runner: EpisodeRunner,
    scenario: Scenario,
    prefix: list[Line],
    items: Sequence[Criterion],
    *,
    agent_model: str,
    seeds: Sequence[int],
    guidance: Sequence[Guidance] = (),
    concurrency: int = 1,
) -> ChecklistArm:
    """One reply per seed after `prefix`, scored: +1 per missed positive item it meets, -1 per forbidden one broken.

    Up to `concurrency` replies (each with its grading) run at once.
    """
    (arm,) = await _checklist_arms(
        runner, scenario, prefix, items, [guidance], agent_model=agent_model, seeds=seeds, concurrency=concurrency
    )
    return arm


async def _checklist_arms(
    runner: EpisodeRunner,
    scenario: Scenario,
    prefix: list[Line],
    items: Sequence[Criterion],
    guidances: Sequence[Sequence[Guidance]],
    *,
    agent_model: str,
    seeds: Sequence[int],
    concurrency: int,
) -> list[ChecklistArm]:
    """A checklist arm per entry of `guidances` (what the student reads), their trials run together."""

    async def trial(i: int, seed: int, guidance: Sequence[Guidance]) -> tuple[str, float, _Costs]:
        reply, cost = await runner.reply_at(scenario, prefix, agent_model=agent_model, seed=seed, guidance=guidance)
        results, graded = await runner.grade_lines([AgentMessage(turn=0, text=reply)], items, seed=seed)
        by_id = {r.id: r for r in results}
        score = 0.0
        for item in items:
            status = by_id[item.id].status if item.id in by_id else "na"
            if item.forbidden:
                score -= status == "not_met"
            else:
                score += status == "met"
        return reply, score, [*cost.items(), ("judge", graded)]

    return [
        ChecklistArm(
            replies=[reply for reply, _, _ in arm],
            scores=[score for _, score, _ in arm],
            usage=_usage(costs for _, _, costs in arm),
        )
        for arm in await _arms(trial, guidances, seeds, concurrency)
    ]


async def verify_checklist(
    runner: EpisodeRunner,
    scenario: Scenario,
    candidate: Guidance,
    prefix: list[Line],
    items: Sequence[Criterion],
    *,
    agent_model: str,
    seeds: Sequence[int],
    config: VerifyConfig,
    base: Sequence[Guidance] = (),
    without: ChecklistArm | None = None,
    concurrency: int = 1,
) -> tuple[VerificationResult, ChecklistArm]:
    """The `checklist` criterion (see the module doc). Returns the decision and the `without` arm for reuse.

    Up to `concurrency` trials (of either arm) run at once.
    """
    shown = [*(g for g in base if g.id != candidate.id), candidate]
    arms = await _checklist_arms(
        runner,
        scenario,
        prefix,
        items,
        [shown] if without is not None else [base, shown],
        agent_model=agent_model,
        seeds=seeds,
        concurrency=concurrency,
    )
    without, with_ = (without, *arms) if without is not None else arms
    test = _paired_test(config, without.scores, with_.scores)
    accepted, why = _decide(test, config, (0, 0))
    n = len(with_.scores)
    evidence = Evidence(
        trials=n,
        criterion="checklist",
        mean_without=sum(without.scores) / n if n else None,
        mean_with=sum(with_.scores) / n if n else None,
        wins=test.wins,
        losses=test.losses,
        ties=test.ties,
        p_value=test.p_value,
        note=(
            f"{'accepted' if accepted else 'rejected'}: {why}; missed items met per reply "
            f"{_mean(with_.scores)} with the strategy vs {_mean(without.scores)} without "
            f"(items: {', '.join(i.id for i in items)})"
        ),
    )
    return VerificationResult(accepted=accepted, evidence=evidence, usage=with_.usage), without


def _mean(values: Sequence[float]) -> str:
    return f"{sum(values) / len(values):.2f}" if values else "n/a"


async def _arms(
    trial: Callable[[int, int, Sequence[Guidance]], Awaitable[_T]],
    guidances: Sequence[Sequence[Guidance]],
    seeds: Sequence[int],
    concurrency: int,
) -> list[list[_T]]:
    """`trial(i, seed, guidance)` for each arm's guidance and each seed, up to `concurrency` at once.

    Returns each arm's results in seed order. The trials are started arm by arm, as one trial at a
    time always ran them.
    """
    calls = [partial(trial, i, seed, guidance) for guidance in guidances for i, seed in enumerate(seeds)]
    done = await in_order(calls, limit=concurrency)
    return [done[k * len(seeds) : (k + 1) * len(seeds)] for k in range(len(guidances))]


def _usage(costs: Iterable[_Costs]) -> dict[str, RoleUsage]:
    """The trials' costs summed by role, in trial order."""
    usage: dict[str, RoleUsage] = {}
    for trial in costs:
        for role, u in trial:
            usage[role] = usage.get(role, RoleUsage()) + u
    return usage
