"""`evaluate`: held-out scenarios under every condition, for every student; the report is written beside.

Conditions: `baseline` (no strategies), `generic` (one fixed list of the library's strongest
guidance, no retrieval), `library` (per-turn retrieval of approved strategies), the control arms
`oracle` (the scenario's own checklist as words to say, every turn: the ceiling of any library for
this student), `placebo` (as many lines of the same form that fit none of the scenario's items:
what more text does by itself) and `twin` (the checklist of the training scenario of the same
situation), see `coachlab.experiments.controls`, and `teacher` (the teacher as the agent). Trial i
of a scenario has the same seed under every condition, so conditions are compared on paired
customer randomness. What the figures mean is in `coachlab.experiments.evaluation_report`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from coachlab import __version__
from coachlab.environments import Observer
from coachlab.errors import SimulationError, UsageError
from coachlab.experiments.config import CONTROLS, EvaluateConfig, Experiment
from coachlab.experiments.controls import oracle_guidance, oracle_lines, placebo_guidance, twin_guidance, twins
from coachlab.experiments.effects import ablation_condition, retire_harmful
from coachlab.experiments.evaluate_markdown import to_markdown
from coachlab.experiments.evaluation_report import EvaluationReport, summarize_evaluation
from coachlab.experiments.guard import record_run
from coachlab.experiments.hit_rate import learned_situations, situations_by_origin
from coachlab.experiments.results import write_json_atomic, write_text_atomic
from coachlab.experiments.runfolder import (
    RunLayout,
    add_criteria,
    cache_path,
    evaluated_version,
    evaluation_current,
    load_calibration,
    saved_criteria,
    train_roots,
)
from coachlab.experiments.simulate import EpisodePlan, Simulation
from coachlab.explorer.tree import ScenarioTree
from coachlab.library import EmbeddingEndpointError, LibraryStore, RetrievalConfig
from coachlab.llm import Backend
from coachlab.schema import AuditStatus, Dialogue, Guidance, GuidanceProvider, Scenario, Strategy
from coachlab.stats import seed_for

__all__ = ["evaluate_experiment", "evaluation_plans", "generic_guidance"]


def generic_guidance(strategies: Sequence[Strategy], size: int) -> GuidanceProvider:
    """The `generic` condition: the same strongest approved strategies every turn, no retrieval."""
    approved = [s for s in strategies if s.status is AuditStatus.APPROVED]
    ranked = sorted(approved, key=lambda s: -s.evidence.gain if s.evidence else 0.0)[:size]
    fixed = [s.as_guidance() for s in ranked]

    async def provide(_: Scenario, __: Dialogue) -> Sequence[Guidance]:
        return fixed

    return provide


def evaluation_plans(
    config: EvaluateConfig,
    scenarios: Sequence[Scenario],
    strategies: Sequence[Strategy],
    retrieval: RetrievalConfig | None = None,
    training: Sequence[Scenario] = (),
) -> list[EpisodePlan]:
    """Every (scenario, trial) under every condition and student; the teacher once per (scenario, trial).

    The control arms (`oracle`, `placebo`, `twin`) run only on scenarios whose checklist has a must
    item; `twin` only on those with a twin among the `training` scenarios (`controls.twins`).

    With `ablate` (and the `library` condition), each approved strategy adds a condition
    `ablate-<id>`: the library without it, on the same seeds.
    """
    settings = retrieval or RetrievalConfig()
    library = settings.provider(strategies)
    generic = generic_guidance(strategies, config.generic_size)
    guidance: dict[str, GuidanceProvider | None] = {
        "baseline": None,
        "generic": generic,
        "library": library,
        "oracle": oracle_guidance(),
        "placebo": placebo_guidance(scenarios),
    }
    pairs = twins(scenarios, training)
    guidance["twin"] = twin_guidance(pairs)
    conditions: list[str] = list(config.conditions)
    if config.ablate and "library" in config.conditions:
        for s in strategies:
            if s.status is AuditStatus.APPROVED:
                conditions.append(ablation_condition(s.id))
                guidance[ablation_condition(s.id)] = settings.provider([x for x in strategies if x.id != s.id])
    plans: list[EpisodePlan] = []
    for trial in range(config.trials):
        for scenario in scenarios:
            seed = seed_for(config.seed, "evaluate", scenario.id, trial)
            for condition in conditions:
                if condition == "teacher":
                    plans.append(EpisodePlan(scenario, config.teacher, "teacher", trial, seed))
                    continue
                if condition in CONTROLS and not oracle_lines(scenario):
                    continue  # no must item, no answer key: the arm would be the baseline again
                if condition == "twin" and scenario.id not in pairs:
                    continue
                for student in config.students:
                    plans.append(EpisodePlan(scenario, student, condition, trial, seed, guidance[condition]))
    return plans


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
        experiment,
        backends,
        out_dir=layout.evaluation,
        observers=observers,
        use_cache=use_cache,
        cache_path=cache_path(experiment, layout.root),
    )
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
            e.strategy_id
            for e in effects
            if e.harmful and e.strategy_id in latest and latest[e.strategy_id].status is AuditStatus.RETIRED
        }
        report = report.model_copy(update={"retired": sorted(retired)})
    write_json_atomic(layout.evaluation / "results.json", report)
    write_text_atomic(layout.evaluation / "results.md", to_markdown(report))
    return report
