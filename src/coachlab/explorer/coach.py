"""The coach: what train does at a failed node to turn it into decided candidate strategies.

The teacher replies where the student lost the customer, then, reading the failure in hindsight
(the missed checklist items, the judge's words, the best rollout's line), writes candidate
strategies. Each candidate is verified with the student by the configured criterion, refined by the
teacher and verified again up to `verify.refine_rounds` times, and decided: admitted (approved or
proposed, per `train.admit_as`) or rejected, shown as its best-measured version. The `Trainer` owns
a `Coach`, calls it for a failed node and adds what it decided to the library; it also calls it to
verify a library strategy again (`Trainer.reverify`).

What every candidate of a node is verified against (the failure point, the teacher's reply, the
seeds, the `without` arm) is computed once and shared, so the node's candidates are compared on
the same evidence and the `without` arm is paid for once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from coachlab.agents import (
    Hindsight,
    StrategyDraft,
    StrategyDrafts,
    build_teacher,
    propose_strategies,
    refine_strategy,
)
from coachlab.environments import EpisodeRunner
from coachlab.errors import ModelResponseError
from coachlab.explorer._infrastructure import require_complete
from coachlab.explorer.config import TrainConfig
from coachlab.explorer.tree import TreeNode
from coachlab.explorer.verify import (
    ChecklistArm,
    ImitationArm,
    VerificationResult,
    missed_items,
    verify_checklist,
    verify_guidance,
    verify_imitation,
)
from coachlab.llm import RoleClient
from coachlab.schema import (
    AgentMessage,
    Attempt,
    AuditStatus,
    Criterion,
    Episode,
    Guidance,
    GuidanceProvider,
    Line,
    Provenance,
    RoleUsage,
    Scenario,
    Strategy,
)
from coachlab.stats import seed_for

__all__ = ["Coach", "failure_point"]

logger = logging.getLogger(__name__)


class Coach:
    """Writes a failed node's candidate strategies with the teacher and decides each by verifying it.

    Args:
        runner: Runs episodes and single replies (the student, teacher, customer and judge backends).
        config: The train settings (which models, how to verify, what the teacher reads, how to admit).
        concurrency: Episodes in flight at once in a verification (the trainer's `concurrency`).
    """

    def __init__(self, runner: EpisodeRunner, config: TrainConfig, *, concurrency: int) -> None:
        self.runner = runner
        self.config = config
        self.concurrency = concurrency

    def teacher_client(self, role: str, seed: int) -> RoleClient:
        """The teacher as a writer (strategies, refinements, children), with room for its JSON."""
        room = self.config.writer_max_tokens
        return RoleClient(
            self.runner.backends[self.config.teacher],
            role=role,
            seed=seed,
            cache=self.runner.cache,
            create_args={"max_tokens": room} if room is not None else None,
        )

    def hindsight(self, scenario: Scenario, worst: Episode, best: Episode, at: int) -> Hindsight:
        """What the teacher may read after the fact: missed items, the judge's words, the private goal, the best try."""
        verdict = worst.verdict
        by_id = {c.id: c for c in scenario.success_criteria}
        missed = [r.id for r in verdict.criteria if r.status == "not_met"] if verdict is not None else []
        best_line = None
        if best.id != worst.id:
            lines = best.dialogue
            after = [e for e in lines[at:] if isinstance(e, AgentMessage) and e.origin == "model"]
            best_line = after[0].text if after else None
        todo = [by_id[m] for m in missed if m in by_id and not by_id[m].forbidden]
        return Hindsight(
            missed=[c.text for c in todo],
            examples=[c.example for c in todo if c.example] if self.config.hindsight_examples else [],
            broken=[by_id[m].text for m in missed if m in by_id and by_id[m].forbidden],
            rationale=verdict.rationale if verdict is not None else "",
            goal=scenario.persona.goal if self.config.hindsight_goal else "",
            satisfied_when=scenario.persona.satisfied_when if self.config.hindsight_goal else "",
            best_reply=best_line,
        )

    async def strategies(
        self,
        node: TreeNode,
        iteration: int,
        prefix: list[Line],
        student_reply: str,
        seeds: list[int],
        guidance: GuidanceProvider | None,
        worst: Episode,
        best: Episode,
        spend: Callable[[Episode | dict[str, RoleUsage]], None],
    ) -> list[Strategy]:
        """The node's candidates, each verified (and refined) and decided; the caller adds them to the library.

        Raises:
            BackendError: A teacher or judge call failed for good.
            EmbeddingEndpointError: The library's strategies could not be embedded for retrieval.
            InfrastructureError: A verification episode ended on an infrastructure error.
        """
        cfg = self.config
        scenario = node.scenario
        teacher_reply, cost = await self.runner.reply_at(scenario, prefix, agent_model=cfg.teacher, seed=seeds[0])
        spend({("teacher" if role == "agent" else role): u for role, u in cost.items()})
        bench = _Bench(
            prefix=prefix,
            teacher_reply=teacher_reply,
            missed=missed_items(scenario, worst),
            seeds=[seed_for(cfg.seed, node.id, "verify", t) for t in range(cfg.verify.trials)],
            base=list(await guidance(scenario, prefix)) if guidance is not None else [],
        )
        writer = self.teacher_client("teacher", seeds[0])
        try:
            drafts = await propose_strategies(
                build_teacher(model_client=writer, output=StrategyDrafts),
                scenario,
                prefix,
                student_reply=student_reply,
                teacher_reply=teacher_reply,
                count=cfg.strategies_per_failure,
                hindsight=self.hindsight(scenario, worst, best, len(prefix)),
            )
        except ModelResponseError as exc:
            logger.warning("node %s: no strategies: %s", node.id, exc)
            return []
        finally:
            spend({"teacher": writer.usage})
        decided: list[Strategy] = []
        for i, draft in enumerate(drafts):
            sid = f"{_slug(node.id)}-{iteration}-{i + 1}"
            strategy = await self._verify_and_refine(node, sid, draft, seeds, bench, guidance, spend)
            strategy = strategy.model_copy(
                update={
                    "provenance": Provenance(
                        scenario_id=scenario.id,
                        node_id=node.id,
                        episode_id=worst.id,
                        failure_turn=worst.verdict.failure_turn if worst.verdict else None,
                        teacher_model=self.runner.backends[cfg.teacher].identity,
                        iteration=iteration,
                    )
                }
            )
            decided.append(strategy)
        return decided

    async def _verify_and_refine(
        self,
        node: TreeNode,
        sid: str,
        draft: StrategyDraft,
        seeds: list[int],
        bench: _Bench,
        guidance: GuidanceProvider | None,
        spend: Callable[[Episode | dict[str, RoleUsage]], None],
    ) -> Strategy:
        """The candidate as verified last: approved/proposed when accepted, rejected otherwise."""
        cfg = self.config
        attempts: list[Attempt] = []
        for round_ in range(cfg.verify.refine_rounds + 1):
            candidate = Guidance(id=sid, situation=draft.situation, guidance=draft.guidance)
            result = await self._verify(node, candidate, bench, guidance, f"{node.id}/verify/{sid}/{round_}")
            fresh = [*(result.without if bench.without is None else ()), *result.with_guidance]
            for ep in fresh:
                spend(ep)
            spend(result.usage)
            require_complete(fresh)  # a verdict missing for lack of a backend is no evidence against the candidate
            for arm in (bench.imitation_without, bench.checklist_without):
                if arm is not None and not bench.imitation_spent:
                    spend(arm.usage)  # the node's without arm, spent once
                    bench.imitation_spent = True
            if cfg.verify.criterion == "uplift" and bench.without is None:
                bench.without = result.without
            strategy = Strategy(
                id=sid,
                situation=draft.situation,
                guidance=draft.guidance,
                evidence=result.evidence,
                attempts=list(attempts),
            )
            if result.accepted:
                status = AuditStatus.APPROVED if cfg.admit_as == "approved" else AuditStatus.PROPOSED
                return strategy.with_status(status, by="train", at=datetime.now(UTC), why=result.evidence.note)
            rejected = strategy.with_status(
                AuditStatus.REJECTED, by="train", at=datetime.now(UTC), why=result.evidence.note
            )
            if round_ == cfg.verify.refine_rounds:
                return _best(rejected)
            attempts.append(Attempt(situation=draft.situation, guidance=draft.guidance, evidence=result.evidence))
            writer = self.teacher_client("teacher-refine", seeds[0] + round_)
            try:
                draft = await refine_strategy(
                    build_teacher(model_client=writer, output=StrategyDraft),
                    node.scenario,
                    draft,
                    result=result.evidence.note,
                )
            except ModelResponseError as exc:
                logger.warning("node %s: refinement failed: %s", node.id, exc)
                return _best(rejected)
            finally:
                spend({"teacher": writer.usage})
        raise AssertionError("the last verification round always returns")

    async def _verify(
        self,
        node: TreeNode,
        candidate: Guidance,
        bench: _Bench,
        guidance: GuidanceProvider | None,
        id_prefix: str,
        *,
        criterion: str | None = None,
    ) -> VerificationResult:
        """One verification of `candidate` by `criterion` (default: the configured one), reusing the `without` arm."""
        cfg = self.config
        criterion = criterion or cfg.verify.criterion
        if criterion == "checklist" and bench.missed:
            result, bench.checklist_without = await verify_checklist(
                self.runner,
                node.scenario,
                candidate,
                bench.prefix,
                bench.missed,
                agent_model=cfg.student,
                seeds=bench.seeds,
                config=cfg.verify,
                base=bench.base,
                without=bench.checklist_without,
                concurrency=self.concurrency,
            )
            return result
        if criterion == "imitation":
            result, bench.imitation_without = await verify_imitation(
                self.runner,
                node.scenario,
                candidate,
                bench.prefix,
                agent_model=cfg.student,
                teacher_reply=bench.teacher_reply,
                seeds=bench.seeds,
                config=cfg.verify,
                base=bench.base,
                without=bench.imitation_without,
                concurrency=self.concurrency,
            )
            return result
        return await verify_guidance(
            self.runner,
            node.scenario,
            candidate,
            agent_model=cfg.student,
            seeds=bench.seeds,
            config=cfg.verify,
            id_prefix=id_prefix,
            without=bench.without,
            base=guidance,
            mentor_model=cfg.teacher,
            student_share=cfg.share_at(node.depth),
            concurrency=self.concurrency,
        )

    async def reverify(
        self,
        node: TreeNode,
        strategy: Strategy,
        failure: Episode | None,
        guidance: GuidanceProvider | None,
        *,
        tag: str,
    ) -> VerificationResult:
        """Verify `strategy` again on `node`, its source, with `guidance` for both arms (see `Trainer.reverify`)."""
        cfg = self.config
        prefix = failure_point(failure)[0] if failure is not None else []
        seeds = [seed_for(cfg.seed, node.id, "reverify", tag, t) for t in range(cfg.verify.trials)]
        criterion = cfg.verify.criterion if failure is not None else "uplift"
        teacher_reply = ""
        if criterion == "imitation":
            teacher_reply, _ = await self.runner.reply_at(node.scenario, prefix, agent_model=cfg.teacher, seed=seeds[0])
        bench = _Bench(
            prefix=prefix,
            teacher_reply=teacher_reply,
            seeds=seeds,
            missed=missed_items(node.scenario, failure) if failure is not None else [],
            base=list(await guidance(node.scenario, prefix)) if guidance is not None else [],
        )
        id_prefix = f"{node.id}/reverify/{strategy.id}/{tag}"
        return await self._verify(node, strategy.as_guidance(), bench, guidance, id_prefix, criterion=criterion)


def failure_point(episode: Episode) -> tuple[list[Line], str | None, int | None]:
    """The dialogue before the student's line where the judge says the customer was lost, and that line.

    The judge numbers every agent line; when it points at a line the student did not write (the
    prefix, or the teacher's turn in a mixed rollout), the student's next line is taken, else its
    last one before. When the judge names no line, the student's first: measured on the benchmark,
    at the last line a student that has said one thing twice says it a third time whatever its
    prompt holds (0.5B and 1.5B alike), so a strategy can only be tested, and the teacher's reply
    only matter, where the chat has not yet gone wrong.

    Returns:
        The dialogue before that line as (speaker, text) pairs, the line, and its index among the
        agent lines; `([], None, None)` when the student wrote no line.
    """
    lines = episode.dialogue
    agent_lines = [i for i, e in enumerate(lines) if isinstance(e, AgentMessage)]
    own = [i for i in agent_lines if lines[i].origin == "model"]  # type: ignore[union-attr]
    if not own:
        return [], None, None
    verdict = episode.verdict
    turn = verdict.failure_turn if verdict is not None and verdict.failure_turn is not None else None
    if turn is None:
        index = own[0]
    else:
        blamed = agent_lines[min(max(turn, 0), len(agent_lines) - 1)]
        index = next((i for i in own if i >= blamed), own[-1])
    prefix: list[Line] = [("customer" if e.type == "customer_message" else "agent", e.text) for e in lines[:index]]
    return prefix, lines[index].text, agent_lines.index(index)


@dataclass
class _Bench:
    """What every candidate of one failed node is verified against (computed once, shared)."""

    prefix: list[Line]
    teacher_reply: str
    seeds: list[int]
    base: list[Guidance]
    missed: list[Criterion] = field(default_factory=lambda: [])
    without: list[Episode] | None = None
    imitation_without: ImitationArm | None = None
    imitation_spent: bool = False
    checklist_without: ChecklistArm | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "s"


def _best(rejected: Strategy) -> Strategy:
    """A rejected candidate shown as its best-measured version; every version stays in `attempts`."""
    versions = [
        *rejected.attempts,
        Attempt(situation=rejected.situation, guidance=rejected.guidance, evidence=rejected.evidence),
    ]

    def strength(a: Attempt) -> tuple[float, float]:
        e = a.evidence
        return (-(e.p_value if e and e.p_value is not None else 1.0), e.gain if e else 0.0)

    best = max(versions, key=strength)  # the earliest of equals
    if best.situation == rejected.situation and best.guidance == rejected.guidance:
        return rejected
    others = [v for v in versions if v is not best]
    return rejected.model_copy(
        update={"situation": best.situation, "guidance": best.guidance, "evidence": best.evidence, "attempts": others}
    )
