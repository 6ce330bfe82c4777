"""Evaluation: plans pair seeds across conditions; gap closed and its CI on known numbers."""

from __future__ import annotations

import json

import pytest

from coachlab.experiments.config import EvaluateConfig
from coachlab.experiments.evaluate import evaluation_plans
from coachlab.experiments.evaluate_markdown import to_markdown
from coachlab.experiments.evaluation_report import EvaluationReport, summarize_evaluation
from coachlab.schema import CriterionResult, Episode, EpisodeEnded, RoleUsage, TerminationReason
from helpers import scenario, verdict


def ep(scenario_id: str, condition: str, model: str, trial: int, score: int) -> Episode:
    return Episode(
        id=f"{scenario_id}/{condition}/{model}/{trial}",
        scenario_id=scenario_id,
        condition=condition,
        agent_model=model,
        trial=trial,
        seed=trial,
        events=[EpisodeEnded(turn=1, reason=TerminationReason.CUSTOMER_SATISFIED)],
        termination=TerminationReason.CUSTOMER_SATISFIED,
        verdict=verdict(score, resolved=score >= 7),
    )


CONFIG = EvaluateConfig(scenarios=["a", "b"], trials=2)


def test_plans_pair_seeds_across_conditions() -> None:
    plans = evaluation_plans(CONFIG, [scenario(id="a"), scenario(id="b")], [])
    assert len(plans) == 2 * 2 * 4
    seeds = {(p.scenario.id, p.trial): set() for p in plans}
    for p in plans:
        seeds[(p.scenario.id, p.trial)].add(p.seed)
    assert all(len(s) == 1 for s in seeds.values())
    assert {p.agent_model for p in plans if p.condition == "teacher"} == {"teacher"}


def test_gap_closed_on_known_numbers() -> None:
    episodes = []
    for sid in ("a", "b"):
        for t in range(2):
            episodes += [
                ep(sid, "baseline", "student", t, 4),
                ep(sid, "generic", "student", t, 5),
                ep(sid, "library", "student", t, 6),
                ep(sid, "teacher", "teacher", t, 8),
            ]
    report = summarize_evaluation(episodes, CONFIG, library_version=3, package_version="0.1.0", experiment="x")
    (student,) = report.students
    rows = {r.condition: r for r in student.rows}
    assert rows["baseline"].satisfaction.mean == 4 and rows["library"].satisfaction.mean == 6
    assert rows["library"].pass_k == 0 and report.teacher is not None and report.teacher.pass_k == 1
    assert student.gap_closed.mean == 0.5 and student.gap_closed.low == 0.5 and student.gap_closed.high == 0.5
    assert student.gap_closed_items is None and student.library_minus_baseline_items.mean is None  # no checklist
    md = to_markdown(report)
    assert "| student | library | 4/4 |" in md and "Gap closed by the library for student (satisfaction): 0.50" in md
    assert "(items met" not in md


def test_gap_closed_has_a_real_interval_when_trials_vary() -> None:
    scores = {"baseline": [2, 4, 6, 4], "library": [5, 6, 6, 7], "teacher": [8, 8, 9, 7]}
    episodes = [
        ep("a" if i < 2 else "b", cond, "teacher" if cond == "teacher" else "student", i % 2, s)
        for cond, values in scores.items()
        for i, s in enumerate(values)
    ]
    report = summarize_evaluation(
        episodes,
        CONFIG.model_copy(update={"conditions": ["baseline", "library", "teacher"]}),
        library_version=1,
        package_version="0",
        experiment="x",
    )
    gap = report.students[0].gap_closed
    assert gap.mean is not None and abs(gap.mean - (6 - 4) / (8 - 4)) < 1e-9
    assert gap.low is not None and gap.high is not None and gap.low < gap.mean < gap.high


def test_cost_per_role_uses_each_role_s_model_price() -> None:
    def costed(condition: str, model: str, trial: int) -> Episode:
        usage = {
            "customer": RoleUsage(calls=2, prompt_tokens=1000, completion_tokens=100),
            "agent": RoleUsage(calls=2, prompt_tokens=2000, completion_tokens=200, prompt_processed=700),
            "judge": RoleUsage(calls=1, cached_calls=1, prompt_tokens=500, completion_tokens=50),
        }
        return ep("a", condition, model, trial, 6).model_copy(update={"usage": usage})

    episodes = [costed("baseline", "student", t) for t in range(2)] + [
        costed("teacher", "teacher", t) for t in range(2)
    ]
    prices = {"student": (0.0, 0.0), "teacher": (10.0, 30.0), "customer": (1.0, 2.0), "judge": (4.0, 8.0)}
    config = CONFIG.model_copy(update={"conditions": ["baseline", "teacher"]})
    report = summarize_evaluation(
        episodes, config, library_version=1, package_version="0", experiment="x", prices=prices
    )
    base = report.students[0].rows[0]
    assert base.cost["agent"] == 0.0
    assert base.cost["customer"] == (2000 * 1.0 + 200 * 2.0) / 1000
    assert base.cost["judge"] == (1000 * 4.0 + 100 * 8.0) / 1000
    assert report.teacher is not None and report.teacher.cost["agent"] == (4000 * 10.0 + 400 * 30.0) / 1000
    assert base.tokens_per_episode == 3850
    md = to_markdown(report)
    assert "| student | baseline | agent | student | 4 | 4,000 | 1,400 | 400 | $0.0000 |" in md
    assert "| teacher | teacher | agent | teacher | 4 | 4,000 | 1,400 | 400 | $52.00 |" in md
    assert "| student | baseline | customer | customer | 4 | 2,000 | n/a | 200 | $2.40 |" in md  # not reported


def test_task_success_is_primary_and_simulator_faults_are_counted_never_scored() -> None:
    def judged(sid: str, condition: str, trial: int, success: bool, score: int) -> Episode:
        e = ep(sid, condition, "teacher" if condition == "teacher" else "student", trial, score)
        v = e.verdict.model_copy(update={"task_success": success})  # type: ignore[union-attr]
        return e.model_copy(update={"verdict": v})

    episodes = []
    for sid in ("a", "b"):
        for t in range(2):
            episodes.append(judged(sid, "baseline", t, False, 9))  # a happy customer, task not done
            episodes.append(judged(sid, "library", t, t == 0, 5))
            episodes.append(judged(sid, "teacher", t, True, 6))
    spoiled = ep("a", "library", "student", 5, 1).model_copy(update={"verdict": None, "simulator_fault": "looped"})
    report = summarize_evaluation(
        [*episodes, spoiled],
        CONFIG.model_copy(update={"conditions": ["baseline", "library", "teacher"]}),
        library_version=1,
        package_version="t",
        experiment="",
    )
    assert report.primary == "task_success" and report.simulator_faults == 1
    rows = {r.condition: r for r in report.students[0].rows}
    assert rows["baseline"].task_success.mean == 0.0 and rows["library"].task_success.mean == 0.5
    assert rows["library"].simulator_faults == 1 and rows["library"].judged == 4 and rows["library"].episodes == 5
    assert report.students[0].gap_closed.mean == 0.5  # on task success, though satisfaction fell
    assert report.students[0].gap_closed_satisfaction is not None
    assert report.students[0].gap_closed_satisfaction.mean is None  # the teacher is no happier than the baseline
    assert report.students[0].library_minus_baseline.mean == 0.5  # paired by seed: +1 and 0 in each scenario
    assert report.min_detectable_difference is not None
    text = to_markdown(report)
    assert "Library minus baseline for student (task success" in text
    assert "task success" in text and "simulator" in text and "not been calibrated" in text


def test_items_met_shows_the_library_s_effect_when_no_episode_is_a_task_success() -> None:
    """On the embedded models every condition fails the checklist's conjunction; items met still moves."""

    def partial(sid: str, condition: str, trial: int, met: int) -> Episode:
        e = ep(sid, condition, "teacher" if condition == "teacher" else "student", trial, 6)
        items = [CriterionResult(id=f"item-{i}", status="met" if i < met else "not_met") for i in range(5)]
        v = e.verdict.model_copy(update={"task_success": False, "criteria": items})  # type: ignore[union-attr]
        return e.model_copy(update={"verdict": v})

    # items met out of 5 per (scenario, trial): the library beats the baseline on every seed
    met = {"baseline": [2, 1, 2, 3], "library": [3, 2, 4, 4], "teacher": [4, 4, 4, 4]}
    episodes = [
        partial("a" if i < 2 else "b", condition, i % 2, m)
        for condition, values in met.items()
        for i, m in enumerate(values)
    ]
    report = summarize_evaluation(
        episodes,
        CONFIG.model_copy(update={"conditions": ["baseline", "library", "teacher"]}),
        library_version=1,
        package_version="t",
        experiment="",
    )
    assert report.primary == "task_success"
    (student,) = report.students
    rows = {r.condition: r for r in student.rows}
    assert report.teacher is not None
    assert [r.task_success.mean for r in (*student.rows, report.teacher)] == [0.0, 0.0, 0.0]
    assert student.library_minus_baseline.mean == 0.0  # the primary outcome cannot tell them apart
    assert rows["baseline"].items_met.mean == pytest.approx(0.4)
    assert rows["library"].items_met.mean == pytest.approx(0.65) and rows["library"].items_met.n == 4
    assert report.teacher.items_met.mean == pytest.approx(0.8)
    diff = student.library_minus_baseline_items
    assert diff.mean == pytest.approx(0.25) and diff.n == 4  # +0.2, +0.2, +0.4, +0.2
    assert diff.low is not None and diff.low > 0  # every pair favours the library
    assert student.gap_closed_items is not None
    assert student.gap_closed_items.mean == pytest.approx((0.65 - 0.4) / (0.8 - 0.4))
    text = to_markdown(report)
    assert "| items met (95% CI) |" in text and f"| {rows['library'].items_met} |" in text
    assert (
        f"Library minus baseline for student (items met, 0-1 scale, paired by seed, 95% CI over scenarios then "
        f"trials): {diff}." in text
    )

    # a results.json written before items met was reported still loads, its items figures empty
    old = json.loads(report.model_dump_json())
    for s in old["students"]:
        del s["gap_closed_items"], s["library_minus_baseline_items"]
        for r in s["rows"]:
            del r["items_met"]
    del old["teacher"]["items_met"]
    loaded = EvaluationReport.model_validate_json(json.dumps(old))
    assert loaded.students[0].rows[0].items_met.mean is None and loaded.students[0].gap_closed_items is None
    assert loaded.students[0].library_minus_baseline_items.n == 0
    assert "(items met" not in to_markdown(loaded)
