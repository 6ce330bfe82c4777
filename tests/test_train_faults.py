"""The train loop when a backend fails for good: the node is kept as `error`, nothing is learned from it, train goes on.

The story of test_train.py (a student that needs the "name the next step" strategy, a teacher
that has it), with two roots: the late parcel, whose calls hit a dead backend at one point of
its processing, and the wrong size, which is processed normally afterwards. Then the backend
comes back and `reopen_failed` (what `--resume --retry-failed` calls) redoes the failed node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from autogen_core.models import LLMMessage

from coachlab.agents.teacher import TEACHER_SYSTEM_PROMPT
from coachlab.environments import EnvironmentConfig, EpisodeRunner
from coachlab.explorer import NodeStatus
from coachlab.explorer.train import TrainConfig, Trainer, TrainSummary
from coachlab.explorer.verify import VerifyConfig
from coachlab.llm import Backend, ModelEntry, RetryPolicy
from coachlab.schema import Episode, TerminationReason
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import scenario, verdict
from test_train import customer, judge, student, teacher

LATE = ("five days late", "Late parcel", "A-100")  # the late parcel's issue, title, order: one is in every view
Script = Callable[[Sequence[LLMMessage]], object]


def agent_play(messages: Sequence[LLMMessage]) -> bool:
    return message_text(messages[0]) != TEACHER_SYSTEM_PROMPT


def after_its_own_rollout() -> Callable[[Sequence[LLMMessage]], bool]:
    """The teacher's agent lines after the first (its own rollout): its reply at the student's failure point."""
    seen = {"n": 0}

    def which(messages: Sequence[LLMMessage]) -> bool:
        if not agent_play(messages):
            return False
        seen["n"] += 1
        return seen["n"] > 1

    return which


POINTS: dict[str, tuple[str, Callable[[Sequence[LLMMessage]], bool]]] = {
    # where the backend dies -> (which model, which of its calls)
    "teacher replies at the failure point": ("teacher", after_its_own_rollout()),
    "teacher writes strategies": ("teacher", lambda m: '"strategies"' in message_text(m[-1])),
    "teacher writes children": ("teacher", lambda m: '"children"' in message_text(m[-1])),
    "judge scores a rollout": ("judge", lambda m: "<reply A>" not in message_text(m[-1])),
    "judge compares replies": ("judge", lambda m: "<reply A>" in message_text(m[-1])),
    "student reads the candidate": ("student", lambda m: "Name the next step" in message_text(m[0])),
}


class Dead:
    """A switch: while on, the chosen calls about the late parcel fail like a dead backend (a 401, not retried)."""

    def __init__(self, model: str, which: Callable[[Sequence[LLMMessage]], bool]) -> None:
        self.model, self.which, self.on, self.failed = model, which, True, 0

    def wrap(self, model: str, fn: Script) -> Script:
        def script(messages: Sequence[LLMMessage]) -> object:
            about_late = any(mark in message_text(m) for m in messages for mark in LATE)
            if self.on and model == self.model and about_late and self.which(messages):
                self.failed += 1
                raise PermissionError("401 backend refused the call")
            return fn(messages)

        return script


def happy_with_the_sweater(messages: Sequence[LLMMessage]) -> object:
    """The judge of test_train.py, except that the wrong-size root always passes (so it teaches nothing)."""
    return verdict(9) if "too small" in message_text(messages[-1]) else judge(messages)


def run(
    run_dir: Path, dead: Dead, *, criterion: str = "uplift", reopen: bool = False
) -> tuple[Trainer, TrainSummary, list[Episode]]:
    fns: dict[str, Script] = {
        "customer": customer,
        "judge": happy_with_the_sweater,
        "student": student,
        "teacher": teacher,
    }
    entry = ModelEntry(provider="x.Y", retry=RetryPolicy(max_retries=0))
    backends = {
        name: Backend.from_client(name, ScriptedChatCompletionClient(dead.wrap(name, fn)), entry=entry)  # type: ignore[arg-type]
        for name, fn in fns.items()
    }
    config = TrainConfig(
        trials=2,
        max_iterations=2,
        max_depth=1,
        children_per_failure=1,
        verify=VerifyConfig(trials=2, criterion=criterion, refine_rounds=0),  # type: ignore[arg-type]
    )
    roots = [
        scenario(),
        scenario(id="wrong-size", title="Wrong size", issue="The sweater came too small.", facts={"order": "B-200"}),
    ]
    episodes: list[Episode] = []
    trainer = Trainer(
        EpisodeRunner(backends, EnvironmentConfig(max_turns=3)), config, roots, run_dir=run_dir, record=episodes.append
    )
    retried = trainer.reopen_failed() if reopen else []
    summary = asyncio.run(trainer.run(retried=retried))
    return trainer, summary, episodes


@pytest.mark.parametrize("point", list(POINTS))
def test_a_dead_backend_leaves_the_node_as_error_and_train_goes_on_then_retry_redoes_it(
    tmp_path: Path, point: str
) -> None:
    model, which = POINTS[point]
    dead = Dead(model, which)
    criterion = "imitation" if point == "judge compares replies" else "uplift"
    trainer, summary, _ = run(tmp_path, dead, criterion=criterion)
    assert dead.failed >= 1, "the fault was injected"
    node = trainer.tree.node("late-parcel")
    assert node.status is NodeStatus.ERROR and node.error and "401 backend refused" in node.error
    assert node.strategy_ids == [] and trainer.tree.children("late-parcel") == []  # nothing learned from it
    assert node.student_mean is None  # no pass or fail either
    assert len(node.episode_ids) == 3  # its rollouts are kept
    library = trainer.library.load()
    assert all(s.provenance is None or s.provenance.node_id != "late-parcel" for s in library.strategies)
    other = trainer.tree.node("wrong-size")  # train went on
    assert other.status is NodeStatus.PASSED and other.student_mean == 9
    assert summary.errors == ["late-parcel"]

    dead.on = False  # the backend is back: --resume --retry-failed
    trainer, summary, _ = run(tmp_path, dead, criterion=criterion, reopen=True)
    node = trainer.tree.node("late-parcel")
    assert node.status is NodeStatus.EXPANDED and node.error is None and node.strategy_ids
    assert node.student_mean is not None and node.student_mean < 4
    assert summary.retried == ["late-parcel"] and summary.errors == []
    assert any(s.provenance and s.provenance.node_id == "late-parcel" for s in trainer.library.load().strategies)
    assert [n.status for n in trainer.tree.nodes()].count(NodeStatus.ERROR) == 0


def test_a_rollout_that_ended_on_an_infrastructure_error_is_recorded_not_scored(tmp_path: Path) -> None:
    trainer, _, episodes = run(tmp_path, Dead("judge", POINTS["judge scores a rollout"][1]))
    ids = trainer.tree.node("late-parcel").episode_ids
    recorded = [e for e in episodes if e.id in ids]
    assert len(recorded) == 3 and all(e.termination is TerminationReason.INFRASTRUCTURE_ERROR for e in recorded)
    assert all(e.verdict is None and e.judge_error and "judge backend failed" in e.judge_error for e in recorded)
    assert all("after the dialogue ended" in e.termination_detail for e in recorded)
