"""Retrieval hit rate: did the library show held-out scenarios strategies learned on their own situation?"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from autogen_core.models import LLMMessage

from coachlab.errors import ConfigError
from coachlab.experiments.config import EvaluateConfig, Experiment, load_experiment, load_scenarios
from coachlab.experiments.evaluate import evaluate_experiment
from coachlab.experiments.evaluate_markdown import to_markdown
from coachlab.experiments.evaluation_report import EvaluationReport, summarize_evaluation
from coachlab.experiments.hit_rate import learned_situations, situations_by_origin
from coachlab.experiments.simulate import build_backends
from coachlab.explorer import ScenarioTree
from coachlab.library import LibraryStore, RetrievalConfig
from coachlab.llm.dryrun import DRY_RUN_GOOD_REPLY
from coachlab.schema import (
    AgentMessage,
    AuditStatus,
    Criterion,
    Episode,
    Event,
    MergedOrigin,
    Provenance,
    Strategy,
    StrategyShown,
    TerminationReason,
)
from coachlab.testing import ScriptedChatCompletionClient, dry_run_client, message_text
from helpers import logged_episode, scenario, verdict

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 1, 1, tzinfo=UTC)

LATE = "My parcel is late and the tracking has not moved since Monday."
BILL = "My phone bill doubled this month and I do not know why."
REFUND = "I would like my money back for a jacket I bought two months ago."
CRITERION = Criterion(id="next-step", text="names the next step and gives a reference", example=DRY_RUN_GOOD_REPLY)


def _strategy(sid: str, situation: str, *, node: str, scenario_id: str | None = None) -> Strategy:
    made = Strategy(
        id=sid,
        situation=situation,
        guidance="Name the next step and give a reference.",
        provenance=Provenance(scenario_id=scenario_id or node, node_id=node, teacher_model="teacher"),
    )
    return made.with_status(AuditStatus.APPROVED, by="train", at=NOW, why="verified")


# Learned on a child node of the stalled-tracking training scenario; and on a refund-past-window one, though its
# text reads like a billing tip (so retrieval shows it for the bill-shock case: shown, but not a hit).
LATE_TIP = _strategy(
    "late-tip", "When a parcel is late and the tracking has not moved", node="tr-late.1", scenario_id="tr-late-1"
)
BILL_TIP = _strategy("bill-tip", "When a phone bill doubled", node="tr-refund")


def _tree() -> ScenarioTree:
    """A tree trained before scenarios had situations: its nodes carry none."""
    tree = ScenarioTree()
    tree.add_root(scenario(id="tr-late"))
    tree.add_child("tr-late", scenario(id="tr-late"), mutation="angrier", iteration=1)
    return tree


def test_a_child_node_maps_to_its_root_s_situation_and_merged_origins_count() -> None:
    train = [scenario(id="tr-late", situation="stalled-tracking"), scenario(id="tr-refund", situation="refund")]
    tree = _tree()
    assert tree.root_of("tr-late.1").id == "tr-late" and tree.root_of("tr-late").id == "tr-late"
    origins = situations_by_origin(train, tree)
    assert origins["tr-late.1"] == "stalled-tracking" and origins["tr-late-1"] == "stalled-tracking"
    origin = MergedOrigin(candidate_id="c", situation="s", guidance="g", similarity=0.9, provenance=LATE_TIP.provenance)
    merged = BILL_TIP.model_copy(update={"merged": [origin]})
    learned = learned_situations([LATE_TIP, merged, Strategy(id="bare", situation="s", guidance="g")], origins)
    assert learned == {
        "late-tip": frozenset({"stalled-tracking"}),
        "bill-tip": frozenset({"refund", "stalled-tracking"}),
        "bare": frozenset(),
    }


def _episode(sid: str, condition: str, trial: int, shown: Sequence[Sequence[str]]) -> Episode:
    events: list[Event] = []
    for turn, ids in enumerate(shown):
        if ids:
            events.append(StrategyShown(turn=turn, strategy_ids=list(ids)))
        events.append(AgentMessage(turn=turn, text="ok"))
    return logged_episode(sid, condition, trial, events, (len(shown), TerminationReason.MAX_TURNS), verdict(5))


def _summary(situations: dict[str, str]) -> EvaluationReport:
    config = EvaluateConfig(scenarios=["ho-late", "ho-bill", "ho-plain"], trials=1, conditions=["baseline", "library"])
    episodes = [
        _episode("ho-late", "library", 0, [["late-tip", "bill-tip"], []]),  # a hit, then nothing shown
        _episode("ho-bill", "library", 0, [["bill-tip"], ["bill-tip"]]),  # shown twice, learned elsewhere
        _episode("ho-plain", "library", 0, [["late-tip"]]),  # no situation: not counted
        _episode("ho-late", "baseline", 0, [[], []]),  # not the library: not counted
    ]
    learned = {"late-tip": ["stalled-tracking"], "bill-tip": ["refund-past-window"]}
    return summarize_evaluation(
        episodes,
        config,
        library_version=1,
        package_version="t",
        experiment="x",
        strategy_ids=["late-tip", "bill-tip"],
        situations=situations,
        learned_in=learned,
    )


def test_hit_rate_counts_library_turns_of_held_out_scenarios_with_a_situation() -> None:
    report = _summary({"ho-late": "stalled-tracking", "ho-bill": "bill-shock"})
    hit = report.students[0].retrieval
    assert hit is not None
    assert (hit.scenarios, hit.turns, hit.shown, hit.hits, hit.available) == (2, 4, 3, 1, 2)
    assert (hit.shown_rate, hit.hit_rate, hit.ceiling) == (0.75, 0.25, 0.5)
    md = to_markdown(report)
    assert (
        "Retrieval hit rate for student (library condition, 4 agent turns of 2 held-out scenario(s) with a "
        "situation): a strategy shown in 75% (3); one learned on the same situation in 25% (1); the library holds "
        "one for the situation in 50% (2) (the ceiling)."
    ) in md
    assert EvaluationReport.model_validate_json(report.model_dump_json()) == report


def test_without_situations_the_hit_rate_is_n_a() -> None:
    report = _summary({})
    assert report.students[0].retrieval is None
    assert "Retrieval hit rate for student: n/a (no held-out scenario has a `situation`" in to_markdown(report)


def _experiment() -> Experiment:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    held_out = {
        "ho-late": scenario(id="ho-late", opening_line=LATE, situation="stalled-tracking"),
        "ho-bill": scenario(id="ho-bill", opening_line=BILL, situation="bill-shock"),
        "ho-refund": scenario(id="ho-refund", opening_line=REFUND, situation="refund-past-window"),
        "ho-plain": scenario(id="ho-plain", opening_line=LATE),
    }
    held_out = {k: v.model_copy(update={"success_criteria": [CRITERION]}) for k, v in held_out.items()}
    train = {
        "tr-late": scenario(id="tr-late", situation="stalled-tracking"),
        "tr-refund": scenario(id="tr-refund", situation="refund-past-window"),
    }
    exp.scenarios = {**train, **held_out}
    exp.config = exp.config.model_copy(
        update={
            "evaluate": EvaluateConfig(scenarios=list(held_out), trials=2, conditions=["baseline", "library"]),
            "retrieval": RetrievalConfig(kind="lexical", k=2),
            "judge": exp.config.judge.model_copy(update={"gate": "off"}),
            "simulate": exp.config.simulate.model_copy(update={"scenarios": list(held_out)}),
            "train": None,
        }
    )
    return exp


def _customer(messages: Sequence[LLMMessage]) -> str:
    return "Thanks. [DONE]" if "DRY-1" in message_text(messages[-1]) else "That does not help. [LEAVE]"


def test_evaluate_reports_the_hit_rate_of_a_scripted_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    LibraryStore(run / "library").commit([LATE_TIP, BILL_TIP], note="trained")
    _tree().save(run / "tree.json")
    exp = _experiment()
    clients = {
        "customer": ScriptedChatCompletionClient(_customer),
        "judge": dry_run_client("judge"),
        "student": ScriptedChatCompletionClient(lambda _: DRY_RUN_GOOD_REPLY),
        "teacher": dry_run_client("teacher", strong=True),
    }
    backends = build_backends(exp, list(clients), clients=clients)
    report = asyncio.run(evaluate_experiment(exp, backends, run_dir=run, resume=False, concurrency=2, use_cache=False))
    hit = report.students[0].retrieval
    assert hit is not None
    # one agent turn per episode, 2 trials of 3 scenarios with a situation: ho-late shows late-tip (learned on a child
    # of tr-late: a hit), ho-bill shows bill-tip (learned on tr-refund: shown, no hit, and the library holds nothing
    # for bill shock), ho-refund shows nothing though bill-tip was learned on its situation (under the ceiling).
    assert (hit.scenarios, hit.turns, hit.shown, hit.hits, hit.available) == (3, 6, 4, 2, 4)
    text = (run / "evaluation" / "results.md").read_text()
    assert "a strategy shown in 67% (4); one learned on the same situation in 33% (2)" in text
    assert "in 67% (4) (the ceiling)" in text


def test_a_bad_situation_is_a_file_line_field_error(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "scenarios:\n  - id: s\n    domain: d\n    title: t\n    issue: i\n    policy: [p]\n    persona: x\n"
        "    situation: Stalled Tracking\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_scenarios([path], {})
    assert f"{path}:8: scenarios.0.situation" in str(caught.value)
