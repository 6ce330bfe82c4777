"""The runners behind `coachlab train` and `coachlab distill`: grow the tree and the library, then evaluate.

`train_experiment` grows the scenario tree and the strategy library in a run folder;
`distill_experiment` is train, then `coachlab.experiments.evaluate.evaluate_experiment`, with the
one rule between them: an evaluation of another library than the latest is started again.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from coachlab.environments import EpisodeRunner, EventBus, Observer
from coachlab.errors import UsageError
from coachlab.experiments.config import Experiment
from coachlab.experiments.evaluate import evaluate_experiment
from coachlab.experiments.evaluation_report import EvaluationReport
from coachlab.experiments.guard import record_run
from coachlab.experiments.results import EpisodeLog
from coachlab.experiments.runfolder import (
    RunLayout,
    add_criteria,
    evaluated_version,
    evaluation_outdated,
    open_cache,
    saved_criteria,
    train_roots,
)
from coachlab.experiments.simulate import keep_experiment_copy
from coachlab.experiments.transcripts import TranscriptWriter
from coachlab.explorer.train import Trainer, TrainSummary
from coachlab.library import LibraryStore
from coachlab.llm import Backend

__all__ = ["Distilled", "Phase", "distill_experiment", "train_experiment"]

Phase = Literal["train", "evaluate"]
"""The two phases of `distill_experiment`."""


async def train_experiment(
    experiment: Experiment,
    backends: dict[str, Backend],
    *,
    run_dir: Path,
    resume: bool,
    retry_failed: bool = False,
    use_cache: bool = True,
    observers: Sequence[Observer] = (),
) -> TrainSummary:
    """Grow the tree and the library of `experiment` in `run_dir` (resuming from its tree).

    With `retry_failed` (and `resume`), nodes that ended on an infrastructure error are redone
    from the start: back on the frontier, their episodes dropped (see `Trainer.reopen_failed`).
    """
    layout = RunLayout(run_dir)
    config = experiment.config.train
    if config is None:
        raise UsageError(f"{experiment.path}: no `train:` section; add one to run coachlab train.")
    if layout.tree.exists() and not resume:
        raise UsageError(
            f"{layout.root} already holds a training run. Pass --resume to continue it, or --overwrite to start again."
        )
    retrieval = experiment.config.retrieval.resolved()  # `auto` decided once: what is recorded is what runs
    saved_criteria(experiment, train_roots(experiment), layout.root)
    record = functools.partial(record_run, experiment, backends, root=layout.root, command="train", retrieval=retrieval)
    record(continuing=resume and layout.tree.exists())
    layout.train.mkdir(parents=True, exist_ok=True)
    keep_experiment_copy(experiment, layout.root / "experiment.yaml", keep_existing=resume)
    writer = TranscriptWriter(layout.train / "transcripts")
    log = EpisodeLog(layout.train / "episodes.jsonl")
    log.repair()
    cache = open_cache(experiment, layout.root) if use_cache else None
    runner = EpisodeRunner(
        backends,
        experiment.config.environment,
        cache=cache,
        bus=EventBus([writer, *observers]),
        judging=experiment.config.judge,
        similarity=experiment.judge_gate(),
        expert=experiment.config.expert,
        experts=experiment.experts(),
        placement=experiment.config.retrieval.placement,
    )
    try:
        before = dict(experiment.scenarios)
        await add_criteria(experiment, train_roots(experiment), backends, layout.root, config.teacher)
        if experiment.scenarios != before:
            record(continuing=False)  # with the checklists the teacher has just written
        trainer = Trainer(
            runner, config, train_roots(experiment), run_dir=layout.root, record=log.append, retrieval=retrieval
        )
        retried = trainer.reopen_failed() if retry_failed else []
        # Episodes of nodes still on the frontier belong to a node a killed run did not finish (or one
        # reopened just now): it is redone.
        redo = {n.id for n in trainer.tree.frontier()}
        log.drop(lambda e: e.id.split("/", 1)[0] in redo)
        return await trainer.run(retried=retried)
    finally:
        writer.close()
        log.close()
        if cache is not None:
            cache.close()


@dataclass(frozen=True)
class Distilled:
    """What `distill_experiment` did."""

    summary: TrainSummary
    report: EvaluationReport
    restarted: tuple[int | None, int] | None
    """(evaluated, latest) library versions when an earlier evaluation of another library was dropped."""


@contextlib.contextmanager
def _unwatched(phase: Phase) -> Generator[Sequence[Observer]]:
    yield ()


async def distill_experiment(
    experiment: Experiment,
    backends: dict[str, Backend],
    *,
    run_dir: Path,
    resume: bool,
    concurrency: int,
    retry_failed: bool = False,
    use_cache: bool = True,
    watch: Callable[[Phase], AbstractContextManager[Sequence[Observer]]] = _unwatched,
    trained: Callable[[TrainSummary, tuple[int | None, int] | None], None] | None = None,
) -> Distilled:
    """Train, then evaluate on the held-out scenarios, in `run_dir` (what `coachlab distill` runs).

    A resumed run whose training changed the library (a node redone by `retry_failed`) holds an
    evaluation of another library: it is deleted and the evaluation starts again.

    Args:
        experiment: The experiment, with `train:` and `evaluate:` sections.
        backends: A backend per model entry either phase uses.
        run_dir: The run folder.
        resume: Continue an interrupted run.
        concurrency: Evaluation episodes in flight.
        retry_failed: With `resume`, redo what ended on an infrastructure error.
        use_cache: Use the run's response cache.
        watch: Per phase, a context around it that gives the observers of its episodes (a progress display).
        trained: Called between the phases with the training summary and `Distilled.restarted`.
    """
    with watch("train") as observers:
        summary = await train_experiment(
            experiment,
            backends,
            run_dir=run_dir,
            resume=resume,
            retry_failed=retry_failed,
            use_cache=use_cache,
            observers=observers,
        )
    layout = RunLayout(run_dir)
    restarted: tuple[int | None, int] | None = None
    if resume and evaluation_outdated(layout):
        restarted = (evaluated_version(layout), LibraryStore(layout.library).load().version)
        shutil.rmtree(layout.evaluation)
    if trained is not None:
        trained(summary, restarted)
    with watch("evaluate") as observers:
        report = await evaluate_experiment(
            experiment,
            backends,
            run_dir=run_dir,
            resume=resume,
            concurrency=concurrency,
            retry_failed=retry_failed,
            use_cache=use_cache,
            observers=observers,
        )
    return Distilled(summary=summary, report=report, restarted=restarted)
