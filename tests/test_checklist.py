"""Checklist verdicts: per-line questions, the gate, majority votes, task success, simulator faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from autogen_core.models import LLMMessage

from coachlab.agents import build_judge, build_line_grader
from coachlab.environments import EpisodeAgents, JudgePanel, run_episode
from coachlab.errors import ConfigError
from coachlab.judging import LineVotes, decide_criterion, graded_lines, policy_followed, task_success
from coachlab.judging.faults import simulator_fault
from coachlab.schema import AgentMessage, Criterion, CustomerMessage, Scenario, TerminationReason
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import agents, lines, scenario, score_json

RESHIP = Criterion(
    id="reship", text="offers to reship the order by free express", example="I can reship it by express."
)
REFERENCE = Criterion(id="reference", text="gives a reference number", level="nice")
HANDOFF = Criterion(
    id="hand-off",
    text="tells the customer to contact another team",
    forbidden=True,
    policy=True,
    example="Please contact our customer service team.",
)
CASE = scenario().model_copy(update={"success_criteria": [RESHIP, REFERENCE, HANDOFF]})


def line_judge(yes: Sequence[tuple[str, str]]) -> ScriptedChatCompletionClient:
    """Says yes when the message contains the first string and the statement the second."""

    def answer(messages: Sequence[LLMMessage]) -> str:
        ask = message_text(messages[-1])
        message = ask.split("<message>")[1].split("</message>")[0]
        statement = ask.split("Statement:" if "Statement:" in ask else "Action:")[1]
        hit = any(a in message and b in statement for a, b in yes)
        return json.dumps({"answer": "yes" if hit else "no"})

    return ScriptedChatCompletionClient(answer)


def episode_with(agent_lines: list[str], yes: Sequence[tuple[str, str]], *, votes: int = 1, case: Scenario = CASE):
    customer = ["My parcel is late.", *(["And?"] * (len(agent_lines) - 1)), "Ok. [DONE]"]
    ags: EpisodeAgents = agents(customer=lines(*customer), agent=lines(*agent_lines))[0]
    panel = JudgePanel(
        judges=[build_judge(model_client=ScriptedChatCompletionClient(lambda m: score_json(7))) for _ in range(votes)],
        graders=[build_line_grader(model_client=line_judge(yes)) for _ in range(votes)],
    )
    ags.panel = panel
    return asyncio.run(run_episode(case, ags, episode_id="e", seed=1, trial=0))


def test_each_item_is_decided_from_the_agent_lines_and_quotes_the_line() -> None:
    ep = episode_with(
        ["Sorry about that. Let me look.", "I've reshipped it by express, reference RS-1."],
        [("reshipped it by express", "reship"), ("reference RS-1", "reference number")],
    )
    v = ep.verdict
    assert v is not None
    by = {r.id: r for r in v.criteria}
    assert by["reship"].status == "met" and by["reship"].turn == 1 and by["reship"].quote.startswith("I've reshipped")  # type: ignore[union-attr]
    assert by["reference"].status == "met"
    assert by["hand-off"].status == "met" and by["hand-off"].quote is None  # nobody sent the customer elsewhere
    assert v.task_success is True and v.policy_followed is True


def test_the_hand_off_loop_fails_the_task_whatever_the_satisfaction() -> None:
    handoff = "Please contact our customer service team at [customer email]."
    ep = episode_with([handoff, handoff], [("customer service team", "contact another team")])
    v = ep.verdict
    assert v is not None and v.satisfaction == 7  # the holistic judge liked it...
    by = {r.id: r for r in v.criteria}
    assert by["reship"].status == "not_met" and by["reship"].quote is None
    assert by["hand-off"].status == "not_met" and by["hand-off"].quote == handoff and by["hand-off"].turn == 0
    assert v.task_success is False and v.policy_followed is False  # ...the checklist did not


def test_a_judge_yes_about_an_unlike_line_does_not_count_behind_the_gate() -> None:
    lines_ = graded_lines([AgentMessage(turn=0, text="We value your business."), AgentMessage(turn=1, text="Done.")])
    answers = {0: LineVotes(yes=(0,), similarity=0.12), 1: LineVotes(yes=(), similarity=0.8)}
    result = decide_criterion(RESHIP, lines_, answers, votes=1, floor=0.45)
    assert result.status == "not_met" and result.quote is None
    assert (
        decide_criterion(RESHIP, lines_, {0: LineVotes(yes=(0,), similarity=0.5)}, votes=1, floor=0.45).status == "met"
    )


def test_items_are_decided_by_majority_and_splits_are_recorded() -> None:
    lines_ = graded_lines([AgentMessage(turn=0, text="I can reship it by express.")])
    two_of_three = decide_criterion(RESHIP, lines_, {0: LineVotes(yes=(0, 2))}, votes=3, floor=0.45)
    one_of_three = decide_criterion(RESHIP, lines_, {0: LineVotes(yes=(1,))}, votes=3, floor=0.45)
    assert two_of_three.status == "met" and two_of_three.votes_met == 2 and two_of_three.split
    assert one_of_three.status == "not_met" and one_of_three.votes_met == 1
    broken = decide_criterion(HANDOFF, lines_, {0: LineVotes(yes=(0, 1))}, votes=3, floor=0.45)
    assert broken.status == "not_met" and broken.votes_met == 1 and broken.turn == 0


def test_votes_ask_every_grader_and_take_the_median_satisfaction() -> None:
    ep = episode_with(["I've reshipped it by express."], [("reshipped", "reship")], votes=3)
    v = ep.verdict
    assert v is not None and v.votes == 3 and v.satisfaction_votes == [7, 7, 7]
    assert all(r.votes == 3 for r in v.criteria)
    assert {r.id: r.votes_met for r in v.criteria}["reship"] == 3


def test_the_votes_on_one_statement_are_asked_one_after_another_each_vote_as_alone() -> None:
    """Their prompts are identical (an engine with a prompt cache processes them once); a vote stops on its own yes."""
    asked: list[tuple[int, str, str]] = []

    def grader(vote: int) -> ScriptedChatCompletionClient:
        def answer(messages: Sequence[LLMMessage]) -> str:
            ask = message_text(messages[-1])
            line = "first" if "reshipped" in ask else "second"
            item = next(c.id for c in (RESHIP, REFERENCE, HANDOFF) if c.text in ask)
            asked.append((vote, line, item))
            said = (vote, line, item) in {(0, "first", "reship"), (1, "second", "reship")}
            return json.dumps({"answer": "yes" if said else "no"})

        return ScriptedChatCompletionClient(answer)

    customer = lines("My parcel is late.", "And?", "Ok. [DONE]")
    agent = lines("I've reshipped it, ref RS-1.", "It is on its way, ref RS-1.")  # a code: the reference may count
    ags: EpisodeAgents = agents(customer=customer, agent=agent)[0]
    ags.panel = JudgePanel(
        judges=[build_judge(model_client=ScriptedChatCompletionClient(lambda m: score_json(7)))],
        graders=[build_line_grader(model_client=grader(vote)) for vote in range(3)],
    )
    ep = asyncio.run(run_episode(CASE, ags, episode_id="e", seed=1, trial=0))
    items = ("reship", "reference", "hand-off")
    first = [(vote, "first", item) for item in items for vote in range(3)]
    second = [(vote, "second", item) for item in items for vote in range(3) if (vote, item) != (0, "reship")]
    assert asked == first + second  # vote 0 saw the reship on the first line: it asks no more about it
    assert ep.verdict is not None and {r.id: r.votes_met for r in ep.verdict.criteria}["reship"] == 2


def test_prefix_and_mentor_lines_are_never_graded() -> None:
    events = [
        AgentMessage(turn=0, text="prefix line", origin="prefix"),
        CustomerMessage(turn=0, text="hi"),
        AgentMessage(turn=1, text="the teacher's line", origin="mentor"),
        AgentMessage(turn=2, text="the student's line"),
    ]
    assert [(g.turn, g.text) for g in graded_lines(events)] == [(2, "the student's line")]


def test_task_success_and_policy_from_results() -> None:
    results = [decide_criterion(c, [], {}, votes=1, floor=0.45) for c in (RESHIP, HANDOFF)]  # no graded line: n.a.
    assert task_success([RESHIP, HANDOFF], results) is None
    assert task_success([], []) is None and policy_followed([RESHIP], []) is None


def test_simulator_faults_are_not_judged_and_named() -> None:
    s = scenario()
    out = simulator_fault(s, [], TerminationReason.CUSTOMER_OUT_OF_ROLE, "3 replies rejected")
    assert out is not None and "out of role" in out
    loop = simulator_fault(s, [], TerminationReason.LOOP_DETECTED, "the customer repeated itself")
    assert loop is not None and "looped" in loop
    assert simulator_fault(s, [], TerminationReason.LOOP_DETECTED, "the agent repeated itself") is None
    invented = [CustomerMessage(turn=0, text="My order ZX-99812 never came.")]
    fault = simulator_fault(s, invented, TerminationReason.MAX_TURNS, "")
    assert fault is not None and "ZX-99812" in fault
    quoted = [
        AgentMessage(turn=0, text="Your reference is RS-20417."),
        CustomerMessage(turn=0, text="Thanks, RS-20417."),
    ]
    assert simulator_fault(s, quoted, TerminationReason.MAX_TURNS, "") is None  # said by the agent first


def test_an_episode_the_customer_spoiled_is_counted_but_never_judged() -> None:
    judge = ScriptedChatCompletionClient(lambda m: score_json(9))
    ags = agents(customer=lines("My order ZX-99812 is late.", "Bye. [DONE]"), agent=lines("Let me check."))[0]
    ags.panel = JudgePanel(judges=[build_judge(model_client=judge)])
    ep = asyncio.run(run_episode(CASE, ags, episode_id="e", seed=1, trial=0))
    assert ep.simulator_fault is not None and ep.verdict is None and not ep.scored
    assert judge.calls == []


def test_a_broken_criterion_names_the_file_line_and_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from coachlab.experiments.criteria import load_criteria

    path = tmp_path / "c.yaml"
    path.write_text("scenario: x\nsuccess_criteria:\n  - id: ok\n    text: gives a reference\n    level: maybe\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:5: success_criteria\.0\.level"):
        load_criteria(path)
    path.write_text("scenario: x\nsuccess_criteria:\n  - {id: a, text: t}\n  - {id: a, text: u}\n")
    with pytest.raises(ConfigError, match=r"used twice"):
        load_criteria(path)


def test_a_line_very_like_the_example_counts_without_the_judges_yes() -> None:
    lines_ = graded_lines([AgentMessage(turn=0, text="Please contact our customer service team.")])
    missed_by_judge = {0: LineVotes(yes=(), similarity=0.86)}
    assert decide_criterion(HANDOFF, lines_, missed_by_judge, votes=1, floor=0.45).status == "met"  # judge said no
    sure = decide_criterion(HANDOFF, lines_, missed_by_judge, votes=3, floor=0.45, sure=0.7)
    assert sure.status == "not_met" and sure.turn == 0 and sure.votes_met == 0


def test_the_expert_keeps_the_candidate_that_shows_most_items_not_yet_shown() -> None:
    from coachlab.environments import ReplySearch

    handoff = "Please contact our customer service team."
    # turn 0: three candidates (a hand-off, an apology, the reship); turn 1: the reship again or a reference
    agent_lines = [
        handoff,
        "Sorry about that.",
        "I can reship it by express.",
        "I can reship it by express.",
        "Ref RS-1.",
    ]
    customer = ["My parcel is late.", "And?", "Ok. [DONE]"]
    ags: EpisodeAgents = agents(customer=lines(*customer), agent=lines(*agent_lines))[0]
    yes = [("reship it by express", "reship"), ("Ref RS-1", "reference number"), ("customer service", "another team")]
    ags.panel = JudgePanel(
        judges=[build_judge(model_client=ScriptedChatCompletionClient(lambda m: score_json(7)))],
        graders=[build_line_grader(model_client=line_judge(yes))],
    )
    search_grader = line_judge(yes)
    ags.agent_search = ReplySearch(
        candidates=3, panel=JudgePanel(judges=[], graders=[build_line_grader(model_client=search_grader)])
    )
    ep = asyncio.run(run_episode(CASE, ags, episode_id="e", seed=1, trial=0))
    said = [e.text for e in ep.events if isinstance(e, AgentMessage)]
    # turn 0 keeps the reship (must, 2 points) over the hand-off (breaks a forbidden item) and the apology;
    # turn 1: the reship is already shown, so the reference (nice, 1 point) wins, found in 2 candidates
    assert said == ["I can reship it by express.", "Ref RS-1."]
    v = ep.verdict
    assert v is not None and v.task_success is True
    assert {r.id: r.status for r in v.criteria} == {"reship": "met", "reference": "met", "hand-off": "met"}


def test_without_a_checklist_the_expert_replies_once() -> None:
    from coachlab.environments import ReplySearch

    calls: list[int] = []

    def agent_script(messages: Sequence[LLMMessage]) -> str:
        calls.append(1)
        return "Let me check that for you."

    ags: EpisodeAgents = agents(customer=lines("My parcel is late.", "Ok. [DONE]"), agent=agent_script)[0]
    ags.agent_search = ReplySearch(candidates=4, panel=JudgePanel(judges=[], graders=[]))
    asyncio.run(run_episode(scenario(), ags, episode_id="e", seed=1, trial=0))
    assert len(calls) == 1


def test_a_pattern_decides_without_the_judge_and_a_bad_one_names_its_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from coachlab.experiments.criteria import load_criteria

    handoff = HANDOFF.model_copy(update={"pattern": r"\bplease contact\b[^.]*\bteam\b"})
    case = CASE.model_copy(update={"success_criteria": [RESHIP, REFERENCE, handoff]})
    said = "Please contact the customer service team at Brightwave Mobile for assistance."
    ep = episode_with([said], [], case=case)  # the judge says "no" to everything
    v = ep.verdict
    assert v is not None
    by = {r.id: r for r in v.criteria}
    assert by["hand-off"].status == "not_met" and by["hand-off"].quote == said  # broken, on the pattern alone
    assert v.task_success is False and v.policy_followed is False
    assert handoff.matches("PLEASE CONTACT our billing team") and not handoff.matches("I've asked our team to call you")

    path = tmp_path / "c.yaml"
    path.write_text(
        "scenario: x\nsuccess_criteria:\n  - id: ok\n    text: gives a reference\n    pattern: '(unclosed'\n"
    )
    with pytest.raises(ConfigError, match=r"c\.yaml:5: success_criteria\.0\.pattern.*regular expression"):
        load_criteria(path)


def test_the_checklist_grader_is_greedy_with_one_vote_and_samples_with_several() -> None:
    from coachlab.environments import EnvironmentConfig, EpisodeRunner
    from coachlab.judging.checklist import JudgeConfig
    from coachlab.llm import Backend

    def asked(judging: JudgeConfig) -> list[object]:
        grader = line_judge([("reship", "reship")])
        runner = EpisodeRunner({"judge": Backend.from_client("judge", grader)}, EnvironmentConfig(), judging=judging)
        asyncio.run(runner.grade_lines([AgentMessage(turn=0, text="I can reship it.")], [RESHIP], seed=3))
        return [args.get("temperature") for args in grader.create_args]

    assert asked(JudgeConfig()) == [0.0]  # one line, one item: one greedy question
    assert set(asked(JudgeConfig(votes=3))) == {None}  # votes differ by sampling: the entry's temperature
    assert asked(JudgeConfig(grader_temperature=None)) == [None]
