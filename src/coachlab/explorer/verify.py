"""Verification: does a candidate strategy make the student better on the scenario it came from?

Two criteria, chosen in YAML (`verify.criterion`):

- `uplift`: the student runs k fresh trials of the scenario with the candidate in its prompt and
  k without, trial i of both arms sharing its seed (so the customer's randomness is paired). The
  candidate is accepted when the lower bound of the bootstrap CI of the paired uplift in
  satisfaction clears the margin.
- `imitation` (the paper's "until the student mimics the teacher"): at the failure point, the
  student replies k times with the candidate and k times without; the judge compares each reply
  with the teacher's reply there (in both orders across trials, against position bias). The
  candidate is accepted when the share of the student's replies rated at least as good as the
  teacher's reaches `imitation_rate` and beats the share without it. Cheap: one reply and one
  comparison per trial instead of whole episodes.

Every decision keeps its numbers as `Evidence`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from coachlab.environments import EpisodeRunner, GuidanceProvider
from coachlab.schema import Episode, Evidence, Guidance, RoleUsage, Scenario
from coachlab.stats import paired_uplift

__all__ = ["ImitationArm", "VerificationResult", "VerifyConfig", "imitation_arm", "verify_guidance", "verify_imitation"]


class VerifyConfig(BaseModel):
    """How candidates are verified."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int = Field(default=4, ge=2, le=100, description="Fresh paired trials per arm.")
    criterion: Literal["uplift", "imitation"] = Field(default="uplift", description="How a candidate is accepted.")
    margin: float = Field(default=0.0, description="uplift: the CI's lower bound must exceed this.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    imitation_rate: float = Field(
        default=0.5, gt=0, le=1, description="imitation: share of replies judged at least as good as the teacher's."
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
) -> VerificationResult:
    """The `uplift` criterion: run both arms (or reuse `without`, run on the same seeds) and decide.

    `base` is the guidance both arms get (the library's retrieval); the candidate is added on top
    of it in the second arm. Pairs where either episode has no verdict (an infrastructure or judge
    error) are dropped, not scored; fewer than two scored pairs is a rejection. `mentor_model` and
    `student_share` mix the rollouts as in the train loop (the same turns in both arms).
    """

    async def plus_candidate(sc: Scenario, dialogue: Sequence[tuple[str, str]]) -> Sequence[Guidance]:
        shown = list(await base(sc, dialogue)) if base is not None else []
        return [*(g for g in shown if g.id != candidate.id), candidate]

    if without is None:
        without = [
            await runner.run(
                scenario,
                agent_model=agent_model,
                trial=i,
                seed=seed,
                episode_id=f"{id_prefix}/without/{i}",
                guidance=base,
                mentor_model=mentor_model,
                student_share=student_share,
            )
            for i, seed in enumerate(seeds)
        ]
    with_guidance = [
        await runner.run(
            scenario,
            agent_model=agent_model,
            trial=i,
            seed=seed,
            episode_id=f"{id_prefix}/with/{i}",
            condition="candidate",
            guidance=plus_candidate,
            mentor_model=mentor_model,
            student_share=student_share,
        )
        for i, seed in enumerate(seeds)
    ]
    pairs = [
        (float(a.verdict.satisfaction), float(b.verdict.satisfaction))
        for a, b in zip(without, with_guidance, strict=True)
        if a.verdict is not None and b.verdict is not None
    ]
    est = paired_uplift([a for a, _ in pairs], [b for _, b in pairs], confidence=config.confidence)
    n = len(pairs)
    accepted = n >= 2 and est.low is not None and est.low > config.margin
    evidence = Evidence(
        trials=n,
        mean_without=sum(a for a, _ in pairs) / n if n else None,
        mean_with=sum(b for _, b in pairs) / n if n else None,
        uplift_low=est.low,
        uplift_high=est.high,
        criterion="uplift",
        note=f"{'accepted' if accepted else 'rejected'}: uplift CI low {est.low} vs margin {config.margin}",
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
    prefix: list[tuple[str, str]],
    *,
    agent_model: str,
    teacher_reply: str,
    seeds: Sequence[int],
    guidance: Sequence[Guidance] = (),
) -> ImitationArm:
    """The student's reply after `prefix` on each seed, each compared by the judge with `teacher_reply`.

    Odd trials show the student's reply first and even ones second, so the judge's position bias
    cancels out over the arm.
    """
    replies: list[str] = []
    verdicts: list[bool | None] = []
    usage: dict[str, RoleUsage] = {}
    for i, seed in enumerate(seeds):
        reply, cost = await runner.reply_at(scenario, prefix, agent_model=agent_model, seed=seed, guidance=guidance)
        student_first = i % 2 == 1
        first, second = (reply, teacher_reply) if student_first else (teacher_reply, reply)
        comparison, judged = await runner.compare_at(scenario, prefix, first, second, seed=seed)
        for role, u in (("agent", cost), ("judge", judged)):
            usage[role] = usage.get(role, RoleUsage()) + u
        replies.append(reply)
        if comparison is None:
            verdicts.append(None)
        else:
            verdicts.append(comparison.better == "same" or (comparison.better == "A") == student_first)
    return ImitationArm(replies=replies, at_least_teacher=verdicts, usage=usage)


async def verify_imitation(
    runner: EpisodeRunner,
    scenario: Scenario,
    candidate: Guidance,
    prefix: list[tuple[str, str]],
    *,
    agent_model: str,
    teacher_reply: str,
    seeds: Sequence[int],
    config: VerifyConfig,
    base: Sequence[Guidance] = (),
    without: ImitationArm | None = None,
) -> tuple[VerificationResult, ImitationArm]:
    """The `imitation` criterion (see the module doc). Returns the decision and the `without` arm for reuse.

    `base` is what the library retrieves at the failure point (both arms get it); fewer than two
    readable comparisons in either arm is a rejection.
    """
    if without is None:
        without = await imitation_arm(
            runner, scenario, prefix, agent_model=agent_model, teacher_reply=teacher_reply, seeds=seeds, guidance=base
        )
    shown = [*(g for g in base if g.id != candidate.id), candidate]
    with_ = await imitation_arm(
        runner, scenario, prefix, agent_model=agent_model, teacher_reply=teacher_reply, seeds=seeds, guidance=shown
    )
    rate_without, rate_with = without.rate, with_.rate
    enough = without.judged >= 2 and with_.judged >= 2
    accepted = (
        enough
        and rate_with is not None
        and rate_without is not None
        and rate_with >= config.imitation_rate
        and rate_with > rate_without
    )
    evidence = Evidence(
        trials=with_.judged,
        criterion="imitation",
        preferred_without=rate_without,
        preferred_with=rate_with,
        note=(
            f"{'accepted' if accepted else 'rejected'}: student at least the teacher in "
            f"{_share(rate_with)} of {with_.judged} comparisons with the strategy, {_share(rate_without)} of "
            f"{without.judged} without (needs >= {config.imitation_rate:.0%} and more than without)"
        ),
    )
    return VerificationResult(accepted=accepted, evidence=evidence, usage=with_.usage), without


def _share(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.0%}"
