"""The runners behind `coachlab train` and `coachlab evaluate`: files, resume, summaries."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coachlab import __version__
from coachlab.environments import EpisodeRunner, EventBus, Observer
from coachlab.errors import SimulationError, UsageError
from coachlab.experiments.config import Experiment
from coachlab.experiments.criteria import (
    criteria_path,
    ensure_criteria,
    ensure_examples,
    load_criteria,
    with_saved_examples,
)
from coachlab.experiments.effects import only_retired_since, retire_harmful
from coachlab.experiments.evaluate import EvaluationReport, evaluation_plans, summarize_evaluation
from coachlab.experiments.evaluate_markdown import to_markdown
from coachlab.experiments.guard import record_run
from coachlab.experiments.hit_rate import learned_situations, situations_by_origin
from coachlab.experiments.results import EpisodeLog, write_json_atomic, write_text_atomic
from coachlab.experiments.simulate import Simulation, keep_experiment_copy
from coachlab.experiments.transcripts import TranscriptWriter
from coachlab.explorer.train import Trainer, TrainSummary
from coachlab.explorer.tree import ScenarioTree
from coachlab.judging.calibration import CalibrationReport
from coachlab.library import EmbeddingEndpointError, LibraryStore
from coachlab.llm import Backend, ResponseCache
from coachlab.schema import AuditStatus, Scenario

__all__ = [
    "RunLayout",
    "add_criteria",
    "cache_path",
    "evaluate_experiment",
    "evaluated_version",
    "evaluation_current",
    "evaluation_outdated",
    "train_experiment",
    "train_roots",
]


@dataclass(frozen=True)
class RunLayout:
    """The files of a train/evaluate run folder."""

    root: Path

    @property
    def tree(self) -> Path:
        """The scenario tree (node-link JSON)."""
        return self.root / "tree.json"

    @property
    def library(self) -> Path:
        """The strategy library's versions."""
        return self.root / "library"

    @property
    def train(self) -> Path:
        """Train episodes and transcripts."""
        return self.root / "train"

    @property
    def evaluation(self) -> Path:
        """Evaluation episodes, transcripts and results."""
        return self.root / "evaluation"


def evaluated_version(layout: RunLayout) -> int | None:
    """The library version the run's evaluation was made against, or None when there is none."""
    stamp = layout.evaluation / "library_version.txt"
    try:
        return int(stamp.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def evaluation_current(layout: RunLayout) -> bool:
    """True when the run's evaluation measured the latest library (evaluate's own retirements aside).

    An evaluation that retires harmful strategies writes a new library version; its numbers still
    describe the library it ran, so it is not stale for that.
    """
    was = evaluated_version(layout)
    store = LibraryStore(layout.library)
    if was is None or was not in store.versions():
        return False
    return only_retired_since(store.load(was), store.load())


def evaluation_outdated(layout: RunLayout) -> bool:
    """True when the run folder holds an evaluation of another library than its latest one.

    Training changed the library since (a node redone by `--retry-failed`), so the old numbers
    measure another library: a resumed `distill` evaluates from the start instead of continuing them.
    """
    return evaluated_version(layout) is not None and not evaluation_current(layout)


def cache_path(experiment: Experiment, root: Path) -> Path:
    """The run's response cache file: `cache.path`, else cache.sqlite in the run folder (train and evaluate alike)."""
    configured = experiment.config.cache.path
    return Path(configured) if configured else root / "cache.sqlite"


def _cache(experiment: Experiment, root: Path) -> ResponseCache | None:
    """The run's response cache (None when `cache.enabled` is false)."""
    return ResponseCache(cache_path(experiment, root)) if experiment.config.cache.enabled else None


def train_roots(experiment: Experiment) -> list[Scenario]:
    """The training scenarios: `train.scenarios`, or every scenario not held out for evaluation."""
    cfg = experiment.config
    if cfg.train is None:
        raise UsageError(f"{experiment.path}: no `train:` section; add one to run coachlab train.")
    held_out: set[str] = set(cfg.evaluate.scenarios) if cfg.evaluate else set()
    ids = cfg.train.scenarios or [s for s in experiment.scenarios if s not in held_out]
    return [experiment.scenarios[s] for s in ids]


def load_calibration(run_dir: Path) -> CalibrationReport | None:
    """The judge's calibration saved in the run folder by `coachlab judge calibrate`, if any (unreadable: None)."""
    path = run_dir / "calibration.json"
    if not path.exists():
        return None
    try:
        return CalibrationReport.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def saved_criteria(experiment: Experiment, scenarios: Sequence[Scenario], run_dir: Path) -> None:
    """Give `scenarios` without a checklist the one this run saved earlier (a read: no teacher is asked).

    A run applies them before it checks its record (resolved.json), so a resumed or replayed run
    compares the checklists it really grades.
    """
    judge = experiment.config.judge
    if judge.checklist == "off":
        return
    for scenario in scenarios:
        scenario = experiment.scenarios[scenario.id]
        path = criteria_path(run_dir, scenario.id)
        if judge.write_criteria and not scenario.success_criteria and path.exists():
            scenario = scenario.model_copy(update={"success_criteria": load_criteria(path)})
        if judge.examples:
            scenario = with_saved_examples(scenario, run_dir)
        experiment.scenarios[scenario.id] = scenario


async def add_criteria(
    experiment: Experiment, scenarios: Sequence[Scenario], backends: dict[str, Backend], run_dir: Path, teacher: str
) -> None:
    """Give `scenarios` without a checklist the run's saved one or the teacher's (see `ensure_criteria`)."""
    judge = experiment.config.judge
    if judge.checklist == "off":
        return
    if judge.write_criteria:
        experiment.scenarios.update(
            await ensure_criteria(scenarios, run_dir=run_dir, backends=backends, teacher=teacher)
        )
    if judge.examples:
        current = [experiment.scenarios[s.id] for s in scenarios]
        experiment.scenarios.update(
            await ensure_examples(current, run_dir=run_dir, backends=backends, teacher=teacher, count=judge.examples)
        )


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
    cache = _cache(experiment, layout.root) if use_cache else None
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


def _origins(experiment: Experiment, layout: RunLayout) -> dict[str, str]:
    """Situation by scenario id and tree node id, for the strategies' provenance (the run's tree when it has one)."""
    tree = ScenarioTree.load(layout.tree) if layout.tree.exists() else None
    return situations_by_origin(experiment.scenarios.values(), tree)


async def evaluate_experiment(
    experiment: Experiment,
    backends: dict[str, Backend],
    *,
    run_dir: Path,
    resume: bool,
    concurrency: int,
    retry_failed: bool = False,
    use_cache: bool = True,
    observers: Sequence[Observer] = (),
) -> EvaluationReport:
    """Run the held-out evaluation against the latest library and write results.json / results.md.

    With `retry_failed` (and `resume`), episodes that ended on an infrastructure error are run again.
    """
    layout = RunLayout(run_dir)
    config = experiment.config.evaluate
    if config is None:
        raise UsageError(f"{experiment.path}: no `evaluate:` section; add one to run coachlab evaluate.")
    store = LibraryStore(layout.library)
    library = store.load()
    stamp = layout.evaluation / "library_version.txt"
    was = evaluated_version(layout)
    if resume and stamp.exists() and was != library.version:
        if was is None or not evaluation_current(layout):
            raise UsageError(
                f"{layout.evaluation} was run against library v{stamp.read_text().strip()}, the latest is "
                f"v{library.version}: pass --overwrite to evaluate the new library from nothing."
            )
        library = store.load(was)  # since then only this evaluation's retirements: it goes on measuring that library
    retrieval = experiment.config.retrieval.resolved()  # `auto` decided once: what is recorded is what runs
    saved_criteria(experiment, [experiment.scenarios[s] for s in config.scenarios], layout.root)
    record = functools.partial(
        record_run, experiment, backends, root=layout.root, command="evaluate", retrieval=retrieval
    )
    run = record(continuing=resume and (layout.evaluation / "episodes.jsonl").exists())
    layout.evaluation.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stamp, str(library.version))
    before = dict(experiment.scenarios)
    await add_criteria(
        experiment, [experiment.scenarios[s] for s in config.scenarios], backends, layout.root, config.teacher
    )
    if experiment.scenarios != before:
        run = record(continuing=False)  # with the checklists the teacher has just written
    scenarios = [experiment.scenarios[s] for s in config.scenarios]
    try:
        training = train_roots(experiment) if experiment.config.train else []  # where the twin control finds twins
        plans = evaluation_plans(config, scenarios, library.strategies, retrieval, training=training)
    except EmbeddingEndpointError as exc:  # the strategies are embedded here, before any episode
        raise SimulationError(
            f"{exc}. The library's strategies could not be embedded for retrieval, so nothing was evaluated: check "
            "retrieval.endpoint and that its server is up, then run the same command again."
        ) from None
    sim = Simulation(
        experiment, backends, out_dir=layout.evaluation, observers=observers, use_cache=use_cache,
        cache_path=cache_path(experiment, layout.root),
    )  # fmt: skip
    try:
        todo = sim.pending(plans, resume=resume, retry_failed=retry_failed)
        await sim.run(todo, concurrency=concurrency)
    finally:
        sim.close()
    report = summarize_evaluation(
        list(sim.log.read().values()),
        config,
        library_version=library.version,
        package_version=__version__,
        experiment=experiment.path.read_text(encoding="utf-8"),
        prices={name: (b.cost_per_1k_prompt, b.cost_per_1k_completion) for name, b in backends.items()},
        calibration=load_calibration(layout.root),
        strategy_ids=[s.id for s in library.with_status(AuditStatus.APPROVED)],
        situations={s.id: s.situation for s in scenarios if s.situation is not None},
        learned_in=learned_situations(library.strategies, _origins(experiment, layout)),
    ).model_copy(update={"fingerprint": run.fingerprint})
    if config.retire:
        effects = [e for s in report.students for e in s.strategies]
        retire_harmful(store, effects, evaluated=library)
        latest = {s.id: s for s in store.load().strategies}
        retired = {
            e.strategy_id for e in effects
            if e.harmful and e.strategy_id in latest and latest[e.strategy_id].status is AuditStatus.RETIRED
        }  # fmt: skip
        report = report.model_copy(update={"retired": sorted(retired)})
    write_json_atomic(layout.evaluation / "results.json", report)
    write_text_atomic(layout.evaluation / "results.md", to_markdown(report))
    return report
