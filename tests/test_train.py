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

from coachlab.agents.teacher import TEACHER_SYSTEM_PROMPT
from coachlab.environments import EnvironmentConfig, EpisodeRunner
from coachlab.explorer import NodeStatus
from coachlab.explorer.train import TrainConfig, Trainer
from coachlab.explorer.verify import VerifyConfig
from coachlab.llm import Backend
from coachlab.schema import AuditStatus, Episode
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import scenario, verdict

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
    trials=3, verify=VerifyConfig(trials=3, refine_rounds=1), max_iterations=3, max_depth=1, children_per_failure=1
)


def train(run_dir: Path, config: TrainConfig = CONFIG, fail_after: int | None = None) -> tuple[Trainer, object]:
    episodes: list[Episode] = []
    trainer = Trainer(runner(fail_after), config, [scenario()], run_dir=run_dir, record=episodes.append)
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
    assert resumed.tree.to_json() == whole.tree.to_json()

    def strategies(t: Trainer) -> list[dict[str, object]]:
        return [s.model_dump(exclude={"audit"}) for s in t.library.load().strategies]

    assert strategies(resumed) == strategies(whole)
