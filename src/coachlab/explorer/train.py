"""The train loop of arXiv 2408.07238 over a scenario tree.

Roll out the frontier, write and verify strategies where the student fails (the `Coach` of
`coach.py` does that for a failed node), grow harder children from the failure points, until a
budget is spent or nothing fails. This module keeps the loop: the budgets, the node's rollouts and
whether it failed, the children, merging near-duplicate strategies, and saving.

Every node is saved (tree JSON, library version, episodes) as soon as it is processed, so a
killed run resumes at the first node still on the frontier; the response cache makes redoing
that node's calls cheap.

A node's rollouts and a verification's paired trials run up to `train.concurrency` at once (one at a
time when a model runs in this process); their results are applied in the order a run one at a time
would apply them, so the tree, the library and the episodes file do not depend on it.

A node whose processing hits an infrastructure error (a rollout or verification episode that
ended on one, or a teacher or judge call whose backend failed for good) is kept with status
`error`: its episodes are recorded, but nothing is learned from it (no strategies, no children,
no pass or fail), since the evidence is incomplete. `--resume --retry-failed` puts such nodes back
on the frontier and redoes them from the start (their earlier episodes are dropped).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from coachlab.agents import ChildScenario, ChildScenarios, build_teacher, propose_children
from coachlab.environments import EpisodeRunner
from coachlab.errors import ModelResponseError, UsageError
from coachlab.explorer._infrastructure import InfrastructureError, require_complete
from coachlab.explorer._parallel import in_order
from coachlab.explorer.coach import Coach, failure_point
from coachlab.explorer.config import TrainConfig
from coachlab.explorer.tree import NodeStatus, ScenarioTree, TreeNode
from coachlab.explorer.verify import VerificationResult
from coachlab.library import EmbeddingEndpointError, LibraryStore, RetrievalConfig
from coachlab.library.duplicates import embedder_for, find_duplicate, merge_into
from coachlab.llm import BackendError
from coachlab.schema import AuditStatus, DialogueTurn, Episode, GuidanceProvider, Line, RoleUsage, Scenario, Strategy
from coachlab.stats import seed_for

if TYPE_CHECKING:
    from coachlab.library.dense import Embedder

__all__ = ["TrainConfig", "TrainSummary", "Trainer"]

logger = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    """What one `Trainer.run` did."""

    nodes: int = 0
    processed: int = 0
    failed: int = 0
    accepted: list[str] = field(default_factory=lambda: [])
    rejected: int = 0
    merged: dict[str, str] = field(default_factory=lambda: {})
    """Admitted candidates merged into a strategy they nearly repeat: candidate id -> that strategy's id."""
    stopped_by: str = ""
    tokens: int = 0
    errors: list[str] = field(default_factory=lambda: [])
    """Nodes processed now that ended on an infrastructure error (status `error`)."""
    retried: list[str] = field(default_factory=lambda: [])
    """Nodes put back on the frontier by `retry_failed`."""


def _tokens(usage: dict[str, RoleUsage]) -> int:
    return sum(u.total_tokens for u in usage.values())


class Trainer:
    """Grows a scenario tree and a strategy library.

    It owns the tree and the library; its `coach` writes and decides a failed node's strategies,
    which the trainer adds to the library (merging near-duplicates).

    Args:
        runner: Runs episodes (backends for customer, judge, student and teacher).
        config: The train settings.
        roots: The training scenarios.
        run_dir: Where `tree.json`, `library/` live.
        record: Called with every episode (the run's episodes file), so nothing is lost.
        retrieval: How the student retrieves the library's strategies (the experiment's `retrieval:`).
    """

    def __init__(
        self,
        runner: EpisodeRunner,
        config: TrainConfig,
        roots: Sequence[Scenario],
        *,
        run_dir: str | Path,
        record: Callable[[Episode], None] = lambda e: None,
        retrieval: RetrievalConfig | None = None,
    ) -> None:
        self.runner = runner
        self.retrieval = retrieval or RetrievalConfig()
        self.config = config
        self.run_dir = Path(run_dir)
        self.tree_path = self.run_dir / "tree.json"
        self.library = LibraryStore(self.run_dir / "library")
        self.record = record
        self.tree = ScenarioTree.load(self.tree_path) if self.tree_path.exists() else ScenarioTree()
        for scenario in roots:
            self.tree.add_root(scenario)
        self.tokens = sum(_tokens(n.usage) for n in self.tree.nodes())
        self._embedder: Embedder | None = None
        in_process = any(b.in_process for b in runner.backends.values())
        self.concurrency = 1 if in_process else config.concurrency
        """Episodes in flight at once: one when a model runs in this process (see `TrainConfig.concurrency`)."""
        self.coach = Coach(runner, config, concurrency=self.concurrency)
        """Writes and decides the strategies of a failed node (and verifies a library strategy again)."""

    def _guidance(self) -> GuidanceProvider | None:
        # A strategy from a node still on the frontier was written by a run killed before that node was
        # saved; the node is about to be redone, so it must not see its own (or a later node's) strategies.
        pending = {n.id for n in self.tree.frontier()}
        strategies = [
            s for s in self.library.load().strategies if s.provenance is None or s.provenance.node_id not in pending
        ]
        if not any(s.status is AuditStatus.APPROVED for s in strategies):
            return None
        return self.retrieval.provider(strategies)

    def _budget_left(self) -> str | None:
        if self.config.max_tokens is not None and self.tokens >= self.config.max_tokens:
            return f"token budget ({self.tokens:,} >= {self.config.max_tokens:,})"
        return None

    def reopen_failed(self) -> list[str]:
        """Put every node that ended on an infrastructure error back on the frontier; returns their ids.

        Call it before `run` (and drop those nodes' episodes from the run's log, as
        `train_experiment` does for every frontier node): the nodes are then redone from the start.
        """
        reopened: list[str] = []
        for node in list(self.tree.nodes()):
            if node.status is NodeStatus.ERROR:
                self.tokens -= _tokens(node.usage)
                self.tree.update(node.id, status=NodeStatus.FRONTIER, error=None, episode_ids=[], usage={})
                reopened.append(node.id)
        if reopened:
            self.tree.save(self.tree_path)  # before their episodes are dropped: a kill in between redoes them
        return reopened

    async def run(self, *, retried: Sequence[str] = ()) -> TrainSummary:
        """Process the frontier, iteration by iteration, until a budget is spent or no node fails.

        Args:
            retried: The nodes `reopen_failed` put back on the frontier (reported in the summary).
        """
        summary = TrainSummary(retried=list(retried))
        self.tree.save(self.tree_path)
        start = min((n.iteration for n in self.tree.frontier()), default=0)
        for iteration in range(start, self.config.max_iterations):
            # Children written during this iteration wait for the next one (also after a resume).
            frontier = [n for n in self.tree.frontier() if n.iteration <= iteration]
            if not frontier:
                summary.stopped_by = "no frontier node left"
                break
            for node in frontier:
                stop = self._budget_left()
                if stop:
                    summary.stopped_by = stop
                    break
                await self._process(node, iteration, summary)
                self.tree.save(self.tree_path)
            if summary.stopped_by:
                break
        else:
            summary.stopped_by = summary.stopped_by or f"max_iterations ({self.config.max_iterations})"
        summary.nodes = len(self.tree)
        summary.tokens = self.tokens
        return summary

    async def _process(self, node: TreeNode, iteration: int, summary: TrainSummary) -> None:
        """Roll out one node and learn from it; an infrastructure error leaves it as `error`, nothing learned."""
        usage: dict[str, RoleUsage] = {}
        episode_ids: list[str] = []

        def spend(episode_or_usage: Episode | dict[str, RoleUsage]) -> None:
            parts = episode_or_usage.usage if isinstance(episode_or_usage, Episode) else episode_or_usage
            for role, u in parts.items():
                usage[role] = usage.get(role, RoleUsage()) + u
            self.tokens += _tokens(parts)
            if isinstance(episode_or_usage, Episode):
                self.record(episode_or_usage)

        summary.processed += 1
        try:
            outcome = await self._learn(node, iteration, spend, episode_ids)
        except (BackendError, EmbeddingEndpointError, InfrastructureError) as exc:
            logger.warning(
                "node %s: infrastructure error; the node is kept with no strategies or children from it "
                "(re-run it with --resume --retry-failed): %s",
                node.id,
                exc,
            )
            summary.errors.append(node.id)
            self.tree.update(node.id, status=NodeStatus.ERROR, error=str(exc), episode_ids=episode_ids, usage=usage)
            return
        # Only a node processed to the end changes the library and the tree.
        decided, proposals, prefix = outcome.strategies, outcome.children, outcome.prefix
        produced = [s.id for s in decided]
        if decided:
            try:
                written, merged = await self._merge_duplicates(node, decided)
            except EmbeddingEndpointError as exc:  # nothing was written yet: the node is redone on --retry-failed
                logger.warning("node %s: infrastructure error while merging duplicates: %s", node.id, exc)
                summary.errors.append(node.id)
                self.tree.update(node.id, status=NodeStatus.ERROR, error=str(exc), episode_ids=episode_ids, usage=usage)
                return
            # Rejected candidates are kept too (status rejected, with their numbers): every decision is auditable.
            accepted = [s.id for s in decided if s.status is not AuditStatus.REJECTED and s.id not in merged]
            summary.accepted += accepted
            summary.rejected += sum(s.status is AuditStatus.REJECTED for s in decided)
            summary.merged.update(merged)
            note = f"node {node.id}: admitted {', '.join(accepted) or 'none'}"
            if merged:
                note += "; merged " + ", ".join(f"{c} into {t}" for c, t in merged.items())
            self.library.add(written, note=note)
            produced = list(dict.fromkeys(merged.get(i, i) for i in produced))
        children = 0
        for proposal in proposals:
            if len(self.tree) >= self.config.max_nodes:
                break
            self.tree.add_child(
                node.id, _mutate(node.scenario, proposal, prefix), mutation=proposal.mutation, iteration=iteration + 1
            )
            children += 1
        summary.failed += int(outcome.failed)
        status = NodeStatus.EXPANDED if children else (NodeStatus.FAILED if outcome.failed else NodeStatus.PASSED)
        self.tree.update(
            node.id,
            status=status,
            student_mean=outcome.student_mean,
            teacher_mean=outcome.teacher_mean,
            student_success=outcome.student_success,
            teacher_success=outcome.teacher_success,
            simulator_faults=outcome.simulator_faults,
            episode_ids=episode_ids,
            failure_turn=outcome.failure_turn,
            strategy_ids=produced,
            usage=usage,
        )

    async def _merge_duplicates(self, node: TreeNode, decided: list[Strategy]) -> tuple[list[Strategy], dict[str, str]]:
        """What to write to the library for `decided`, and which admitted candidates were merged into which strategy.

        An admitted candidate that nearly repeats an approved or proposed strategy (or one admitted
        just before it) is not added: the strategy it repeats records its origin and evidence.
        Strategies this node wrote before a kill are not compared with (the node is being redone).
        """
        if not self.config.merge_duplicates or not any(s.status is not AuditStatus.REJECTED for s in decided):
            return decided, {}
        if self._embedder is None and self.retrieval.kind != "lexical":
            self._embedder = embedder_for(self.retrieval)
        ours = {s.id for s in decided}
        pool = [
            s
            for s in self.library.load().strategies
            if s.status in (AuditStatus.APPROVED, AuditStatus.PROPOSED)
            and s.id not in ours
            and (s.provenance is None or s.provenance.node_id != node.id)
        ]
        kept: list[Strategy] = []
        updated: dict[str, Strategy] = {}
        merged: dict[str, str] = {}
        for s in decided:
            if s.status is AuditStatus.REJECTED:
                kept.append(s)
                continue
            match = await find_duplicate(
                s, [updated.get(p.id, p) for p in pool], embedder=self._embedder, threshold=self.config.merge_similarity
            )
            if match is None:
                kept.append(s)
                pool.append(s)
                continue
            target, similarity = match
            updated[target.id] = merge_into(target, s, similarity)
            merged[s.id] = target.id
            logger.info("node %s: %s repeats %s (similarity %.2f): merged", node.id, s.id, target.id, similarity)
        written = [updated.pop(s.id, s) for s in kept]
        return [*written, *updated.values()], merged

    async def _learn(
        self,
        node: TreeNode,
        iteration: int,
        spend: Callable[[Episode | dict[str, RoleUsage]], None],
        episode_ids: list[str],
    ) -> _Outcome:
        """Roll out the node, then write and verify strategies and propose children (nothing is saved here).

        Raises:
            BackendError: A teacher or judge call failed for good.
            EmbeddingEndpointError: The library's strategies could not be embedded for retrieval.
            InfrastructureError: An episode ended on an infrastructure error.
        """
        cfg = self.config
        scenario = node.scenario
        seeds = [seed_for(cfg.seed, node.id, t) for t in range(cfg.trials)]
        guidance = self._guidance()
        share = cfg.share_at(node.depth)
        rollouts = [
            *(
                partial(
                    self.runner.run,
                    scenario,
                    agent_model=cfg.student,
                    trial=t,
                    seed=seed,
                    episode_id=f"{node.id}/student/{t}",
                    condition="library" if guidance else "baseline",
                    guidance=guidance,
                    mentor_model=cfg.teacher,
                    student_share=share,
                )
                for t, seed in enumerate(seeds)
            ),
            partial(
                self.runner.run,
                scenario,
                agent_model=cfg.teacher,
                trial=0,
                seed=seeds[0],
                episode_id=f"{node.id}/teacher/0",
                condition="teacher",
            ),
        ]

        def keep(episode: Episode) -> None:
            spend(episode)
            episode_ids.append(episode.id)

        *student, teacher = await in_order(rollouts, limit=self.concurrency, each=keep)
        require_complete([*student, teacher])
        # Only episodes that were judged and not spoiled by the simulated customer count (and teach).
        scored = [e for e in student if e.scored and e.verdict is not None]
        if not scored:
            faults = sum(e.simulator_fault is not None for e in student)
            raise InfrastructureError(
                f"no student rollout could be scored ({faults} simulator fault(s), "
                f"{sum(e.judge_error is not None for e in student)} judge error(s))"
            )
        verdicts = [e.verdict for e in scored if e.verdict is not None]
        student_mean = sum(v.satisfaction for v in verdicts) / len(verdicts)
        successes = [v.task_success for v in verdicts if v.task_success is not None]
        student_success = sum(successes) / len(successes) if len(successes) == len(verdicts) else None
        tv = teacher.verdict if teacher.scored else None
        teacher_mean = float(tv.satisfaction) if tv is not None else None
        teacher_success = float(tv.task_success) if tv is not None and tv.task_success is not None else None
        if student_success is not None:
            failed = student_success < cfg.success_rate or (
                teacher_success is not None and teacher_success > student_success and cfg.success_rate >= 1.0
            )
            barely = not failed and student_success < 1.0
        else:
            failed = student_mean < cfg.threshold or (
                teacher_mean is not None and teacher_mean - student_mean > cfg.teacher_margin
            )
            barely = not failed and student_mean < cfg.threshold + cfg.barely_margin
        outcome = _Outcome(
            student_mean=student_mean,
            teacher_mean=teacher_mean,
            failed=failed,
            student_success=student_success,
            teacher_success=teacher_success,
            simulator_faults=sum(e.simulator_fault is not None for e in student),
        )
        worst = min(scored, key=lambda e: (e.verdict.score, e.verdict.satisfaction) if e.verdict else (0.0, 0))
        if failed or barely:
            outcome.prefix, student_reply, outcome.failure_turn = failure_point(worst)
            if failed and student_reply is not None:
                best = max(scored, key=lambda e: (e.verdict.score, e.verdict.satisfaction) if e.verdict else (0.0, 0))
                outcome.strategies = await self.coach.strategies(
                    node, iteration, outcome.prefix, student_reply, seeds, guidance, worst, best, spend
                )
            if node.depth < cfg.max_depth and len(self.tree) < cfg.max_nodes:
                outcome.children = await self._children(node, outcome.prefix, seeds[0], spend)
        return outcome

    async def reverify(self, strategy: Strategy, failure: Episode | None, *, tag: str) -> VerificationResult:
        """Verify `strategy` again, as train verifies a candidate, on the node it came from and fresh seeds.

        Both arms retrieve the library's other approved strategies (as on the node). `failure` is the
        failed rollout the strategy was written from: its failure point is where the `checklist` and
        `imitation` criteria reply (without it, they fall back to `uplift` episodes of the whole
        scenario). `tag` makes the seeds and episode ids (`<node>/reverify/<id>/<tag>/...`) its own.

        Raises:
            UsageError: The strategy has no source node in this run's tree.
        """
        node_id = strategy.provenance.node_id if strategy.provenance is not None else None
        if node_id is None:
            raise UsageError(f"strategy {strategy.id!r} records no source node: nothing to verify it on.")
        node = self.tree.node(node_id)
        others = [s for s in self.library.load().strategies if s.id != strategy.id]
        guidance = self.retrieval.provider(others) if any(s.status is AuditStatus.APPROVED for s in others) else None
        return await self.coach.reverify(node, strategy, failure, guidance, tag=tag)

    async def _children(
        self,
        node: TreeNode,
        prefix: list[Line],
        seed: int,
        spend: Callable[[Episode | dict[str, RoleUsage]], None],
    ) -> list[ChildScenario]:
        """The teacher's harder children of the node (the caller adds them to the tree, within the budget)."""
        cfg = self.config
        writer = self.coach.teacher_client("teacher-scenarios", seed)
        try:
            proposals = await propose_children(
                build_teacher(model_client=writer, output=ChildScenarios),
                node.scenario,
                prefix,
                count=cfg.children_per_failure,
            )
        except ModelResponseError as exc:
            logger.warning("node %s: no children: %s", node.id, exc)
            return []
        finally:
            spend({"teacher": writer.usage})
        return list(proposals)


@dataclass
class _Outcome:
    """What processing one node found out (committed to the tree and library only when complete)."""

    student_mean: float | None
    teacher_mean: float | None
    failed: bool
    student_success: float | None = None
    teacher_success: float | None = None
    simulator_faults: int = 0
    failure_turn: int | None = None
    prefix: list[Line] = field(default_factory=lambda: [])
    strategies: list[Strategy] = field(default_factory=lambda: [])
    children: list[ChildScenario] = field(default_factory=lambda: [])


def _mutate(scenario: Scenario, child: ChildScenario, prefix: list[Line]) -> Scenario:
    """The child scenario: the parent's with the persona changed, starting from the failure point.

    Everything else is the parent's: the facts, the policy, the checklist and the `situation` (a harder
    case of the same situation, so strategies learned on it count for that situation's hit rate).
    """
    persona = scenario.persona
    patience = child.patience if child.patience in ("very low", "low", "medium", "high") else persona.patience
    constraints = [*persona.hidden_constraints, *([child.extra_constraint] if child.extra_constraint else [])]
    new_persona = persona.model_copy(
        update={"mood": child.mood or persona.mood, "patience": patience, "hidden_constraints": constraints}
    )
    turns = [DialogueTurn(role="customer" if who == "customer" else "agent", text=text) for who, text in prefix]
    return scenario.model_copy(
        update={
            "persona": new_persona,
            "issue": child.issue or scenario.issue,
            "prefix": turns,
            "opening_line": None if turns else scenario.opening_line,
            "difficulty": child.mutation,
        }
    )
