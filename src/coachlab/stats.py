"""Small statistics for trials: means with bootstrap confidence intervals, pass^k."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

__all__ = ["Estimate", "bootstrap_mean", "gap_closed", "paired_uplift", "pass_hat_k", "seed_for"]


class Estimate(BaseModel):
    """A mean with its confidence interval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float | None
    low: float | None
    high: float | None
    n: int

    def __str__(self) -> str:
        if self.mean is None:
            return "n/a"
        if self.n < 2 or self.low is None or self.high is None:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}]"


def bootstrap_mean(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Mean of `values` with a percentile-bootstrap confidence interval (deterministic per seed)."""
    n = len(values)
    if n == 0:
        return Estimate(mean=None, low=None, high=None, n=0)
    mean = sum(values) / n
    if n == 1 or min(values) == max(values):
        return Estimate(mean=mean, low=mean, high=mean, n=n)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = means[int(tail * (resamples - 1))]
    high = means[int((1 - tail) * (resamples - 1))]
    return Estimate(mean=mean, low=low, high=high, n=n)


def pass_hat_k(trials: Sequence[float], *, threshold: float) -> bool:
    """pass^k for one scenario: every one of its k trials scored at or above `threshold`."""
    return bool(trials) and all(t >= threshold for t in trials)


def paired_uplift(
    without: Sequence[float], with_: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Mean of the paired differences `with_[i] - without[i]` with a bootstrap CI.

    Trial i of both arms shares its seed (the same customer randomness), so pairing removes the
    scenario-to-scenario noise from the comparison.

    Raises:
        ValueError: The two arms have different lengths.
    """
    if len(without) != len(with_):
        raise ValueError(f"paired arms differ in length ({len(without)} vs {len(with_)})")
    return bootstrap_mean(
        [b - a for a, b in zip(without, with_, strict=True)], confidence=confidence, resamples=resamples, seed=seed
    )


def gap_closed(baseline: float, library: float, teacher: float) -> float | None:
    """(library - baseline) / (teacher - baseline); None when the teacher is no better than the baseline."""
    gap = teacher - baseline
    return None if gap <= 0 else (library - baseline) / gap


def seed_for(base: int, *parts: str | int) -> int:
    """A seed derived from a base seed and coordinates (stable across runs and machines)."""
    blob = "/".join(str(p) for p in (base, *parts)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF
