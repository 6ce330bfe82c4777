"""What the hindsight teacher reads when train asks it for strategies: the judge, and the goal only when asked."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from autogen_core.models import LLMMessage

from coachlab.environments import EnvironmentConfig, EpisodeRunner
from coachlab.explorer.train import TrainConfig, Trainer
from coachlab.llm import Backend
from coachlab.schema import Episode
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import SECRET_GOAL, scenario
from test_train import CONFIG, customer, judge, student, teacher


def strategy_prompts(run_dir: Path, config: TrainConfig) -> list[str]:
    asked: list[str] = []

    def recording_teacher(messages: Sequence[LLMMessage]) -> str:
        if '"strategies"' in message_text(messages[-1]):
            asked.append(message_text(messages[-1]))
        return teacher(messages)

    fns = {"customer": customer, "judge": judge, "student": student, "teacher": recording_teacher}
    backends = {name: Backend.from_client(name, ScriptedChatCompletionClient(fn)) for name, fn in fns.items()}
    episodes: list[Episode] = []
    trainer = Trainer(
        EpisodeRunner(backends, EnvironmentConfig(max_turns=3)), config, [scenario()], run_dir=run_dir,
        record=episodes.append,
    )  # fmt: skip
    asyncio.run(trainer.run())
    return asked


def test_the_teacher_reads_the_judge_in_hindsight_but_not_the_private_goal_by_default(tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"max_iterations": 1, "children_per_failure": 0})
    (prompt, *_) = strategy_prompts(tmp_path / "default", config)
    assert "What we know in hindsight" in prompt and "The reviewer said" in prompt
    assert SECRET_GOAL not in prompt  # a small teacher copies it into every draft

    (prompt, *_) = strategy_prompts(tmp_path / "goal", config.model_copy(update={"hindsight_goal": True}))
    assert f"Private to this customer, never repeat these words: the customer wanted {SECRET_GOAL}" in prompt
