"""The distillation loop as a story, with scripted models.

A student that only names the next step when its prompt tells it to; a teacher that does; the
teacher proposes that strategy and a useless one; verification admits the first and rejects the
second; the tree grows a harder child under the failed root, where the library now helps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import networkx as nx
import pytest
from autogen_core.models import LLMMessage

from coachlab.agents import ReplyComparison
from coachlab.agents.teacher import TEACHER_SYSTEM_PROMPT
from coachlab.environments import EnvironmentConfig, EpisodeRunner, mixed_turns
from coachlab.explorer import NodeStatus
from coachlab.explorer.coach import failure_point
from coachlab.explorer.train import TrainConfig, Trainer
from coachlab.explorer.verify import VerifyConfig
from coachlab.llm import Backend
from coachlab.schema import AuditStatus, Episode
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import scenario, timeless, verdict

GOOD_REPLY = "I've reshipped it by express: it arrives Friday, reference R-1."
HELPFUL = {"situation": "When the customer says a parcel is late again", "guidance": "Name the next step and its date."}
USELESS = {"situation": "When the customer writes about anything", "guidance": "Use a friendly tone."}


def customer(messages: Sequence[LLMMessage]) -> str:
    ask = message_text(messages[-1])
    if "reference R-1" in ask:
        return "Perfect, thank you! [DONE]"
    if "Please wait." in ask:
        return "Forget it. [LEAVE]"
    return "My parcel is late again! What happens now?"


def student(messages: Sequence[LLMMessage]) -> str:
    return GOOD_REPLY if "Name the next step" in message_text(messages[0]) else "Please wait."


def teacher(messages: Sequence[LLMMessage]) -> str:
    system, ask = message_text(messages[0]), message_text(messages[-1])
    if system != TEACHER_SYSTEM_PROMPT:
        return GOOD_REPLY  # playing the service agent
    if '"strategies"' in ask:
        return json.dumps({"strategies": [HELPFUL, USELESS]})
    if '"children"' in ask:
        return json.dumps({"children": [{"mutation": "angrier and in a hurry", "mood": "furious", "patience": "low"}]})
    return json.dumps(USELESS)  # refinement keeps it useless


def judge(messages: Sequence[LLMMessage]) -> object:
    text = message_text(messages[-1])
    if "<reply A>" in text:  # imitation: compare the student's reply with the teacher's
        a = "reference R-1" in text.split("<reply A>")[1].split("</reply A>")[0]
        b = "reference R-1" in text.split("<reply B>")[1].split("</reply B>")[0]
        return ReplyComparison(rationale="next step", better="same" if a == b else ("A" if a else "B"))
    good = "reference R-1" in text
    return verdict(8 + len(text) % 2 if good else 2 + len(text) % 2, resolved=good, failure_turn=None if good else 0)


def runner(fail_after: int | None = None) -> EpisodeRunner:
    calls = {"n": 0}

    def counted(fn):  # type: ignore[no-untyped-def]
        def wrapped(messages: Sequence[LLMMessage]) -> object:
            calls["n"] += 1
            if fail_after is not None and calls["n"] > fail_after:
                raise KeyboardInterrupt  # the process is killed here
            return fn(messages)

        return wrapped

    fns = {"customer": customer, "judge": judge, "student": student, "teacher": teacher}
    backends = {name: Backend.from_client(name, ScriptedChatCompletionClient(counted(fn))) for name, fn in fns.items()}
    return EpisodeRunner(backends, EnvironmentConfig(max_turns=3))


CONFIG = TrainConfig(
    trials=3, verify=VerifyConfig(trials=6, refine_rounds=1), max_iterations=3, max_depth=1, children_per_failure=1
)


def train(run_dir: Path, config: TrainConfig = CONFIG, fail_after: int | None = None) -> tuple[Trainer, object]:
    episodes: list[Episode] = []
    root = scenario(situation="stalled-tracking")
    trainer = Trainer(runner(fail_after), config, [root], run_dir=run_dir, record=episodes.append)
    return trainer, asyncio.run(trainer.run())


def test_the_loop_admits_the_strategy_that_helps_and_grows_a_child(tmp_path: Path) -> None:
    trainer, summary = train(tmp_path)
    tree = trainer.tree
    root = tree.node("late-parcel")
    assert root.status is NodeStatus.EXPANDED
    assert root.student_mean is not None and root.student_mean < 4 and (root.teacher_mean or 0) >= 8
    library = trainer.library.load()
    assert [s.id for s in library.with_status(AuditStatus.APPROVED)] == ["late-parcel-0-1"]
    (rejected,) = library.with_status(AuditStatus.REJECTED)  # kept, with its numbers, for the audit
    assert rejected.guidance == USELESS["guidance"] and rejected.evidence is not None
    assert rejected.evidence.uplift_low is not None and rejected.evidence.uplift_low <= 0
    admitted = library.get("late-parcel-0-1")
    assert admitted.guidance == HELPFUL["guidance"] and admitted.status is AuditStatus.APPROVED
    assert (
        admitted.evidence is not None and admitted.evidence.uplift_low is not None and admitted.evidence.uplift_low > 0
    )
    assert admitted.provenance is not None and admitted.provenance.node_id == "late-parcel"
    assert summary.rejected == 1  # type: ignore[attr-defined]
    (child,) = tree.children("late-parcel")
    assert child.mutation == "angrier and in a hurry" and child.scenario.persona.mood == "furious"
    assert child.scenario.prefix and child.scenario.prefix[0].role == "customer"
    assert child.scenario.situation == "stalled-tracking"  # a harder case of the same situation
    # the child runs with the library: the student now names the next step and passes
    assert child.status is NodeStatus.PASSED and (child.student_mean or 0) >= 8
    assert nx.is_arborescence(tree.graph)
    assert (tmp_path / "tree.json").exists() and trainer.library.versions() == [1]


def test_children_grow_only_under_failed_nodes_and_the_budget_stops_growth(tmp_path: Path) -> None:
    trainer, _ = train(tmp_path, CONFIG.model_copy(update={"max_nodes": 1}))
    assert len(trainer.tree) == 1
    assert trainer.tree.node("late-parcel").status is NodeStatus.FAILED
    trainer, summary = train(tmp_path / "b", CONFIG.model_copy(update={"max_tokens": 1}))
    assert summary.stopped_by.startswith("token budget")  # type: ignore[attr-defined]


def test_a_killed_run_resumes_to_the_same_tree_and_library(tmp_path: Path) -> None:
    whole, _ = train(tmp_path / "whole")
    with pytest.raises((KeyboardInterrupt, BaseExceptionGroup)):
        train(tmp_path / "killed", fail_after=60)
    resumed, _ = train(tmp_path / "killed")
    assert timeless(resumed.tree.to_json()) == timeless(whole.tree.to_json())  # seconds in the model are wall-clock

    def strategies(t: Trainer) -> list[dict[str, object]]:
        return [s.model_dump(exclude={"audit"}) for s in t.library.load().strategies]

    assert strategies(resumed) == strategies(whole)


def test_the_imitation_criterion_admits_what_makes_the_student_reply_like_the_teacher(tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"verify": VerifyConfig(trials=6, criterion="imitation", refine_rounds=0)})
    trainer, _ = train(tmp_path, config)
    library = trainer.library.load()
    (admitted,) = library.with_status(AuditStatus.APPROVED)
    assert admitted.guidance == HELPFUL["guidance"]
    assert admitted.evidence is not None and admitted.evidence.criterion == "imitation"
    assert admitted.evidence.preferred_without == 0.0 and admitted.evidence.preferred_with == 1.0
    (rejected,) = library.with_status(AuditStatus.REJECTED)
    assert rejected.evidence is not None and rejected.evidence.preferred_with == 0.0
    assert trainer.tree.node("late-parcel").usage["judge"].total_tokens > 0


def test_verification_runs_its_own_fresh_trials(tmp_path: Path) -> None:
    """`verify.trials` fresh seeds per arm, not the node's (selected, failed) rollouts."""
    episodes: list[Episode] = []
    config = CONFIG.model_copy(update={"trials": 2, "verify": VerifyConfig(trials=5, refine_rounds=0), "max_depth": 0})
    trainer = Trainer(runner(), config, [scenario()], run_dir=tmp_path, record=episodes.append)
    asyncio.run(trainer.run())
    ids = [e.id for e in episodes]
    assert sum("/student/" in i for i in ids) == 2
    assert sum("/without/" in i for i in ids) == 5  # run once per node, shared by both candidates
    assert sum("/with/" in i for i in ids) == 10
    node_seeds = {e.seed for e in episodes if "/student/" in e.id}
    assert not node_seeds & {e.seed for e in episodes if "/without/" in e.id}


def test_mixed_rollouts_let_the_teacher_play_some_agent_turns(tmp_path: Path) -> None:
    turns = {"n": 0}

    def insistent(messages: Sequence[LLMMessage]) -> str:
        turns["n"] += 1
        return f"It is still late, day {turns['n']}. What now?"

    def blames_turn_0(messages: Sequence[LLMMessage]) -> object:
        return verdict(3, failure_turn=0)

    fns = {"customer": insistent, "judge": blames_turn_0, "student": student, "teacher": teacher}
    backends = {name: Backend.from_client(name, ScriptedChatCompletionClient(fn)) for name, fn in fns.items()}
    run = EpisodeRunner(backends, EnvironmentConfig(max_turns=6, loop_repeats=10))
    seed = next(s for s in range(100) if {0} <= mixed_turns(s, 0.5, 7) and 1 not in mixed_turns(s, 0.5, 7))
    ep = asyncio.run(
        run.run(
            scenario(),
            agent_model="student",
            trial=0,
            seed=seed,
            episode_id="e",
            mentor_model="teacher",
            student_share=0.5,
        )
    )
    agent_lines = [e for e in ep.events if e.type == "agent_message"]
    assert len(agent_lines) == 6
    for line in agent_lines:
        mentor = line.turn in mixed_turns(seed, 0.5, 7)
        assert line.origin == ("mentor" if mentor else "model")
        assert line.text == (GOOD_REPLY if mentor else "Please wait.")
    assert ep.usage["mentor"].total_tokens > 0
    # the judge blames agent turn 0, which the teacher played: the failure point is the student's next line
    prefix, reply, turn = failure_point(ep)
    assert reply == "Please wait." and turn == 1 and prefix[-1][0] == "customer"
    again = asyncio.run(
        run.run(
            scenario(),
            agent_model="student",
            trial=0,
            seed=seed,
            episode_id="e2",
            mentor_model="teacher",
            student_share=0.5,
        )
    )
    assert [e.origin for e in again.events if e.type == "agent_message"] == [e.origin for e in agent_lines]


def test_the_student_share_schedule_is_per_depth() -> None:
    config = TrainConfig(student_share=[0.5, 0.75, 1.0])
    assert [config.share_at(d) for d in range(5)] == [0.5, 0.75, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="above 0"):
        TrainConfig(student_share=[0.0])
