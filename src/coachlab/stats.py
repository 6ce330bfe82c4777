"""Small statistics for trials: means with bootstrap CIs, a paired sign test, clustered bootstrap, pass^k.

Admission of a strategy rests on `sign_test`: an exact binomial test on the paired differences
(ties dropped), which a handful of lucky trials cannot pass: with n untied pairs all in favour, the
one-sided p-value is 0.5**n, so at 95% confidence no fewer than 5 untied pairs can ever admit.
`sign_flip_test` is the same exact test on the sizes of the differences too (Fisher's paired
randomisation test): a pair that met two more items counts for more than one that met one more,
so a candidate whose wins are bigger than its losses can pass where the sign test cannot; it has
the same floor of 5 untied pairs.

Evaluation CIs resample scenarios, then trials within them (`clustered_bootstrap`): episodes of
one scenario are not independent, and treating them as such makes intervals too narrow.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Estimate",
    "SignTest",
    "bootstrap_mean",
    "clustered_bootstrap",
    "clustered_difference",
    "gap_closed",
    "min_detectable_difference",
    "paired_differences",
    "paired_uplift",
    "pass_hat_k",
    "seed_for",
    "sign_flip_test",
    "sign_test",
    "sign_test_floor",
]


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


class SignTest(BaseModel):
    """An exact one-sided sign test on paired differences (`with - without`), ties dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pairs: int
    wins: int = 0
    losses: int = 0
    ties: int = 0
    mean_difference: float | None = None
    p_value: float = 1.0
    """sign: P(at least `wins` of the untied pairs in favour | no effect); sign-flip: P(a sum of the
    differences at least the observed one | each difference's sign a fair coin)."""
    method: Literal["sign", "sign-flip"] = "sign"

    def passes(self, *, alpha: float, min_effect: float, min_pairs: int) -> bool:
        """Significant at `alpha`, with at least `min_pairs` pairs and a mean difference of at least `min_effect`."""
        return (
            self.pairs >= min_pairs
            and self.mean_difference is not None
            and self.mean_difference >= min_effect
            and self.wins > self.losses
            and self.p_value <= alpha
        )

    def __str__(self) -> str:
        mean = "n/a" if self.mean_difference is None else f"{self.mean_difference:+.2f}"
        test = "" if self.method == "sign" else f" ({self.method})"
        return (
            f"{self.wins} better / {self.losses} worse / {self.ties} tied of {self.pairs}, mean {mean}, "
            f"p={self.p_value:.3f}{test}"
        )


def sign_test(without: Sequence[float], with_: Sequence[float]) -> SignTest:
    """The exact one-sided sign test that `with_` beats `without`, pair by pair.

    Raises:
        ValueError: The two arms have different lengths.
    """
    if len(without) != len(with_):
        raise ValueError(f"paired arms differ in length ({len(without)} vs {len(with_)})")
    diffs = [b - a for a, b in zip(without, with_, strict=True)]
    if not diffs:
        return SignTest(pairs=0)
    wins = sum(d > 0 for d in diffs)
    losses = sum(d < 0 for d in diffs)
    n = wins + losses
    p = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n if n else 1.0
    return SignTest(
        pairs=len(diffs),
        wins=wins,
        losses=losses,
        ties=len(diffs) - n,
        mean_difference=sum(diffs) / len(diffs),
        p_value=p,
    )


_FLIP_SUMS_LIMIT = 200_000
"""Distinct partial sums the exact sign-flip distribution may hold before it is sampled instead."""


def sign_flip_test(without: Sequence[float], with_: Sequence[float], *, seed: int = 0) -> SignTest:
    """The exact one-sided paired randomisation test that `with_` beats `without` (ties dropped).

    Under no effect each difference is as likely positive as negative; the p-value is the share of
    the 2^n sign assignments of the n untied differences whose sum is at least the observed sum.
    The distribution is counted exactly over the distinct partial sums (differences of checklist
    items or satisfaction scores take few values); past `_FLIP_SUMS_LIMIT` of them it is sampled
    (100,000 draws from `seed`).

    Raises:
        ValueError: The two arms have different lengths.
    """
    counted = sign_test(without, with_)
    diffs = [round(b - a, 9) for a, b in zip(without, with_, strict=True) if b != a]
    if not diffs:
        return counted.model_copy(update={"method": "sign-flip"})
    observed = sum(diffs) - 1e-9  # a sum equal to the observed one counts as at least as extreme
    sums: dict[float, int] = {0.0: 1}
    for d in diffs:
        grown: dict[float, int] = {}
        for total, ways in sums.items():
            for step in (abs(d), -abs(d)):
                key = round(total + step, 9)
                grown[key] = grown.get(key, 0) + ways
        sums = grown
        if len(sums) > _FLIP_SUMS_LIMIT:
            rng = random.Random(seed)
            draws = 100_000
            hits = sum(sum(x if rng.random() < 0.5 else -x for x in map(abs, diffs)) >= observed for _ in range(draws))
            p = (hits + 1) / (draws + 1)
            break
    else:
        p = sum(ways for total, ways in sums.items() if total >= observed) / 2 ** len(diffs)
    return counted.model_copy(update={"p_value": min(p, 1.0), "method": "sign-flip"})


def sign_test_floor(alpha: float) -> int:
    """The fewest untied pairs (all in favour) that can reach significance at `alpha`: 5 at 0.05, 7 at 0.01."""
    n = 1
    while 0.5**n > alpha:
        n += 1
    return n


def clustered_bootstrap(
    clusters: Mapping[str, Sequence[float]],
    *,
    statistic: Callable[[Mapping[str, Sequence[float]]], float | None] | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """A two-level bootstrap CI: resample clusters (scenarios), then values (trials) within each drawn cluster.

    `statistic` maps a resampled {cluster: values} to a number (default: the mean of all values);
    resamples where it is None are skipped. `n` counts the values.
    """
    keys = sorted(k for k, v in clusters.items() if v)
    n = sum(len(clusters[k]) for k in keys)
    if not keys:
        return Estimate(mean=None, low=None, high=None, n=0)

    def mean_of(sample: Mapping[str, Sequence[float]]) -> float | None:
        values = [x for v in sample.values() for x in v]
        return sum(values) / len(values) if values else None

    stat = statistic or mean_of
    point = stat({k: clusters[k] for k in keys})
    rng = random.Random(seed)
    values: list[float] = []
    for _ in range(resamples):
        drawn = rng.choices(keys, k=len(keys))
        sample = {f"{i}:{k}": rng.choices(list(clusters[k]), k=len(clusters[k])) for i, k in enumerate(drawn)}
        got = stat(sample)
        if got is not None:
            values.append(got)
    if point is None or not values:
        return Estimate(mean=point, low=None, high=None, n=n)
    values.sort()
    tail = (1 - confidence) / 2
    return Estimate(
        mean=point, low=values[int(tail * (len(values) - 1))], high=values[int((1 - tail) * (len(values) - 1))], n=n
    )


def clustered_difference(
    a: Mapping[str, Sequence[float]],
    b: Mapping[str, Sequence[float]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """The mean of group `a` minus the mean of group `b`, both observed in the same clusters (scenarios).

    The CI comes from `clustered_bootstrap`: a resample draws clusters, then values within each
    drawn cluster from both groups' values together, so a group's size varies as it would in
    another run; resamples in which either group is empty are skipped. `n` counts both groups' values.
    """
    values: list[tuple[bool, float]] = []
    clusters: dict[str, list[float]] = {}
    for key in sorted(set(a) | set(b)):
        start = len(values)
        values += [(True, x) for x in a.get(key, ())] + [(False, x) for x in b.get(key, ())]
        clusters[key] = [float(i) for i in range(start, len(values))]

    def difference(sample: Mapping[str, Sequence[float]]) -> float | None:
        drawn = [values[int(i)] for indices in sample.values() for i in indices]
        first = [x for in_a, x in drawn if in_a]
        second = [x for in_a, x in drawn if not in_a]
        if not first or not second:
            return None
        return sum(first) / len(first) - sum(second) / len(second)

    return clustered_bootstrap(clusters, statistic=difference, confidence=confidence, resamples=resamples, seed=seed)


def paired_differences(
    before: Mapping[tuple[str, int], float], after: Mapping[tuple[str, int], float], *, scale: float = 1.0
) -> dict[str, list[float]]:
    """`scale * (after - before)` per cluster, over the (cluster, trial) keys both hold (trials share their seed).

    The result is what `clustered_bootstrap` (a CI) and `min_detectable_difference(paired=True)` take.
    """
    diffs: dict[str, list[float]] = {}
    for key in sorted(set(before) & set(after)):
        diffs.setdefault(key[0], []).append(scale * (after[key] - before[key]))
    return diffs


def min_detectable_difference(
    clusters: Mapping[str, Sequence[float]], *, alpha: float = 0.05, power: float = 0.8, paired: bool = False
) -> float | None:
    """The smallest difference in means the run's size could detect (normal approximation, clustered).

    `clusters` holds each scenario's values: one condition's outcomes, or with `paired` the paired
    differences between two conditions. The variance of a scenario's mean is the larger of the
    observed between-scenario spread and the within-scenario spread over its trials, and never
    below that of a coin (0.25 per trial), so a run whose outcomes happen to agree does not claim
    a precision it has not shown. Without `paired`, two independent conditions of this size are
    compared. None with fewer than two scenarios.
    """
    keys = [k for k, v in clusters.items() if v]
    if len(keys) < 2:
        return None
    m = sum(len(clusters[k]) for k in keys) / len(keys)
    means = [sum(clusters[k]) / len(clusters[k]) for k in keys]
    grand = sum(means) / len(means)
    between = sum((x - grand) ** 2 for x in means) / (len(means) - 1)
    values = [x for k in keys for x in clusters[k]]
    within = sum((x - grand) ** 2 for x in values) / max(len(values) - 1, 1) / m
    variance = max(between, within, 0.25 / m)
    se = math.sqrt((1 if paired else 2) * variance / len(keys))
    return (_z(1 - alpha / 2) + _z(power)) * se


def _z(p: float) -> float:
    """The standard normal quantile."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)
