"""Per-strategy effect and harm: evaluate measures each strategy where it was shown and retires what does harm."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from autogen_core.models import LLMMessage
from typer.testing import CliRunner

from coachlab.cli import app
from coachlab.experiments.config import EvaluateConfig, Experiment, load_experiment
from coachlab.experiments.effects import StrategyEffect, only_retired_since, retire_harmful
from coachlab.experiments.evaluate import evaluate_experiment, evaluation_plans
from coachlab.experiments.evaluate_markdown import to_markdown
from coachlab.experiments.evaluation_report import summarize_evaluation
from coachlab.experiments.simulate import build_backends
from coachlab.library import LexicalRetriever, LibraryStore, RetrievalConfig
from coachlab.library.coaching import load_library
from coachlab.library.export import generic_strategies, prompt_block
from coachlab.llm.dryrun import DRY_RUN_GOOD_REPLY
from coachlab.schema import (
    AuditStatus,
    Criterion,
    CriterionResult,
    Episode,
    Strategy,
    StrategyShown,
    TerminationReason,
)
from coachlab.testing import ScriptedChatCompletionClient, dry_run_client, message_text
from helpers import logged_episode, scenario, verdict

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def ep(sid: str, condition: str, trial: int, success: bool, shown: Sequence[str] = ()) -> Episode:
    events = [StrategyShown(turn=0, strategy_ids=list(shown))] if shown else []
    end = (1, TerminationReason.CUSTOMER_SATISFIED)
    return logged_episode(sid, condition, trial, events, end, verdict(8 if success else 3, task_success=success))


CONFIG = EvaluateConfig(scenarios=["a", "b", "c", "d"], trials=4, conditions=["baseline", "library"])


def test_a_strategy_shown_where_the_library_loses_is_harmful_with_its_numbers() -> None:
    library = {  # task success per trial; "bad" is shown in a and b, "good" in c and d
        "a": [False, False, True, False],
        "b": [False, False, False, False],
        "c": [True, True, False, True],
        "d": [True, True, True, True],
    }
    episodes = []
    for sid, outcomes in library.items():
        for t, success in enumerate(outcomes):
            episodes.append(ep(sid, "library", t, success, ["bad"] if sid in "ab" else ["good"]))
            episodes.append(ep(sid, "baseline", t, sid in "ab"))  # the baseline does a and b, fails c and d
    report = summarize_evaluation(
        episodes, CONFIG, library_version=2, package_version="t", experiment="x", strategy_ids=["bad", "good", "idle"]
    )
    effects = {e.strategy_id: e for e in report.students[0].strategies}
    bad, good, idle = effects["bad"], effects["good"], effects["idle"]
    assert (bad.episodes, bad.turns) == (8, 8)
    assert bad.success_shown.mean == 1 / 8 and bad.success_not_shown.mean == 7 / 8
    assert bad.success_effect.mean == -0.75
    assert (bad.success_effect.low, bad.success_effect.high) == (-1.0, -0.25)  # resampling scenarios, then episodes
    assert bad.vs_baseline is not None and bad.vs_baseline.mean == -7 / 8  # 1 of 8 kept what the baseline did
    assert bad.harmful and bad.direction == "harms"
    assert not good.harmful and good.direction == "helps"
    assert good.vs_baseline is not None and good.vs_baseline.mean == 7 / 8
    assert idle.episodes == 0 and idle.success_effect.mean is None and not idle.harmful
    md = to_markdown(report)
    assert "| student | bad | 8 (8) | 12% / 88% | -0.75 [-1.00, -0.25] |" in md
    assert md.split("| student | bad |")[1].split("\n")[0].endswith("| harmful |")
    # too few episodes shown: the same numbers are not enough to retire it
    strict = summarize_evaluation(
        episodes,
        CONFIG.model_copy(update={"retire_min_episodes": 9}),
        library_version=2,
        package_version="t",
        experiment="x",
    )
    assert not any(e.harmful for e in strict.students[0].strategies)


def test_a_strategy_retrieved_only_on_hard_scenarios_is_not_blamed_for_them() -> None:
    """Shown only where the baseline fails too: worse than where it was not shown, but no worse than no library."""
    episodes = []
    for sid in "abcd":
        for t in range(3):
            easy = sid in "cd"
            episodes.append(ep(sid, "library", t, easy, [] if easy else ["hard-case"]))
            episodes.append(ep(sid, "baseline", t, easy))
    report = summarize_evaluation(episodes, CONFIG, library_version=1, package_version="t", experiment="x")
    (hard,) = report.students[0].strategies
    assert hard.success_effect.mean == -1.0 and hard.success_effect.high == -1.0
    assert hard.vs_baseline is not None and hard.vs_baseline.mean == 0.0
    assert not hard.harmful


def test_items_met_shown_vs_not_is_reported_when_no_episode_is_a_task_success() -> None:
    """Every episode fails the checklist's conjunction; items met still tells where a strategy was shown."""

    def partial(sid: str, trial: int, met: int, shown: Sequence[str]) -> Episode:
        e = ep(sid, "library", trial, False, shown)
        items = [CriterionResult(id=f"item-{i}", status="met" if i < met else "not_met") for i in range(4)]
        return e.model_copy(update={"verdict": verdict(3, task_success=False, criteria=items)})

    episodes = [
        partial(sid, t, 1 if sid in "ab" else 3, ["terse"] if sid in "ab" else []) for sid in "abcd" for t in range(4)
    ]
    config = CONFIG.model_copy(update={"conditions": ["library"]})
    report = summarize_evaluation(episodes, config, library_version=1, package_version="t", experiment="x")
    (terse,) = report.students[0].strategies
    assert terse.items_shown.mean == 0.25 and terse.items_not_shown.mean == 0.75
    assert terse.items_effect.mean == -0.5 and terse.items_effect.high is not None and terse.items_effect.high < 0
    assert terse.success_effect.mean == 0.0 and not terse.harmful  # harm stays on the primary outcome
    assert f"| student | terse | 8 (8) | 0% / 0% | {terse.success_effect} | 25% / 75% | {terse.items_effect} |" in (
        to_markdown(report)
    )


# A run: the student does its job unless a (harmful) strategy tells it to stall; lexical retrieval shows that
# strategy for late parcels only.
HARMFUL = "Tell the customer to wait another week and give no reference."
LATE = "My parcel is late and the tracking has not moved since Monday."
BILL = "My phone bill doubled this month and I do not know why."
CRITERION = Criterion(id="next-step", text="names the next step and gives a reference", example=DRY_RUN_GOOD_REPLY)


def _strategy(sid: str, situation: str, guidance: str) -> Strategy:
    made = Strategy(id=sid, situation=situation, guidance=guidance)
    return made.with_status(AuditStatus.APPROVED, by="train", at=NOW, why="verified")


STALL = _strategy("stall-late-parcel", "When a parcel is late and the tracking has not moved", HARMFUL)
BILLING = _strategy("explain-bill", "When a phone bill doubled", "Itemise the bill and name the next step.")


def _student(messages: Sequence[LLMMessage]) -> str:
    return "Please wait another week." if HARMFUL in message_text(messages[0]) else DRY_RUN_GOOD_REPLY


def _customer(messages: Sequence[LLMMessage]) -> str:
    return "Thanks. [DONE]" if "DRY-1" in message_text(messages[-1]) else "That does not help. [LEAVE]"


def _experiment(trials: int = 2) -> Experiment:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    scenarios = {
        f"{kind}-{i}": scenario(id=f"{kind}-{i}", opening_line=line, success_criteria=[CRITERION])
        for kind, line in (("late", LATE), ("bill", BILL))
        for i in (1, 2)
    }
    exp.scenarios = scenarios
    exp.config = exp.config.model_copy(
        update={
            "evaluate": EvaluateConfig(scenarios=list(scenarios), trials=trials, conditions=["baseline", "library"]),
            "retrieval": RetrievalConfig(kind="lexical", k=2),
            "judge": exp.config.judge.model_copy(update={"gate": "off"}),
            "simulate": exp.config.simulate.model_copy(update={"scenarios": list(scenarios)}),
            "train": None,
        }
    )
    return exp


def _backends(exp: Experiment) -> dict[str, object]:
    clients = {
        "customer": ScriptedChatCompletionClient(_customer),
        "judge": dry_run_client("judge"),
        "student": ScriptedChatCompletionClient(_student),
        "teacher": dry_run_client("teacher", strong=True),
    }
    return build_backends(exp, list(clients), clients=clients)  # type: ignore[return-value]


def _evaluate(exp: Experiment, run: Path, *, resume: bool = False):  # type: ignore[no-untyped-def]
    return asyncio.run(
        evaluate_experiment(
            exp,
            _backends(exp),
            run_dir=run,
            resume=resume,
            concurrency=4,
            use_cache=False,  # type: ignore[arg-type]
        )
    )


def test_evaluate_retires_the_harmful_strategy_with_its_numbers_and_nothing_serves_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = LibraryStore(run / "library")
    store.commit([STALL, BILLING], note="trained")
    report = _evaluate(_experiment(), run)
    (student,) = report.students
    effects = {e.strategy_id: e for e in student.strategies}
    stall = effects["stall-late-parcel"]
    assert stall.episodes == 4 and stall.turns == 4  # both late-parcel scenarios, 2 trials, 1 agent turn each
    assert stall.success_shown.mean == 0.0 and stall.success_not_shown.mean == 1.0
    assert stall.success_effect.mean == -1.0 and stall.success_effect.high == -1.0
    assert stall.vs_baseline is not None and stall.vs_baseline.mean == -1.0
    assert stall.harmful and not effects["explain-bill"].harmful
    assert report.retired == ["stall-late-parcel"]

    latest = store.load()
    assert latest.version == 2 and latest.note == "evaluate retired stall-late-parcel"
    retired = latest.get("stall-late-parcel")
    assert retired.status is AuditStatus.RETIRED and retired.audit[-1].by == "evaluate"
    why = retired.audit[-1].why
    assert "library v1" in why and "task success 0.00 in 4 scored episodes shown vs 1.00 in 4 not shown" in why
    assert "effect -1.00 [-1.00, -1.00]" in why
    assert latest.get("explain-bill").status is AuditStatus.APPROVED  # kept: it did no harm
    assert [s.id for s in latest.strategies] == ["stall-late-parcel", "explain-bill"]  # retired, never deleted

    # Never served again: retrieval, the generic block, production loading (even with proposed ones).
    hits = LexicalRetriever(latest.strategies).search(f"customer: {LATE}", k=5, floor=0.0)
    assert [s.id for s, _ in hits] == []
    assert [s.id for s in generic_strategies(latest.strategies, 5)] == ["explain-bill"]
    assert HARMFUL not in prompt_block(latest)
    for include_proposed in (False, True):
        served = load_library(run, retrieval=RetrievalConfig(kind="lexical"), include_proposed=include_proposed)
        assert [s.id for s in served.strategies] == ["explain-bill"]
    config = EvaluateConfig(scenarios=["late-parcel"], trials=1, conditions=["library"])
    (plan,) = evaluation_plans(config, [scenario()], latest.strategies, RetrievalConfig(kind="lexical"))
    assert plan.guidance is not None and asyncio.run(plan.guidance(scenario(), [("customer", LATE)])) == []

    # The evaluation measured v1 and says so; resuming it is not refused for the retirement it made itself.
    assert only_retired_since(store.load(1), latest)
    again = _evaluate(_experiment(), run, resume=True)
    assert again.library_version == 1 and again.retired == ["stall-late-parcel"] and store.versions() == [1, 2]
    text = (run / "evaluation" / "results.md").read_text()
    assert "Retired by this evaluation" in text and "| student | stall-late-parcel | 4 (4) | 0% / 100% |" in text

    # library list shows the held-out figures and the status
    listed = CliRunner().invoke(app, ["library", "list", str(run)], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if "│ stall-late-parcel" in line)
    assert "│ retired " in row and "│ 4 episodes (4 turns) │ task success -1.00 [-1.00, -1.00], harmful │" in row
    assert "evaluation of library v1" in listed.output
    only = CliRunner().invoke(app, ["library", "list", str(run), "--status", "retired"], env={"COLUMNS": "250"})
    assert "stall-late-parcel" in only.output and "explain-bill" not in only.output


def test_ablation_runs_the_library_without_each_strategy_on_the_same_seeds(tmp_path: Path) -> None:
    run = tmp_path / "run"
    LibraryStore(run / "library").commit([STALL, BILLING], note="trained")
    exp = _experiment(trials=1)
    assert exp.config.evaluate is not None
    exp.config = exp.config.model_copy(update={"evaluate": exp.config.evaluate.model_copy(update={"ablate": True})})
    report = _evaluate(exp, run)
    effects = {e.strategy_id: e for e in report.students[0].strategies}
    # without the stalling strategy the late-parcel scenarios succeed: the library loses 2 of 4 by having it
    assert effects["stall-late-parcel"].ablation is not None and effects["stall-late-parcel"].ablation.mean == -0.5
    assert effects["explain-bill"].ablation is not None and effects["explain-bill"].ablation.mean == 0.0
    assert {r.condition for r in report.students[0].rows} == {"baseline", "library"}  # rows stay the conditions
    assert report.retired == []  # 2 episodes shown: fewer than retire_min_episodes
    assert "| -0.50 [" in (run / "evaluation" / "results.md").read_text()


def test_evaluate_never_overrides_a_person_s_later_decision(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "library")
    evaluated = store.commit([STALL, BILLING], note="trained")
    harm = StrategyEffect(
        strategy_id="stall-late-parcel", student="student", primary="task_success", episodes=4, turns=4, harmful=True
    )
    store.edit("stall-late-parcel", by="ana", guidance="Offer the express reship and give the reference.")
    store.set_status("stall-late-parcel", AuditStatus.APPROVED, by="ana", why="rewritten")
    assert not only_retired_since(evaluated, store.load())
    assert retire_harmful(store, [harm], evaluated=evaluated) == {}  # the text it measured is gone
    assert store.load().get("stall-late-parcel").status is AuditStatus.APPROVED and store.versions() == [1, 2, 3]
    reasons = retire_harmful(store, [harm], evaluated=store.load())
    assert list(reasons) == ["stall-late-parcel"] and store.load().get("stall-late-parcel").status.value == "retired"
