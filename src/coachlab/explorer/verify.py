"""Verification: does a candidate strategy make the student better on the scenario it came from?

The student runs k fresh trials of the scenario with the candidate in its prompt and k without,
trial i of both arms sharing its seed (so the customer's randomness is paired). The candidate is
accepted when the lower bound of the bootstrap CI of the paired uplift in satisfaction clears the
margin; every decision keeps its numbers as `Evidence`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from coachlab.environments import EpisodeRunner, GuidanceProvider
from coachlab.schema import Episode, Evidence, Guidance, Scenario
from coachlab.stats import paired_uplift

__all__ = ["VerificationResult", "VerifyConfig", "verify_guidance"]


class VerifyConfig(BaseModel):
    """How candidates are verified."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int = Field(default=4, ge=2, le=100, description="Paired trials per arm.")
    margin: float = Field(default=0.0, description="The uplift CI's lower bound must exceed this.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    criterion: Literal["uplift"] = "uplift"
    refine_rounds: int = Field(default=2, ge=0, le=10, description="Teacher rewrites of a rejected candidate.")


@dataclass(frozen=True)
class VerificationResult:
    """The decision on one candidate, with its evidence and episodes."""

    accepted: bool
    evidence: Evidence
    without: list[Episode]
    with_guidance: list[Episode]


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
) -> VerificationResult:
    """Run both arms (or reuse `without`, run on the same seeds) and decide.

    `base` is the guidance both arms get (the library's retrieval); the candidate is added on top
    of it in the second arm. Pairs where either episode has no verdict (an infrastructure or judge
    error) are dropped, not scored; fewer than two scored pairs is a rejection.
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
        criterion=config.criterion,
        note=f"{'accepted' if accepted else 'rejected'}: uplift CI low {est.low} vs margin {config.margin}",
    )
    return VerificationResult(accepted=accepted, evidence=evidence, without=list(without), with_guidance=with_guidance)
