"""`simulate`: run every scenario x agent model x trial of an experiment, concurrently.

Results are written as each episode finishes (`episodes.jsonl`), so an interrupted run keeps
what it finished and `resume=True` runs only what is missing (and, with `retry_failed`, what
ended on an infrastructure error).

Episodes run in an order that follows the backends (`episode_order`): on a model in this process,
each scenario's episodes back to back, so the engine's KV caches keep the prefixes they share;
otherwise trials interleaved, so early results span the scenarios.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from coachlab.environments import EnvironmentConfig, EpisodeRunner, EventBus, Observer
from coachlab.errors import CoachlabError, UsageError
from coachlab.experiments.results import EpisodeLog, RunSummary, summarize, write_json_atomic
from coachlab.experiments.transcripts import TranscriptWriter
from coachlab.llm import Backend, ModelClient, ResponseCache
from coachlab.schema import Episode, GuidanceProvider, Scenario, TerminationReason
from coachlab.stats import seed_for

if TYPE_CHECKING:
    from coachlab.experiments.config import Experiment

__all__ = [
    "EpisodeOrder",
    "EpisodePlan",
    "RunPaths",
    "Simulation",
    "build_backends",
    "episode_concurrency",
    "episode_order",
    "episode_seed",
    "keep_experiment_copy",
    "order_episodes",
    "plan_episodes",
]

logger = logging.getLogger(__name__)

EMBEDDED_GROUP = "embedded"


episode_seed = seed_for
"""A seed derived from the run's base seed and the episode's coordinates (stable across runs)."""


@dataclass(frozen=True)
class EpisodePlan:
    """One episode to run."""

    scenario: Scenario
    agent_model: str
    condition: str
    trial: int
    seed: int
    guidance: GuidanceProvider | None = field(default=None, compare=False)
    """Per-turn strategies for the service agent (the `library` and `generic` conditions)."""

    @property
    def id(self) -> str:
        """The episode id."""
        return f"{self.scenario.id}/{self.condition}/{self.agent_model}/{self.trial}"


def plan_episodes(
    scenarios: Sequence[Scenario],
    *,
    agents: Sequence[str],
    trials: int,
    seed: int,
    condition: str = "baseline",
) -> list[EpisodePlan]:
    """Every (scenario, agent model, trial) combination, trials interleaved so early results span scenarios.

    `Simulation.run` may run them grouped by scenario instead (`order_episodes`); each keeps its seed.
    """
    return [
        EpisodePlan(s, a, condition, t, episode_seed(seed, s.id, condition, a, t))
        for t in range(trials)
        for s in scenarios
        for a in agents
    ]


EpisodeOrder = Literal["grouped", "interleaved"]
"""How `Simulation.run` orders episodes: each scenario's back to back, or as planned (trials interleaved)."""


def order_episodes(plans: Sequence[EpisodePlan], order: EpisodeOrder) -> list[EpisodePlan]:
    """`plans` in the order they are started.

    `interleaved`: as planned. `grouped`: each scenario's episodes back to back, the scenarios in the
    order they first appear and each scenario's episodes in their planned order. An episode depends on
    its plan only (its seed and id come from its coordinates), never on what ran before it, so either
    order runs the same episodes.
    """
    if order == "interleaved":
        return list(plans)
    rank: dict[str, int] = {}
    for plan in plans:
        rank.setdefault(plan.scenario.id, len(rank))
    return sorted(plans, key=lambda plan: rank[plan.scenario.id])  # stable: planned order within a scenario


def episode_order(backends: Iterable[Backend]) -> EpisodeOrder:
    """`grouped` when a backend runs its model in this process, else `interleaved`.

    An in-process engine (the embedded model) answers one call at a time on this machine's CPU, and
    each role's context keeps the KV prefix of its last prompt: episodes of one scenario back to back
    reuse the customer's persona prompt, the service agent's system prompt and the judge's case, which
    an interleaved order evicts every episode. Grouping costs nothing there; its only loss is that an
    interrupted run covers fewer scenarios. A server with several slots runs episodes at once and keeps
    its own prompt cache, so the order stays the one that spreads early results.
    """
    return "grouped" if any(b.in_process for b in backends) else "interleaved"


def episode_concurrency(configured: int | None, backends: Iterable[Backend]) -> int:
    """Episodes in flight: `configured` when set, else 1 with an in-process model and 4 without.

    In-process models share one slot (see `build_backends`): several episodes in flight would only
    take turns at each call and evict each other's KV prefixes (measured: 22% more prompt tokens
    processed interleaved than grouped). A server runs episodes at once.
    """
    if configured is not None:
        return configured
    return 1 if any(b.in_process for b in backends) else 4


@dataclass(frozen=True)
class RunPaths:
    """Where a run's files go."""

    root: Path

    @property
    def episodes(self) -> Path:
        """One JSON line per finished episode."""
        return self.root / "episodes.jsonl"

    @property
    def transcripts(self) -> Path:
        """Readable transcripts, one Markdown file per episode."""
        return self.root / "transcripts"

    @property
    def summary(self) -> Path:
        """The summary table as JSON."""
        return self.root / "summary.json"

    @property
    def cache(self) -> Path:
        """The default response cache."""
        return self.root / "cache.sqlite"

    @property
    def config(self) -> Path:
        """A copy of the experiment file as run."""
        return self.root / "experiment.yaml"


def build_backends(
    experiment: Experiment,
    names: Iterable[str],
    *,
    clients: Mapping[str, ModelClient] | None = None,
) -> dict[str, Backend]:
    """Build a `Backend` for each named model entry.

    Embedded (in-process llama.cpp) backends share one concurrency slot: they compete for the same
    CPU cores, and running two at once is slower than taking turns.

    Args:
        experiment: The loaded experiment.
        names: Model entry names to build.
        clients: Ready clients to use instead of building from YAML (tests, dry runs).
    """
    backends: dict[str, Backend] = {}
    shared: asyncio.Semaphore | None = None
    for name in dict.fromkeys(names):
        entry = experiment.config.models[name]
        if clients is not None and name in clients:
            backend = Backend.from_client(name, clients[name], entry=entry)
        else:
            backend = Backend.from_entry(name, entry, where=experiment.where(f"models.{name}"))
        if entry.provider_path == "coachlab.llm.embedded.EmbeddedChatCompletionClient" and not clients:
            from coachlab.llm.weights import resolve_model_file

            resolve_model_file(str(entry.config.get("model", "")))  # a missing model fails now, not per episode
            shared = shared or asyncio.Semaphore(1)
            backend.concurrency = 1
            backend._semaphore = shared  # pyright: ignore[reportPrivateUsage]
        backends[name] = backend
    return backends


class Simulation:
    """Runs planned episodes of an experiment and records them.

    Args:
        experiment: The loaded experiment.
        backends: Built backends by model entry name (must include customer, judge and each agent).
        out_dir: The run folder.
        observers: Extra observers (progress display, metrics) besides the transcript writer.
        use_cache: Use the role-aware response cache.
        environment: Episode settings (default: the experiment's).
        cache_path: The cache file (default: the experiment's `cache.path`, else cache.sqlite in `out_dir`).
        order: How `run` orders episodes (default: what the backends call for, `episode_order`).
    """

    def __init__(
        self,
        experiment: Experiment,
        backends: Mapping[str, Backend],
        *,
        out_dir: str | Path,
        observers: Sequence[Observer] = (),
        use_cache: bool = True,
        environment: EnvironmentConfig | None = None,
        cache_path: Path | None = None,
        order: EpisodeOrder | None = None,
    ) -> None:
        self.experiment = experiment
        self.backends = dict(backends)
        self.order: EpisodeOrder = order or episode_order(self.backends.values())
        self.paths = RunPaths(Path(out_dir))
        self.log = EpisodeLog(self.paths.episodes)
        self.environment = environment or experiment.config.environment
        self.writer = TranscriptWriter(self.paths.transcripts)
        self.bus = EventBus([self.writer, *observers])
        configured = experiment.config.cache.path
        cache_path = cache_path or (Path(configured) if configured else self.paths.cache)
        self.cache = ResponseCache(cache_path) if use_cache and experiment.config.cache.enabled else None
        self.runner = EpisodeRunner(
            self.backends,
            self.environment,
            cache=self.cache,
            bus=self.bus,
            judging=experiment.config.judge,
            similarity=experiment.judge_gate(),
            expert=experiment.config.expert,
            experts=experiment.experts(),
            placement=experiment.config.retrieval.placement,
        )

    def pending(self, plans: Sequence[EpisodePlan], *, resume: bool, retry_failed: bool = False) -> list[EpisodePlan]:
        """The plans still to run, given what the episodes file already holds.

        Raises:
            UsageError: The run folder already holds episodes and `resume` is False.
        """
        done = self.log.read()
        if done and not resume:
            raise UsageError(
                f"{self.paths.root} already holds {len(done)} episode(s). Pass --resume to continue that run, "
                "or --overwrite to start it again from nothing."
            )
        keep = {
            i
            for i, ep in done.items()
            if not (retry_failed and ep.termination is TerminationReason.INFRASTRUCTURE_ERROR)
        }
        return [p for p in plans if p.id not in keep]

    async def run_one(self, plan: EpisodePlan) -> Episode:
        """Run, record and return one episode."""
        episode = await self.runner.run(
            plan.scenario,
            agent_model=plan.agent_model,
            trial=plan.trial,
            seed=plan.seed,
            episode_id=plan.id,
            condition=plan.condition,
            guidance=plan.guidance,
        )
        self.log.append(episode)
        return episode

    async def run(self, plans: Sequence[EpisodePlan], *, concurrency: int) -> list[Episode]:
        """Run `plans`, started in `self.order`, at most `concurrency` at once; returns them as they finished."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.log.repair()
        limit = asyncio.Semaphore(concurrency)
        finished: list[Episode] = []

        async def one(plan: EpisodePlan) -> None:
            async with limit:
                finished.append(await self.run_one(plan))

        try:
            async with asyncio.TaskGroup() as group:
                for plan in order_episodes(plans, self.order):
                    group.create_task(one(plan))
        except BaseExceptionGroup as group_error:
            # A user error (CoachlabError) or Ctrl-C inside one episode stops the run: surface it as itself.
            for exc in group_error.exceptions:
                if isinstance(exc, CoachlabError | KeyboardInterrupt):
                    raise exc from None
            raise
        finally:
            self.writer.close()
            self.log.close()
        return finished

    def summary(self) -> RunSummary:
        """Summarize every episode on disk and save summary.json."""
        cfg = self.experiment.config.simulate
        result = summarize(self.log.read().values(), threshold=cfg.satisfaction_threshold, seed=cfg.seed)
        write_json_atomic(self.paths.summary, result)
        return result

    def save_config(self, *, keep_existing: bool = False) -> None:
        """Keep a copy of the experiment file beside the results (secrets stay as ${VAR} references).

        Args:
            keep_existing: Leave a copy already there (a resumed run keeps the file it started with).
        """
        keep_experiment_copy(self.experiment, self.paths.config, keep_existing=keep_existing)

    def close(self) -> None:
        """Close the cache."""
        if self.cache is not None:
            self.cache.close()


def keep_experiment_copy(experiment: Experiment, path: Path, *, keep_existing: bool) -> None:
    """Copy the experiment file to `path` (a run folder's experiment.yaml), unless `keep_existing` and it is there."""
    if keep_existing and path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(experiment.path, path)


def overwrite_run(root: str | Path) -> None:
    """Delete a run folder's results (used by --overwrite)."""
    paths = RunPaths(Path(root))
    for p in (paths.episodes, paths.summary):
        p.unlink(missing_ok=True)
    if paths.transcripts.exists():
        shutil.rmtree(paths.transcripts)


def elapsed(start: float) -> str:
    """'3m 12s' since `start` (a perf_counter value)."""
    s = int(time.perf_counter() - start)
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"
