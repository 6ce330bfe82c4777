"""Verdicts that credit good service in other words: several example lines, the meaning question, word checks.

The labelled set's paraphrase variants are checked here too: a good chat in other words shares no
three words in a row with any example line, and a forbidden item broken in other words is not caught
by the item's pattern (else those cases would not test what they are named for).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest
from autogen_core.models import LLMMessage

from coachlab.agents import build_judge, build_line_grader, line_view
from coachlab.environments import EpisodeAgents, JudgePanel, run_episode
from coachlab.environments.grading import grade_checklist
from coachlab.experiments.config import load_experiment
from coachlab.experiments.criteria import ensure_examples, examples_path, with_saved_examples
from coachlab.judging.calibration import CaseResult, load_calibration_set, summarize_calibration
from coachlab.judging.evidence import asks_for_code, fits, has_code, money_amounts
from coachlab.llm import Backend
from coachlab.schema import AgentMessage, Criterion, Scenario, Verdict
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import agents, lines, scenario, score_json

ROOT = Path(__file__).resolve().parents[1]

RESHIP = Criterion(
    id="reship",
    text="offers to reship the order by free express shipping",
    example="I can send you a new set by free express shipping.",
    examples=["I've put a replacement on our two-day priority courier, at no cost to you."],
)
REFERENCE = Criterion(id="reference", text="gives a reference number for the reship", example="Your reference is RS-1.")
CREDIT = Criterion(
    id="half-credit",
    text="applies a courtesy credit of half the roaming charges ($74)",
    example="I've applied a $74 courtesy credit.",
)


class WordOverlap:
    """A stand-in for the embedding gate: the share of the first text's words found in the second."""

    async def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        def words(text: str) -> set[str]:
            return set(re.findall(r"[a-z0-9$]+", text.lower()))

        return [len(words(a) & words(b)) / max(len(words(a)), 1) for a, b in pairs]


def grader_saying_yes_to(*phrases: str) -> ScriptedChatCompletionClient:
    """Says yes when the quoted message contains one of `phrases` (whatever the item)."""

    def answer(messages: Sequence[LLMMessage]) -> str:
        ask = message_text(messages[-1])
        message = ask.split("<message>")[1].split("</message>")[0]
        return json.dumps({"answer": "yes" if any(p in message for p in phrases) else "no"})

    return ScriptedChatCompletionClient(answer)


def grade(agent_lines: list[str], criteria: list[Criterion], grader: ScriptedChatCompletionClient, **panel: object):
    events = [AgentMessage(turn=i, text=t, origin="model") for i, t in enumerate(agent_lines)]
    judges = JudgePanel(judges=[], graders=[build_line_grader(model_client=grader)], **panel)  # type: ignore[arg-type]
    return {r.id: r for r in asyncio.run(grade_checklist(judges, criteria, events))}


def test_every_example_line_reaches_the_gate_a_paraphrase_of_the_second_passes_it() -> None:
    line = "I've put a replacement on our two-day priority courier for you."
    said_yes = grader_saying_yes_to("priority courier")
    only_first = RESHIP.model_copy(update={"examples": []})
    # Behind the gate, a line like none of the examples cannot count, whatever the grader says...
    assert grade([line], [only_first], said_yes, similarity=WordOverlap(), floor=0.45)["reship"].status == "not_met"
    # ...and the second example line lets the same paraphrase through, credited with the agent's own words.
    result = grade([line], [RESHIP], said_yes, similarity=WordOverlap(), floor=0.45)["reship"]
    assert result.status == "met" and result.quote == line and result.turn == 0


def test_the_meaning_question_shows_the_items_example_lines_and_asks_about_the_act() -> None:
    view = line_view("We will sort it.", RESHIP, question="meaning-examples")
    text = message_text(view[-1])
    assert text.startswith("<message>\nWe will sort it.\n</message>")  # the message first: a shared prefix
    assert "new set by free express shipping" in text and "two-day priority courier" in text
    assert "Action: the agent offers to reship the order by free express shipping." in text
    assert "in any words" in message_text(view[0])
    plain = message_text(line_view("We will sort it.", RESHIP, question="meaning")[-1])
    assert "priority courier" not in plain and "Action:" in plain
    assert "Statement:" in message_text(line_view("We will sort it.", RESHIP, question="statement")[-1])


def test_a_line_nobody_said_is_never_credited() -> None:
    """A grader that says yes to everything still needs an agent line; the quote is the agent's own words."""
    yes = ScriptedChatCompletionClient(lambda m: json.dumps({"answer": "yes"}))
    assert grade([], [RESHIP], yes)["reship"].status == "na"
    said = "Sorry for the wait."
    result = grade([said], [RESHIP], yes)["reship"]
    assert result.quote == said  # never the example's words, never a line the agent did not say


def test_near_misses_stay_not_met_where_the_words_give_them_away() -> None:
    yes = ScriptedChatCompletionClient(lambda m: json.dumps({"answer": "yes"}))  # the agreeable small judge
    no_code = grade(["A reference number would normally follow once it is approved."], [REFERENCE], yes)
    assert no_code["reference"].status == "not_met"
    wrong_amount = grade(["I can take the whole $148 off."], [CREDIT], yes)
    assert wrong_amount["half-credit"].status == "not_met"
    # The same items in other words but with the code or the amount are left to the judge (who said yes).
    assert grade(["Your case code is ML-48213-612."], [REFERENCE], yes)["reference"].status == "met"
    assert grade(["Half the roaming, $74, is off your bill."], [CREDIT], yes)["half-credit"].status == "met"


def test_word_checks_read_amounts_and_codes() -> None:
    assert money_amounts("a $5.99 fee, $1,200 and €25") == {Decimal("5.99"), Decimal("1200"), Decimal("25")}
    assert money_amounts("€25.00") == {Decimal("25")} and money_amounts("25 of them") == set()
    assert has_code("reference RS-48213-0612") and has_code("tag LK4471") and has_code("ticket #58213")
    assert not has_code("in 2 business days, by June 9") and not has_code("a two-day courier")
    assert asks_for_code(REFERENCE) and not asks_for_code(RESHIP) and not asks_for_code(CREDIT)
    assert fits(CREDIT, "No amount named here.")  # no amount in the line: the judge decides


def test_a_hand_off_in_other_words_breaks_the_forbidden_item_when_the_grader_sees_it() -> None:
    handoff = Criterion(
        id="hands-off",
        text="tells the customer to contact another team",
        forbidden=True,
        policy=True,
        example="Please contact our customer service team.",
        pattern=r"contact our customer service",
    )
    line = "Our specialists in the Resolutions group are best placed for this, drop them a line."
    result = grade([line], [handoff], grader_saying_yes_to("drop them a line"))["hands-off"]
    assert result.status == "not_met" and result.quote == line


def test_an_episode_credits_a_paraphrase_the_grader_accepts() -> None:
    case: Scenario = scenario().model_copy(update={"success_criteria": [RESHIP]})
    ags: EpisodeAgents = agents(
        customer=lines("My parcel is late.", "Ok. [DONE]"),
        agent=lines("I've put a replacement on our two-day priority courier, no charge."),
    )[0]
    ags.panel = JudgePanel(
        judges=[build_judge(model_client=ScriptedChatCompletionClient(lambda m: score_json(7)))],
        graders=[build_line_grader(model_client=grader_saying_yes_to("priority courier"))],
        similarity=WordOverlap(),
        question="meaning-examples",
    )
    verdict = asyncio.run(run_episode(case, ags, episode_id="e", seed=1, trial=0)).verdict
    assert verdict is not None and verdict.task_success is True
    assert verdict.criteria[0].quote == "I've put a replacement on our two-day priority courier, no charge."


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9$]+(?:[.'-][a-z0-9]+)*", text.lower())


def _trigrams(text: str) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}


@pytest.mark.parametrize(
    ("experiment", "cases_file", "scenarios"),
    [("quickstart.yaml", None, 7), ("benchmark.yaml", ROOT / "benchmarks" / "data" / "heldout-verdicts.yaml", 12)],
    ids=["shipped", "held-out"],
)
def test_the_paraphrase_cases_share_no_three_words_with_the_examples_and_dodge_the_patterns(
    experiment: str, cases_file: Path | None, scenarios: int
) -> None:
    exp = load_experiment(ROOT / "experiments" / experiment)
    cases = load_calibration_set(cases_file).cases
    paraphrased = [c for c in cases if c.variant == "good-paraphrase"]
    broken = [c for c in cases if c.variant == "forbidden-paraphrase"]
    assert len({c.scenario for c in paraphrased}) == len({c.scenario for c in cases}) == scenarios
    assert {c.scenario for c in broken} == {c.scenario for c in paraphrased}
    for case in paraphrased:
        items = exp.scenarios[case.scenario].success_criteria
        assert set(case.expected.values()) == {"met"}, case.id
        examples = set().union(*(_trigrams(e) for c in items for e in c.all_examples))
        for turn in case.dialogue:
            if turn.role == "agent":
                shared = _trigrams(turn.text) & examples
                assert not shared, f"{case.id}: {shared}"
    for case in broken:
        items = exp.scenarios[case.scenario].success_criteria
        assert all(case.expected[c.id] == "not_met" for c in items if c.forbidden), case.id
        for turn in case.dialogue:
            if turn.role == "agent":
                assert not any(c.matches(turn.text) for c in items), f"{case.id}: {turn.text}"


def test_calibration_reports_paraphrase_recall_near_misses_and_breaches_apart() -> None:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    cases = [c for c in load_calibration_set().cases if c.scenario == "retail-late-delivery"]
    checklist = exp.scenarios["retail-late-delivery"].success_criteria

    def everything_met(case_id: str) -> Verdict:
        from coachlab.schema import CriterionResult

        items = [CriterionResult(id=c.id, status="met") for c in checklist]
        return Verdict(
            rationale="-",
            satisfaction=7,
            resolved=True,
            policy_followed=True,
            failure_turn=None,
            customer_in_role=True,
            criteria=items,
            task_success=True,
        )

    results = [CaseResult(case=c, verdict=everything_met(c.id), seconds=1.0) for c in cases]
    report = summarize_calibration(results, judge="j", votes=1, gate=True, criteria={"retail-late-delivery": checklist})
    assert report.missed_met_paraphrase_rate == 0.0 and report.good_task_success == 1.0
    assert report.near_miss_false_met_rate == 1.0  # a judge that credits everything fails every near-miss...
    assert report.missed_breach_paraphrase_rate == 1.0  # ...misses every breach in other words...
    assert report.false_success == sum(
        1 for c in cases if c.variant not in ("good", "good-paraphrase")
    )  # ...and passes failures


class _Teacher:
    """A scripted teacher backend: writes two example lines per item and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, messages: Sequence[LLMMessage]) -> str:
        self.calls += 1
        found = re.search(r"That line does this: the agent ([^.]+)\.", message_text(messages[-1]))
        item = found.group(1) if found else "?"
        return json.dumps({"lines": [f"In other words: {item}.", f"Put plainly, {item}."]})


def test_the_teacher_writes_more_example_lines_once_saved_for_editing(tmp_path: Path) -> None:
    teacher = _Teacher()
    backends = {"teacher": Backend(name="teacher", client=ScriptedChatCompletionClient(teacher), identity="scripted")}
    authored = Criterion(id="apology", text="apologises", example="Sorry.", examples=["I apologise."])
    case = scenario().model_copy(update={"success_criteria": [RESHIP.model_copy(update={"examples": []}), authored]})
    changed = asyncio.run(ensure_examples([case], run_dir=tmp_path, backends=backends, teacher="teacher", count=2))
    items = {c.id: c for c in changed[case.id].success_criteria}
    assert items["reship"].examples == [
        "In other words: offers to reship the order by free express shipping.",
        "Put plainly, offers to reship the order by free express shipping.",
    ]
    assert items["apology"].examples == ["I apologise."]  # the author's lines are kept as they are
    assert teacher.calls == 1
    path = examples_path(tmp_path, case.id)
    path.write_text(path.read_text().replace("Put plainly", "Said simply"))  # a person edits the file
    again = asyncio.run(ensure_examples([case], run_dir=tmp_path, backends=backends, teacher="teacher", count=2))
    assert teacher.calls == 1  # never written again
    assert "Said simply, offers to reship" in again[case.id].success_criteria[0].examples[1]
    assert with_saved_examples(case, tmp_path) == again[case.id]


def test_a_broken_examples_file_names_the_file(tmp_path: Path) -> None:
    case = scenario().model_copy(update={"success_criteria": [RESHIP]})
    path = examples_path(tmp_path, case.id)
    path.parent.mkdir(parents=True)
    path.write_text("scenario: x\nexamples: {reship: [1, '']}\n")
    with pytest.raises(Exception, match="examples"):
        with_saved_examples(case, tmp_path)
