"""The control arms of evaluate: the oracle ceiling, the placebo, and the library's share of the ceiling."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import pytest
from autogen_core.models import AssistantMessage, LLMMessage, SystemMessage, UserMessage

from coachlab.agents.service import service_system_prompt, service_view
from coachlab.experiments.config import EvaluateConfig, Experiment, load_experiment
from coachlab.experiments.controls import (
    ORACLE_SITUATION,
    item_words,
    oracle_guidance,
    oracle_lines,
    placebo_guidance,
    placebo_lines,
    twin_guidance,
    twins,
)
from coachlab.experiments.evaluate import evaluate_experiment, evaluation_plans
from coachlab.experiments.evaluate_markdown import to_markdown
from coachlab.experiments.evaluation_report import summarize_evaluation
from coachlab.experiments.results import EpisodeLog
from coachlab.experiments.simulate import build_backends
from coachlab.library import RetrievalConfig
from coachlab.library.coaching import add_coaching, coaching_block
from coachlab.library.retrieval import Placement, content_words
from coachlab.llm.dryrun import DRY_RUN_GOOD_REPLY
from coachlab.schema import (
    AgentMessage,
    Criterion,
    CriterionResult,
    Episode,
    Scenario,
    StrategyShown,
    TerminationReason,
)
from coachlab.testing import ScriptedChatCompletionClient, dry_run_client, message_text
from helpers import logged_episode, scenario, verdict

ROOT = Path(__file__).resolve().parents[1]

ITEMS = [
    Criterion(id="ask-date", text="asks by when the customer needs the item", example="When do you need it by?"),
    Criterion(id="reship", text="offers a free express reship", example="I can send a new one by express, free."),
    Criterion(id="no-date", text="promises an exact delivery day", forbidden=True, example="It arrives Tuesday."),
    Criterion(id="sorry", text="apologises", level="nice", example="I'm so sorry about this."),
    Criterion(id="plain", text="gives a reference number for the reship"),
]


def test_the_oracle_is_the_must_items_as_words_to_say_in_checklist_order() -> None:
    sc = scenario(success_criteria=ITEMS)
    lines = oracle_lines(sc)
    assert [g.guidance for g in lines] == [
        "Say, in your own words: When do you need it by?",
        "Say, in your own words: I can send a new one by express, free.",
        "Give a reference number for the reship.",  # no example: the item as an order
    ]
    assert [g.id for g in lines] == ["oracle-ask-date", "oracle-reship", "oracle-plain"]
    assert {g.situation for g in lines} == {ORACLE_SITUATION}
    assert [g.guidance for g in oracle_lines(sc, "imperative")][:2] == [
        "Ask by when the customer needs the item.",
        "Offer a free express reship.",
    ]
    assert oracle_lines(scenario()) == []  # no checklist, no answer key


FUNCTION_WORDS = {"your", "will", "please", "this", "would", "that", "from", "have", "with", "what", "when", "they"}


def words(sc: Scenario) -> set[str]:
    """Every word of the scenario's items, spelled out apart from `content_words`."""
    text = " ".join(t for c in sc.success_criteria for t in (c.text, *c.all_examples))
    return set(re.findall(r"[a-z]+", text.lower()))


def test_the_placebo_fits_no_item_and_matches_the_oracle_in_count_form_and_length() -> None:
    """On every shipped scenario with a checklist, drawn from the others as evaluate draws it."""
    scenarios: list[Scenario] = []
    for name in ("quickstart.yaml", "benchmark.yaml"):
        scenarios += [s for s in load_experiment(ROOT / "experiments" / name).scenarios.values() if oracle_lines(s)]
    assert len(scenarios) >= 20
    provide = placebo_guidance(scenarios)
    for sc in scenarios:
        oracle = oracle_lines(sc)
        placebo = asyncio.run(provide(sc, []))
        assert len(placebo) == len(oracle), sc.id
        banned = item_words(sc)
        for o, p in zip(oracle, placebo, strict=True):
            assert p.situation == o.situation and p.guidance.startswith("Say, in your own words: ")
            said = p.guidance.removeprefix("Say, in your own words: ")
            assert not banned & content_words(said), (sc.id, said)
            assert not words(sc) & {w for w in re.findall(r"[a-z]+", said.lower()) if len(w) > 3} - FUNCTION_WORDS
            assert 0.6 <= len(p.guidance) / len(o.guidance) <= 1.6, (sc.id, o.guidance, p.guidance)
        assert len({p.guidance for p in placebo}) == len(placebo)  # no line twice


def test_the_placebo_takes_the_closest_length_from_the_pool_and_no_line_of_the_scenarios_own_words() -> None:
    sc = scenario(success_criteria=ITEMS[:2])
    pool = [
        "I can send it today.",  # shares "send" with the reship item: never drawn
        "Our lift is out of order until Friday afternoon.",
        "Tea is hot.",
    ]
    drawn = [g.guidance.removeprefix("Say, in your own words: ") for g in placebo_lines(sc, pool)]
    assert drawn[0] == "Tea is hot."  # closest to "When do you need it by?" (23 characters)
    assert "I can send it today." not in drawn and len(drawn) == 2


def test_the_control_arms_skip_scenarios_without_a_must_item() -> None:
    config = EvaluateConfig(scenarios=["a", "b"], trials=2, conditions=["baseline", "oracle", "placebo"])
    plans = evaluation_plans(config, [scenario(id="a", success_criteria=ITEMS), scenario(id="b")], [])
    assert sorted({(p.scenario.id, p.condition) for p in plans}) == [
        ("a", "baseline"),
        ("a", "oracle"),
        ("a", "placebo"),
        ("b", "baseline"),
    ]


@pytest.mark.parametrize("placement", get_args(Placement))
def test_the_guidance_is_placed_the_same_in_simulation_and_in_serve(placement: Placement) -> None:
    sc = scenario(success_criteria=ITEMS)
    shown = asyncio.run(oracle_guidance()(sc, []))
    dialogue = [("customer", "My parcel is late."), ("agent", "Sorry! Let me look."), ("customer", "Well?")]
    roles = {SystemMessage: "system", UserMessage: "user", AssistantMessage: "assistant"}
    simulated = [(roles[type(m)], m.content) for m in service_view(sc, dialogue, shown, placement)]
    messages = [{"role": "system", "content": service_system_prompt(sc)}] + [
        {"role": "user" if who == "customer" else "assistant", "content": text} for who, text in dialogue
    ]
    served = add_coaching(messages, shown, placement=placement)
    assert simulated == [(m["role"], m["content"]) for m in served]
    block = coaching_block(shown)
    texts = [str(text) for _, text in simulated]
    if placement == "system":
        assert len(simulated) == 4 and texts[0].endswith("\n" + block)
    elif placement == "before_last":
        assert texts[0] == service_system_prompt(sc) and simulated[3] == ("system", block)
    else:
        assert texts[0].endswith("\n" + block)
        assert simulated[3] == ("system", f"Reminder from your coach: {shown[0].situation}: {shown[0].guidance}")
    assert simulated[-1] == ("user", "Well?")  # the customer's last line stays last
    assert add_coaching(messages, [], placement=placement) == messages


def _ep(sid: str, condition: str, trial: int, met: int, success: bool = False) -> Episode:
    """An episode that met `met` of 5 checklist items."""
    items = [CriterionResult(id=f"item-{i}", status="met" if i < met else "not_met") for i in range(5)]
    end = (1, TerminationReason.CUSTOMER_SATISFIED)
    return logged_episode(sid, condition, trial, [], end, verdict(5, task_success=success, criteria=items))


def test_share_of_the_ceiling_on_known_numbers_and_none_without_a_gap() -> None:
    config = EvaluateConfig(scenarios=["a", "b"], trials=2, conditions=["baseline", "library", "oracle", "placebo"])
    items = {"baseline": 1, "library": 2, "oracle": 3, "placebo": 1}
    episodes = [_ep(s, c, t, x, success=c == "oracle") for s in "ab" for t in range(2) for c, x in items.items()]
    (student,) = summarize_evaluation(episodes, config, library_version=1, package_version="0", experiment="x").students
    assert student.share_of_ceiling_items is not None and student.share_of_ceiling_items.mean == pytest.approx(0.5)
    assert student.share_of_ceiling is not None and student.share_of_ceiling.mean == 0.0  # task success: 0 of 1
    arms = {c.condition: c for c in student.contrasts}
    assert list(arms) == ["library", "oracle", "placebo"]
    assert arms["oracle"].minus_baseline.mean == 1.0
    assert arms["placebo"].minus_baseline_items is not None and arms["placebo"].minus_baseline_items.mean == 0.0

    flat = [_ep(s, c, t, 2) for s in "ab" for t in range(2) for c in ("baseline", "library", "oracle")]
    flat_config = config.model_copy(update={"conditions": ["baseline", "library", "oracle"]})
    report = summarize_evaluation(flat, flat_config, library_version=1, package_version="0", experiment="x")
    (student,) = report.students
    assert student.share_of_ceiling is not None and student.share_of_ceiling.mean is None  # no division by zero
    assert student.share_of_ceiling_items is not None and student.share_of_ceiling_items.mean is None
    md = to_markdown(report)
    assert "| student | oracle | 0.00 [0.00, 0.00] | 0.00 [0.00, 0.00] |" in md
    assert "the oracle was no better than the baseline" in md

    without = summarize_evaluation(
        flat,
        config.model_copy(update={"conditions": ["baseline", "library"]}),
        library_version=1,
        package_version="0",
        experiment="x",
    )
    assert without.students[0].share_of_ceiling is None and "oracle ceiling" not in to_markdown(without)


VAGUE = "I understand. I have checked your records and here is what I can do for you today."
"""The line the dry-run customer hears as no help (it asks again, then leaves)."""


def _experiment(scenarios: dict[str, Scenario]) -> Experiment:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    exp.scenarios = scenarios
    exp.config = exp.config.model_copy(
        update={
            "evaluate": EvaluateConfig(
                scenarios=list(scenarios), trials=2, conditions=["baseline", "oracle", "placebo"]
            ),
            "retrieval": RetrievalConfig(kind="lexical", k=2),
            "judge": exp.config.judge.model_copy(update={"gate": "off"}),
            "simulate": exp.config.simulate.model_copy(update={"scenarios": list(scenarios)}),
            "train": None,
        }
    )
    return exp


def test_evaluate_shows_the_oracle_every_turn_and_the_student_that_follows_it_reaches_the_ceiling(
    tmp_path: Path,
) -> None:
    """A student that says what its coach tells it: the oracle arm succeeds, the baseline and placebo do not."""
    done = Criterion(id="next-step", text="names the next step and gives a reference", example=DRY_RUN_GOOD_REPLY)
    scenarios = {
        sid: scenario(id=sid, opening_line=line, success_criteria=[done])
        for sid, line in (("late", "My parcel is late."), ("bill", "My bill doubled."))
    }
    prompts: list[str] = []

    def student(messages: Sequence[LLMMessage]) -> str:
        system = message_text(messages[0])
        prompts.append(system)
        return DRY_RUN_GOOD_REPLY if DRY_RUN_GOOD_REPLY in system else VAGUE

    exp = _experiment(scenarios)
    clients = {
        "customer": dry_run_client("customer"),
        "judge": dry_run_client("judge"),
        "student": ScriptedChatCompletionClient(student),
        "teacher": dry_run_client("teacher", strong=True),
    }
    backends = build_backends(exp, list(clients), clients=clients)  # type: ignore[arg-type]
    run = tmp_path / "run"
    report = asyncio.run(evaluate_experiment(exp, backends, run_dir=run, resume=False, concurrency=2, use_cache=False))
    (result,) = report.students
    rows = {r.condition: r for r in result.rows}
    assert rows["oracle"].task_success.mean == 1.0
    assert rows["baseline"].task_success.mean == 0.0 and rows["placebo"].task_success.mean == 0.0
    arms = {c.condition: c.minus_baseline.mean for c in result.contrasts}
    assert arms == {"oracle": 1.0, "placebo": 0.0}

    episodes = list(EpisodeLog(run / "evaluation" / "episodes.jsonl").read().values())
    oracle_turns = 0
    for e in episodes:
        shown = [x.strategy_ids for x in e.events if isinstance(x, StrategyShown)]
        turns = sum(isinstance(x, AgentMessage) for x in e.events)
        if e.condition == "oracle":
            assert shown == [["oracle-next-step"]] * turns  # every turn, exactly the must item
            oracle_turns += turns
        elif e.condition == "placebo":
            assert shown == [["placebo-1"]] * turns
        else:
            assert shown == []
    oracle_block = coaching_block(oracle_lines(scenarios["late"]))
    assert sum(p.endswith("\n" + oracle_block) for p in prompts) == oracle_turns


def test_the_twin_is_the_training_scenario_of_the_same_situation_with_its_case_facts_generalised() -> None:
    reship = Criterion(
        id="reship", text="offers a free reship", example="I'll send a new camping stove, ref NF-RS-220481."
    )
    twin = scenario(
        id="train-stall",
        situation="stalled-tracking",
        facts={"item": "Trailblaze camping stove"},
        success_criteria=[reship],
    )
    held = scenario(id="ho-stall", situation="stalled-tracking", success_criteria=ITEMS)
    other = scenario(id="ho-bill", situation="bill-shock", success_criteria=ITEMS)
    pairs = twins([held, other], [twin])
    assert list(pairs) == ["ho-stall"] and pairs["ho-stall"].id == "train-stall"
    (line,) = asyncio.run(twin_guidance(pairs)(held, []))
    assert line.id == "twin-reship" and line.situation == ORACLE_SITUATION
    assert line.guidance == "Say, in your own words: I'll send a new item, ref the reference number."
    assert asyncio.run(twin_guidance(pairs)(other, [])) == []

    config = EvaluateConfig(scenarios=["ho-stall", "ho-bill"], trials=1, conditions=["baseline", "twin"])
    plans = evaluation_plans(config, [held, other], [], training=[twin])
    assert sorted((p.scenario.id, p.condition) for p in plans) == [
        ("ho-bill", "baseline"),
        ("ho-stall", "baseline"),
        ("ho-stall", "twin"),
    ]
