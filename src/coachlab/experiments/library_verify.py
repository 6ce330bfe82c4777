"""`coachlab library verify RUN ID`: measure a strategy again on the node it came from.

An edit changes what the student reads, so the evidence measured for the old text no longer
applies: `LibraryStore.edit` moves it into `attempts` and leaves the strategy without evidence.
`verify_strategy` runs the train loop's verification again (the run's `train.verify` settings,
student, teacher, judge and retriever) on the strategy's source node, on seeds of its own, and
records the fresh evidence on the strategy, the decision in its audit trail: accepted keeps its
status (a person still approves an edited strategy), rejected makes it `rejected`. Evidence an
unedited strategy had moves into `attempts` beside the text it measured.

The experiment must be the one the run was trained with (resolved.json's train record): other
settings would measure something the library never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from coachlab.environments import EpisodeRunner, EventBus
from coachlab.errors import UsageError
from coachlab.experiments.config import Experiment
from coachlab.experiments.guard import compare_runs
from coachlab.experiments.resolved import RESOLVED_FILE, load_record, resolve_run
from coachlab.experiments.results import EpisodeLog
from coachlab.experiments.runfolder import RunLayout, cache_path, saved_criteria, train_roots
from coachlab.experiments.transcripts import TranscriptWriter
from coachlab.explorer.train import Trainer
from coachlab.library import LibraryStore, RetrievalConfig
from coachlab.llm import Backend, ResponseCache
from coachlab.schema import Attempt, AuditStatus, Strategy

__all__ = ["VerifyOutcome", "check_trained_with", "verify_strategy"]


@dataclass(frozen=True)
class VerifyOutcome:
    """What `verify_strategy` decided and wrote."""

    strategy: Strategy
    accepted: bool
    library_version: int
    node_id: str
    episodes: int
    """Verification episodes run (the `uplift` criterion; the others reply at the failure point)."""


def check_trained_with(
    experiment: Experiment, backends: dict[str, Backend], run_dir: Path, retrieval: RetrievalConfig
) -> None:
    """Refuse an experiment (or models) other than the ones the run's library was trained with.

    Raises:
        UsageError: The run has a train record and something that can change results differs.
    """
    record = load_record(run_dir)
    if record is None or record.train is None:
        return
    now = resolve_run(experiment, backends, command="train", retrieval=retrieval)
    differences = compare_runs(record.train, now)
    if differences:
        lines = "\n".join(f"  {d}" for d in differences)
        raise UsageError(
            f"{run_dir} was trained with another experiment (its {RESOLVED_FILE}); verifying with this one would "
            f"measure settings that did not make the library. What changed:\n{lines}\nVerify with the run's "
            f"experiment file ({record.train.source}) and its models."
        )


async def verify_strategy(
    experiment: Experiment,
    backends: dict[str, Backend],
    *,
    run_dir: Path,
    strategy_id: str,
    by: str,
    use_cache: bool = True,
) -> VerifyOutcome:
    """Verify one strategy of a run again on its source node and record the fresh evidence (module doc).

    Raises:
        UsageError: No `train:` section, no tree or library in `run_dir`, no such strategy, no
            source node, another experiment than the run's, or (for the checklist and imitation
            criteria) the failed rollout the strategy was written from is not in the train log.
    """
    layout = RunLayout(run_dir)
    config = experiment.config.train
    if config is None:
        raise UsageError(f"{experiment.path}: no `train:` section; verify uses its `verify:` settings.")
    if not layout.tree.exists():
        raise UsageError(f"{run_dir}: no scenario tree here (run coachlab train first, or check the folder).")
    store = LibraryStore(layout.library)
    library = store.load()
    strategy = library.get(strategy_id)
    provenance = strategy.provenance
    if provenance is None or provenance.node_id is None:
        raise UsageError(f"{strategy_id}: records no source node (it was not written by train): nothing to verify on.")
    retrieval = experiment.config.retrieval.resolved()
    saved_criteria(experiment, train_roots(experiment), layout.root)
    check_trained_with(experiment, backends, layout.root, retrieval)
    log = EpisodeLog(layout.train / "episodes.jsonl")
    failure = log.read().get(provenance.episode_id) if provenance.episode_id else None
    if failure is None and config.verify.criterion != "uplift":
        log.close()
        raise UsageError(
            f"{log.path}: no episode {provenance.episode_id!r}, the failed rollout {strategy_id} was written from; "
            f"the {config.verify.criterion} criterion replies at its failure point."
        )
    writer = TranscriptWriter(layout.train / "transcripts")
    cached = use_cache and experiment.config.cache.enabled
    cache = ResponseCache(cache_path(experiment, layout.root)) if cached else None
    runner = EpisodeRunner(
        backends,
        experiment.config.environment,
        cache=cache,
        bus=EventBus([writer]),
        judging=experiment.config.judge,
        similarity=experiment.judge_gate(),
        placement=experiment.config.retrieval.placement,
    )
    try:
        trainer = Trainer(runner, config, [], run_dir=layout.root, retrieval=retrieval)
        result = await trainer.reverify(strategy, failure, tag=f"v{library.version}")
        episodes = [*result.without, *result.with_guidance]
        for episode in episodes:
            log.append(episode)
    finally:
        writer.close()
        log.close()
        if cache is not None:
            cache.close()
    attempts = list(strategy.attempts)
    if strategy.evidence is not None:  # the same text measured before: kept beside it
        attempts.append(Attempt(situation=strategy.situation, guidance=strategy.guidance, evidence=strategy.evidence))
    status = strategy.status if result.accepted else AuditStatus.REJECTED
    updated = strategy.model_copy(update={"evidence": result.evidence, "attempts": attempts}).with_status(
        status, by=by, at=datetime.now(UTC), why=f"verified again on node {provenance.node_id}: {result.evidence.note}"
    )
    decision = "accepted" if result.accepted else "rejected"
    version = store.add([updated], note=f"verify {strategy_id} by {by}: {decision}")
    return VerifyOutcome(
        strategy=updated,
        accepted=result.accepted,
        library_version=version.version,
        node_id=provenance.node_id,
        episodes=len(episodes),
    )
