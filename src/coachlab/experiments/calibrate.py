"""`coachlab judge calibrate`: run the experiment's judge on the labelled set and print how far to trust it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from coachlab.environments import EnvironmentConfig, EpisodeRunner
from coachlab.environments.episode import satisfaction_scores
from coachlab.environments.grading import combine_scores, grade_checklist
from coachlab.experiments.config import Experiment
from coachlab.judging import JudgeConfig
from coachlab.judging.calibration import (
    CalibrationCase,
    CalibrationReport,
    CalibrationSet,
    CaseResult,
    PairResult,
    summarize_calibration,
)
from coachlab.judging.gate import Similarity
from coachlab.llm import Backend
from coachlab.schema import AgentMessage, CustomerMessage, Event, Line, Scenario
from coachlab.stats import seed_for

__all__ = ["calibration_events", "run_calibration", "spoken", "to_text"]


def calibration_events(scenario: Scenario, case: CalibrationCase) -> list[Event]:
    """The case as an episode's events: the scenario's prefix (not graded), then the case's lines."""
    events: list[Event] = []
    counts = {"customer": 0, "agent": 0}
    for origin, turns in (("prefix", scenario.prefix), ("model", case.dialogue)):
        for turn in turns:
            n = counts[turn.role]
            counts[turn.role] += 1
            if turn.role == "customer":
                events.append(
                    CustomerMessage(turn=n, text=turn.text, origin="prefix" if origin == "prefix" else "model")
                )
            else:
                events.append(AgentMessage(turn=n, text=turn.text, origin="prefix" if origin == "prefix" else "model"))
    return events


def spoken(events: Sequence[Event]) -> list[Line]:
    """The (speaker, line) pairs of `events`, as the judge reads them."""
    return [
        ("customer" if isinstance(e, CustomerMessage) else "agent", e.text)
        for e in events
        if isinstance(e, CustomerMessage | AgentMessage)
    ]


async def run_calibration(
    experiment: Experiment,
    backends: Mapping[str, Backend],
    cases: CalibrationSet,
    *,
    judging: JudgeConfig,
    similarity: Similarity | None,
    compare: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> CalibrationReport:
    """Judge every case (verdict, checklist, satisfaction) and, with `compare`, the comparer's pairs; then summarize.

    Raises:
        ValueError: A case names an unknown scenario or does not label its checklist exactly.
    """
    cases.check(experiment.scenarios, where="calibration set")
    runner = EpisodeRunner(
        backends,
        EnvironmentConfig(),
        cache=None,
        judging=judging.model_copy(update={"checklist": "per_line"}),
        similarity=similarity,
    )
    results: list[CaseResult] = []
    for case in cases.cases:
        scenario = experiment.scenarios[case.scenario]
        events = calibration_events(scenario, case)
        dialogue = spoken(events)
        panel, _ = runner.panel(seed=seed_for(seed, "calibrate", case.id), trial=0)
        retries = runner.environment.judge_retries
        started = time.perf_counter()
        # The satisfaction votes first (what a verdict cost before checklists), then the checklist, timed apart.
        scores, _ = await satisfaction_scores(
            panel.judges, scenario, dialogue, view=panel.satisfaction_view(), retries=retries
        )
        middle = time.perf_counter()
        verdict = None
        if scores:
            items = await grade_checklist(panel, scenario.success_criteria, events, retries=retries)
            verdict = combine_scores(scores, scenario.success_criteria, items)
        done = time.perf_counter()
        results.append(
            CaseResult(
                case=case,
                verdict=verdict,
                seconds=done - started,
                seconds_satisfaction=middle - started,
                seconds_checklist=done - middle,
            )
        )
        progress(case.id)
    pairs: list[PairResult] = []
    if compare:
        good = {c.scenario: c for c in cases.cases if c.variant == "good"}
        for case in cases.cases:
            reference = good.get(case.scenario)
            if case.variant == "good" or reference is None:
                continue
            scenario = experiment.scenarios[case.scenario]
            opening: list[Line] = [(t.role, t.text) for t in scenario.prefix]
            opening.append(("customer", case.dialogue[0].text))
            good_reply = next(t.text for t in reference.dialogue if t.role == "agent")
            bad_reply = next(t.text for t in case.dialogue if t.role == "agent")
            if good_reply == bad_reply:
                continue
            for good_first in (True, False):
                first, second = (good_reply, bad_reply) if good_first else (bad_reply, good_reply)
                comparison, _ = await runner.compare_at(
                    scenario, opening, first, second, seed=seed_for(seed, "calibrate-pair", case.id, good_first)
                )
                picked = None
                if comparison is not None:
                    picked = (
                        "same"
                        if comparison.better == "same"
                        else ("good" if (comparison.better == "A") == good_first else "degraded")
                    )
                pairs.append(
                    PairResult(scenario=case.scenario, variant=case.variant, good_first=good_first, picked=picked)
                )
            progress(f"{case.id} (pair)")
    return summarize_calibration(
        results,
        judge=backends["judge"].identity,
        votes=judging.votes,
        gate=similarity is not None,
        pairs=pairs,
        criteria={sid: s.success_criteria for sid, s in experiment.scenarios.items()},
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _count(x: int | None) -> str:
    return "n/a" if x is None else str(x)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def to_text(report: CalibrationReport) -> str:
    """The figures as a short Markdown table a person reads."""
    rows = [
        ("judge", f"{report.judge}, {report.votes} vote(s), similarity gate {'on' if report.gate else 'off'}"),
        ("cases (unreadable)", f"{report.cases} ({report.unreadable})"),
        ("checklist item accuracy", f"{_pct(report.item_accuracy)} of {report.items} items"),
        ("Cohen's kappa on items", _num(report.item_kappa)),
        ("unmet items called met (agreeableness)", _pct(report.false_met_rate)),
        ("met items called unmet", _pct(report.missed_met_rate)),
        ("... on good chats in other words than the examples", _pct(report.missed_met_paraphrase_rate)),
        ("... on the other cases", _pct(report.missed_met_other_rate)),
        ("near-misses (the example's words, not the act) called met", _pct(report.near_miss_false_met_rate)),
        ("forbidden items broken in other words called not broken", _pct(report.missed_breach_paraphrase_rate)),
        (
            "cases that fail the task scored a task success",
            _count(report.false_success),
        ),
        ("good > degraded, by checklist", _pct(report.ordering_checklist)),
        ("good > degraded, by satisfaction score", _pct(report.ordering_satisfaction)),
        ("hand-off loop scored >= good by satisfaction", _pct(report.handoff_satisfaction_at_least_good)),
        ("hand-off loop scored a task success", _pct(report.handoff_task_success)),
        ("good chat scored a task success", _pct(report.good_task_success)),
        ("Spearman, checklist vs labels", _num(report.spearman_checklist)),
        ("Spearman, satisfaction vs labels", _num(report.spearman_satisfaction)),
        ("items with split votes", _pct(report.split_item_rate)),
        ("pairwise comparer: picks the good reply", _pct(report.pairwise_accuracy)),
        ("pairwise comparer: picks the reply shown first", _pct(report.pairwise_first_rate)),
        ("pairwise comparer: choice flips with order", _pct(report.pairwise_flip_rate)),
        (
            "seconds per verdict (satisfaction + checklist)",
            f"{report.seconds_per_verdict:.1f} ({report.seconds_satisfaction:.1f} + {report.seconds_checklist:.1f})",
        ),
    ]
    out = ["| figure | value |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)]
    out += [
        "",
        "Item accuracy by variant: " + ", ".join(f"{v} {_pct(a)}" for v, a in report.accuracy_by_variant.items()),
    ]
    return "\n".join(out) + "\n"
