"""The runner behind `coachlab train`: grow the scenario tree and the strategy library in a run folder.

`coachlab distill` is train, then `coachlab.experiments.evaluate.evaluate_experiment`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from coachlab.environments import EpisodeRunner, EventBus, Observer
from coachlab.errors import UsageError
from coachlab.experiments.config import Experiment
from coachlab.experiments.guard import record_run
from coachlab.experiments.results import EpisodeLog
from coachlab.experiments.runfolder import RunLayout, add_criteria, open_cache, saved_criteria, train_roots
from coachlab.experiments.simulate import keep_experiment_copy
from coachlab.experiments.transcripts import TranscriptWriter
from coachlab.explorer.train import Trainer, TrainSummary
from coachlab.llm import Backend

__all__ = ["train_experiment"]


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
        backends, experiment.config.environment, cache=cache, bus=EventBus([writer, *observers]),
        judging=experiment.config.judge, similarity=experiment.judge_gate(), expert=experiment.config.expert,
        experts=experiment.experts(), placement=experiment.config.retrieval.placement,
    )  # fmt: skip
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
