"""What the hindsight teacher reads when train asks it for strategies: the judge, and the goal only when asked."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from pathlib import Path

from autogen_core.models import LLMMessage

from coachlab.agents import Hindsight, StrategyDrafts, build_teacher, propose_strategies
from coachlab.environments import EnvironmentConfig, EpisodeRunner, run_episode
from coachlab.explorer.train import TrainConfig, Trainer
from coachlab.llm import Backend
from coachlab.llm.scripted import ScriptFn
from coachlab.schema import Criterion, CriterionResult, Episode
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import SECRET_GOAL, agents, lines, scenario, verdict
from test_train import CONFIG, customer, judge, student, teacher


def strategy_prompts(
    run_dir: Path, config: TrainConfig, *, customer_fn: ScriptFn = customer, judge_fn: ScriptFn = judge
) -> list[str]:
    asked: list[str] = []

    def recording_teacher(messages: Sequence[LLMMessage]) -> str:
        if '"strategies"' in message_text(messages[-1]):
            asked.append(message_text(messages[-1]))
        return teacher(messages)

    fns = {"customer": customer_fn, "judge": judge_fn, "student": student, "teacher": recording_teacher}
    backends = {name: Backend.from_client(name, ScriptedChatCompletionClient(fn)) for name, fn in fns.items()}
    episodes: list[Episode] = []
    trainer = Trainer(
        EpisodeRunner(backends, EnvironmentConfig(max_turns=3)),
        config,
        [scenario()],
        run_dir=run_dir,
        record=episodes.append,
    )
    asyncio.run(trainer.run())
    return asked


def test_the_teacher_reads_the_judge_in_hindsight_but_not_the_private_goal_by_default(tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"max_iterations": 1, "children_per_failure": 0})
    (prompt, *_) = strategy_prompts(tmp_path / "default", config)
    assert "What we know in hindsight" in prompt and "The reviewer said" in prompt
    assert SECRET_GOAL not in prompt  # a small teacher copies it into every draft

    (prompt, *_) = strategy_prompts(tmp_path / "goal", config.model_copy(update={"hindsight_goal": True}))
    assert f"Private to this customer, never repeat these words: the customer wanted {SECRET_GOAL}" in prompt


def test_when_the_judge_names_no_line_the_failure_point_is_the_students_first_line(tmp_path: Path) -> None:
    """At its last line a small student repeats what it said twice before; its first is where a strategy can act."""

    def patient(messages: Sequence[LLMMessage]) -> str:
        if "reference R-1" in message_text(messages[-1]):
            return "Perfect, thank you! [DONE]"
        if "Please wait." not in message_text(messages[-1]):
            return "My parcel is late again! What happens now?"
        return next(follow_ups)  # never the same line twice in a row

    follow_ups = itertools.cycle(["Wait for what, exactly?", "Hello? Is anyone there?", "I am still waiting."])

    def vague_judge(messages: Sequence[LLMMessage]) -> object:
        good = "reference R-1" in message_text(messages[-1])
        return verdict(9 if good else 3, resolved=good, failure_turn=None)

    config = CONFIG.model_copy(update={"max_iterations": 1, "children_per_failure": 0})
    (prompt, *_) = strategy_prompts(tmp_path, config, customer_fn=patient, judge_fn=vague_judge)
    chat = prompt.split("lost the customer:\n")[1].split("\n\nThe junior agent replied:")[0]
    assert chat == "Customer: My parcel is late again! What happens now?"  # no "Agent: Please wait." before it


def test_the_teacher_reads_what_a_good_agent_says_for_the_items_the_student_missed(tmp_path: Path) -> None:
    """The missed items' checklist examples are the words a strategy's `say` can teach (+0.72 items per reply)."""
    items = [
        Criterion(id="reship", text="offers an express reship", example="I'll reship it by express today."),
        Criterion(id="blame", text="blames the carrier", forbidden=True, example="It's the carrier's fault."),
        Criterion(id="greets", text="greets the customer"),
    ]
    case = scenario(success_criteria=items)
    ags, _ = agents(
        customer=lines("Where is it?", "ok [DONE]"), agent=lines("Please wait."), judge=lambda m: verdict(3)
    )
    ran = asyncio.run(run_episode(case, ags, episode_id="late-parcel/train/student/0", seed=0, trial=0))
    missed = [CriterionResult(id=c.id, status="not_met") for c in items]
    worst = ran.model_copy(update={"verdict": verdict(3, criteria=missed)})

    trainer = Trainer(
        EpisodeRunner({}, EnvironmentConfig(max_turns=3)), CONFIG, [case], run_dir=tmp_path, record=lambda e: None
    )
    hindsight = trainer.coach.hindsight(case, worst, worst, 1)
    assert hindsight.examples == ["I'll reship it by express today."]  # not the forbidden item's, none for "greets"
    quiet = Trainer(
        EpisodeRunner({}, EnvironmentConfig(max_turns=3)),
        CONFIG.model_copy(update={"hindsight_examples": False}),
        [case],
        run_dir=tmp_path / "off",
        record=lambda e: None,
    )
    assert quiet.coach.hindsight(case, worst, worst, 1).examples == []

    good = {"situation": "When the customer asks where a late parcel is", "guidance": "Offer a reship."}
    client = ScriptedChatCompletionClient(lambda m: json.dumps({"strategies": [good]}))
    asyncio.run(
        propose_strategies(
            build_teacher(model_client=client, output=StrategyDrafts),
            case,
            [("customer", "Where is it?")],
            student_reply="Please wait.",
            teacher_reply="I can reship it.",
            hindsight=Hindsight(examples=hindsight.examples),
        )
    )
    assert 'A good agent would have said, for example: "I\'ll reship it by express today."' in message_text(
        client.calls[0][-1]
    )
