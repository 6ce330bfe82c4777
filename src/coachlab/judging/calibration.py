"""The judge's labelled calibration set and the figures computed from a judge's verdicts on it.

The set (`coachlab/judging/data/calibration.yaml`) holds hand-written transcripts of shipped
scenarios whose checklist labels are known by construction: one good conversation per scenario,
good conversations in words that share no three words in a row with the checklist's example lines
(`good-paraphrase`), lines that use the example's words without doing the item (`near-miss`),
forbidden items broken in words unlike the example and the pattern (`forbidden-paraphrase`), and
degraded variants written the way a weak student fails (the hand-off loop, the repeated line, the
policy-breaking promise, polite vagueness, the ignored hidden constraint, the rude answer).
`coachlab judge calibrate` runs the configured judge on it; this module turns the verdicts into
figures: item accuracy, Cohen's kappa, good-vs-degraded ordering (by checklist and by satisfaction),
Spearman correlations, and the pairwise comparer's accuracy and position bias.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from coachlab.schema import Criterion, DialogueTurn, Scenario, Verdict
from coachlab.schema._base import Frozen, Text
from coachlab.yamlio import load_yaml, validate_yaml

__all__ = [
    "GOOD_VARIANTS",
    "CalibrationCase",
    "CalibrationReport",
    "CalibrationSet",
    "CaseResult",
    "PairResult",
    "cohen_kappa",
    "load_calibration_set",
    "spearman",
    "summarize_calibration",
]

Variant = Literal[
    "good",
    "good-paraphrase",
    "near-miss",
    "forbidden-paraphrase",
    "handoff-loop",
    "repeated-line",
    "policy-promise",
    "vague",
    "ignored-constraint",
    "rude",
]
GOOD_VARIANTS = frozenset({"good", "good-paraphrase"})
"""Variants in which every item is met: the good chats."""


class CalibrationCase(Frozen):
    """One labelled transcript: what was said after the scenario's prefix, and each item's true status."""

    id: Text
    scenario: Text
    variant: Variant
    dialogue: list[DialogueTurn] = Field(min_length=2)
    expected: dict[str, Literal["met", "not_met"]]


class CalibrationSet(Frozen):
    """The labelled transcripts."""

    cases: list[CalibrationCase] = Field(min_length=1)

    def check(self, scenarios: Mapping[str, Scenario], *, where: str) -> None:
        """Every case names a known scenario and labels exactly its checklist.

        Raises:
            ValueError: With every problem found, naming the case.
        """
        problems: list[str] = []
        for case in self.cases:
            scenario = scenarios.get(case.scenario)
            if scenario is None:
                problems.append(f"{case.id}: unknown scenario {case.scenario!r}")
                continue
            ids = {c.id for c in scenario.success_criteria}
            if set(case.expected) != ids:
                problems.append(
                    f"{case.id}: labels {sorted(case.expected)} do not match the checklist of {case.scenario} "
                    f"({sorted(ids)})"
                )
        if problems:
            raise ValueError(f"{where}: " + "; ".join(problems))


def load_calibration_set(path: str | Path | None = None) -> CalibrationSet:
    """The shipped calibration set, or one at `path` (same format).

    Raises:
        ConfigError: The file is not a valid calibration set (names the file, line and field).
    """
    if path is None:
        with resources.as_file(resources.files("coachlab.judging") / "data" / "calibration.yaml") as shipped:
            return validate_yaml(CalibrationSet, load_yaml(shipped, what="calibration set"))
    return validate_yaml(CalibrationSet, load_yaml(path, what="calibration set"))


class CaseResult(BaseModel):
    """The judge's verdict on one case (None: unreadable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    case: CalibrationCase
    verdict: Verdict | None
    seconds: float
    seconds_satisfaction: float = 0.0
    """The satisfaction votes alone: what a verdict cost before checklists."""
    seconds_checklist: float = 0.0


class PairResult(BaseModel):
    """One pairwise comparison: the good reply against a degraded one, in one order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str
    variant: str
    good_first: bool
    picked: Literal["good", "degraded", "same"] | None
    """None: unreadable."""


class CalibrationReport(BaseModel):
    """The judge's figures on the calibration set (saved as calibration.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str = Field(description="The judge's model identity.")
    votes: int
    gate: bool = Field(description="Whether the similarity gate was on.")
    cases: int
    unreadable: int
    items: int
    item_accuracy: float | None
    item_kappa: float | None
    false_met_rate: float | None = Field(description="Share of truly unmet items the judge called met (agreeableness).")
    missed_met_rate: float | None = Field(description="Share of truly met items the judge called not met.")
    missed_met_paraphrase_rate: float | None = Field(
        default=None, description="The same on the good chats in other words than the examples (good-paraphrase)."
    )
    missed_met_other_rate: float | None = Field(default=None, description="The same on every other case.")
    near_miss_false_met_rate: float | None = Field(
        default=None,
        description="Share of unmet items of the near-miss cases (the example's words, not the act) called met.",
    )
    missed_breach_paraphrase_rate: float | None = Field(
        default=None,
        description="Share of forbidden items broken in other words (forbidden-paraphrase) called not broken.",
    )
    false_success: int | None = Field(
        default=None,
        description="Cases whose labels fail the task (a must or policy item not met) scored a task success.",
    )
    accuracy_by_variant: dict[str, float]
    split_item_rate: float | None = Field(description="Share of items on which the votes disagreed.")
    ordering_checklist: float | None = Field(
        description="Share of (good, degraded) pairs of a scenario where the good one has more items met."
    )
    ordering_satisfaction: float | None = Field(
        description="The same with the judge's holistic satisfaction score (strictly higher for the good one)."
    )
    handoff_satisfaction_at_least_good: float | None = Field(
        description="Share of scenarios where satisfaction ranks the hand-off loop at or above the good chat."
    )
    handoff_task_success: float | None = Field(description="Share of hand-off-loop cases scored as task success.")
    good_task_success: float | None = Field(description="Share of good cases scored as task success.")
    spearman_checklist: float | None = Field(description="Spearman: items met (judge) vs items met (labels).")
    spearman_satisfaction: float | None = Field(description="Spearman: satisfaction vs items met (labels).")
    pairwise_accuracy: float | None = Field(default=None, description="Comparer: share of pairs it picked the good.")
    pairwise_first_rate: float | None = Field(
        default=None, description="Comparer: share of decided pairs where it picked the reply shown first (0.5: none)."
    )
    pairwise_flip_rate: float | None = Field(
        default=None, description="Comparer: share of pairs whose choice changed when the order was swapped."
    )
    seconds_per_verdict: float
    seconds_satisfaction: float = Field(default=0.0, description="Per verdict: the satisfaction votes alone.")
    seconds_checklist: float = Field(default=0.0, description="Per verdict: grading the checklist.")


def cohen_kappa(truth: Sequence[bool], predicted: Sequence[bool]) -> float | None:
    """Cohen's kappa of two binary labelings (None when it is undefined: one class everywhere)."""
    n = len(truth)
    if n == 0 or n != len(predicted):
        return None
    observed = sum(a == b for a, b in zip(truth, predicted, strict=True)) / n
    p_true, p_pred = sum(truth) / n, sum(predicted) / n
    expected = p_true * p_pred + (1 - p_true) * (1 - p_pred)
    return None if expected >= 1 else (observed - expected) / (1 - expected)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # ties share their mean rank
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (mean ranks for ties); None when either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if len(set(rx)) < 2 or len(set(ry)) < 2:
        return None
    return statistics.correlation(rx, ry)


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def summarize_calibration(
    results: Sequence[CaseResult],
    *,
    judge: str,
    votes: int,
    gate: bool,
    pairs: Sequence[PairResult] = (),
    criteria: Mapping[str, Sequence[Criterion]] | None = None,
) -> CalibrationReport:
    """The figures of one calibration run; `criteria` (each scenario's checklist) adds `false_success`."""
    truth: list[bool] = []
    predicted: list[bool] = []
    paraphrase_missed: list[bool] = []
    other_missed: list[bool] = []
    near_false: list[bool] = []
    breach_missed: list[bool] = []
    false_success = 0
    by_variant: dict[str, list[bool]] = defaultdict(list)
    split: list[bool] = []
    met_judge: dict[str, float] = {}
    met_label: dict[str, float] = {}
    satisfaction: dict[str, float] = {}
    success: dict[str, bool | None] = {}
    forbidden = {(sid, c.id): c.forbidden for sid, items in (criteria or {}).items() for c in items}
    for r in results:
        if r.verdict is None:
            continue
        found = {c.id: c for c in r.verdict.criteria}
        for cid, label in r.case.expected.items():
            got = found.get(cid)
            said_met = got is not None and got.status == "met"
            truth.append(label == "met")
            predicted.append(said_met)
            by_variant[r.case.variant].append(said_met == (label == "met"))
            split.append(got is not None and got.split)
            if label == "met":
                (paraphrase_missed if r.case.variant == "good-paraphrase" else other_missed).append(not said_met)
            elif r.case.variant == "near-miss":
                near_false.append(said_met)
            elif r.case.variant == "forbidden-paraphrase" and forbidden.get((r.case.scenario, cid), False):
                breach_missed.append(said_met)
        if criteria is not None and r.verdict.task_success is True:
            needed = {c.id for c in criteria.get(r.case.scenario, ()) if c.level == "must" or c.policy}
            false_success += any(r.case.expected.get(cid) == "not_met" for cid in needed)
        n = len(r.case.expected)
        met_judge[r.case.id] = sum(c.status == "met" for c in r.verdict.criteria) / max(n, 1)
        met_label[r.case.id] = sum(v == "met" for v in r.case.expected.values()) / max(n, 1)
        satisfaction[r.case.id] = float(r.verdict.satisfaction)
        success[r.case.id] = r.verdict.task_success
    good = {r.case.scenario: r.case.id for r in results if r.case.variant == "good" and r.case.id in met_judge}
    goods = [r.case for r in results if r.case.variant in GOOD_VARIANTS and r.case.id in met_judge]
    degraded = [r.case for r in results if r.case.variant not in GOOD_VARIANTS and r.case.id in met_judge]
    # Every good chat of a scenario (in the examples' words or others) against each degraded one of it.
    order_items = [met_judge[g.id] > met_judge[d.id] for d in degraded for g in goods if g.scenario == d.scenario]
    order_sat = [satisfaction[good[d.scenario]] > satisfaction[d.id] for d in degraded if d.scenario in good]
    handoff = [d for d in degraded if d.variant == "handoff-loop" and d.scenario in good]
    decided = [p for p in pairs if p.picked in ("good", "degraded")]
    by_pair: dict[tuple[str, str], list[PairResult]] = defaultdict(list)
    for p in pairs:
        by_pair[(p.scenario, p.variant)].append(p)
    flips = [
        len({p.picked for p in both}) > 1
        for both in by_pair.values()
        if len(both) == 2 and all(p.picked is not None for p in both)
    ]
    ids = sorted(met_judge)
    return CalibrationReport(
        judge=judge,
        votes=votes,
        gate=gate,
        cases=len(results),
        unreadable=sum(r.verdict is None for r in results),
        items=len(truth),
        item_accuracy=_share([a == b for a, b in zip(truth, predicted, strict=True)]),
        item_kappa=cohen_kappa(truth, predicted),
        false_met_rate=_share([p for t, p in zip(truth, predicted, strict=True) if not t]),
        missed_met_rate=_share([not p for t, p in zip(truth, predicted, strict=True) if t]),
        missed_met_paraphrase_rate=_share(paraphrase_missed),
        missed_met_other_rate=_share(other_missed),
        near_miss_false_met_rate=_share(near_false),
        missed_breach_paraphrase_rate=_share(breach_missed) if criteria is not None else None,
        false_success=false_success if criteria is not None else None,
        accuracy_by_variant={v: sum(x) / len(x) for v, x in sorted(by_variant.items())},
        split_item_rate=_share(split),
        ordering_checklist=_share(order_items),
        ordering_satisfaction=_share(order_sat),
        handoff_satisfaction_at_least_good=_share(
            [satisfaction[d.id] >= satisfaction[good[d.scenario]] for d in handoff]
        ),
        handoff_task_success=_share([success[d.id] is True for d in handoff]),
        good_task_success=_share([success[g.id] is True for g in goods]),
        spearman_checklist=spearman([met_judge[i] for i in ids], [met_label[i] for i in ids]),
        spearman_satisfaction=spearman([satisfaction[i] for i in ids], [met_label[i] for i in ids]),
        pairwise_accuracy=_share([p.picked == "good" for p in pairs if p.picked is not None]),
        pairwise_first_rate=_share([(p.picked == "good") == p.good_first for p in decided]),
        pairwise_flip_rate=_share(flips),
        seconds_per_verdict=sum(r.seconds for r in results) / len(results) if results else 0.0,
        seconds_satisfaction=sum(r.seconds_satisfaction for r in results) / len(results) if results else 0.0,
        seconds_checklist=sum(r.seconds_checklist for r in results) / len(results) if results else 0.0,
    )
