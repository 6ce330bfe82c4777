"""A scripted train + evaluate run that a test kills with SIGKILL and resumes (see test_crash_resume.py).

Runs exactly what `coachlab distill EXPERIMENT --dry-run --resume` runs (the same functions, the
dry-run models), with a few milliseconds of latency per model call so that kills land inside
episodes, between them, and between writes.

Usage: python tests/crash_run.py EXPERIMENT RUN_DIR
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from autogen_core.models import LLMMessage

from coachlab.experiments.config import load_experiment
from coachlab.experiments.distill import train_experiment
from coachlab.experiments.evaluate import evaluate_experiment
from coachlab.experiments.simulate import build_backends
from coachlab.testing import ScriptedChatCompletionClient, dry_run_clients

LATENCY_S = 0.003


def slow(client: ScriptedChatCompletionClient) -> ScriptedChatCompletionClient:
    inner = client._fn  # pyright: ignore[reportPrivateUsage]

    def fn(messages: Sequence[LLMMessage]) -> object:
        time.sleep(LATENCY_S)
        return inner(messages)

    return ScriptedChatCompletionClient(fn, name=client.name, keep=0)  # type: ignore[arg-type]


async def main(experiment_path: str, run_dir: str) -> None:
    exp = load_experiment(experiment_path)
    assert exp.config.train is not None and exp.config.evaluate is not None
    names = ["customer", "judge", exp.config.train.student, exp.config.train.teacher, *exp.config.evaluate.students]
    clients = {n: slow(c) for n, c in dry_run_clients(names, strong=[exp.config.train.teacher]).items()}
    backends = build_backends(exp, names, clients=clients)
    await train_experiment(exp, backends, run_dir=Path(run_dir), resume=True, use_cache=False)
    await evaluate_experiment(exp, backends, run_dir=Path(run_dir), resume=True, concurrency=1, use_cache=False)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
