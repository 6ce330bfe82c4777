"""Grading an episode: the judge's satisfaction votes and the per-line checklist, into one `Verdict`.

Each vote is a fresh judge (its own seed). Satisfaction is the median vote and the yes/no fields
the majority; checklist items are decided by majority over the votes (`coachlab.judging`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from autogen_agentchat.agents import AssistantAgent
from autogen_core import CancellationToken
from autogen_core.models import LLMMessage

from coachlab.agents.checklist import QuestionStyle, ask_line
from coachlab.agents.judge import judge_view, survey_view
from coachlab.errors import ModelResponseError
from coachlab.judging import LineVotes, decide_criterion, graded_lines, policy_followed, task_success
from coachlab.judging.evidence import fits
from coachlab.judging.gate import Similarity
from coachlab.schema import AgentMessage, Criterion, CriterionResult, Event, Line, SatisfactionScore, Scenario, Verdict

__all__ = ["JudgePanel", "ReplyScore", "SatisfactionView", "combine_scores", "grade_checklist", "score_reply"]


class SatisfactionView(Protocol):
    """Builds the satisfaction judge's messages for a dialogue (`judge_view`, or the survey)."""

    def __call__(self, scenario: Scenario, dialogue: list[Line], *, correction: str | None = None) -> list[LLMMessage]:
        """The messages for `dialogue`, with `correction` (why the last answer was unreadable) when re-asking."""
        ...


logger = logging.getLogger(__name__)


@dataclass
class JudgePanel:
    """The judges of one episode: one satisfaction judge and one checklist grader per vote."""

    judges: list[AssistantAgent]
    graders: list[AssistantAgent] = field(default_factory=lambda: [])
    """Empty: no checklist grading (satisfaction only)."""
    similarity: Similarity | None = None
    """The gate; None grades without it."""
    floor: float = 0.40
    sure: float | None = None
    """A similarity at which a line counts without asking (None: always ask)."""
    survey: bool = False
    """The satisfaction judges are asked the customer's post-chat survey (`survey_view`), not `judge_view`."""
    question: QuestionStyle = "meaning-examples"
    """How each per-line checklist question is put (`line_view`)."""

    def satisfaction_view(self) -> SatisfactionView:
        """What the satisfaction judges are shown: `judge_view`, or the survey when `survey`.

        The survey lists the policy only where the checklist does not decide `policy_followed` (no grader,
        or no policy item): the customer's context then processes fewer new tokens.
        """
        if not self.survey:
            return judge_view
        graded = bool(self.graders)

        def view(scenario: Scenario, dialogue: list[Line], *, correction: str | None = None) -> list[LLMMessage]:
            decided = graded and any(c.policy for c in scenario.success_criteria)
            return survey_view(scenario, dialogue, policy=not decided, correction=correction)

        return view


async def grade_checklist(
    panel: JudgePanel,
    criteria: Sequence[Criterion],
    events: Sequence[Event],
    *,
    retries: int = 2,
    cancellation_token: CancellationToken | None = None,
) -> list[CriterionResult]:
    """Decide every item of `criteria` from per-line questions, each grader (vote) asking its own.

    Lines outside the gate are never asked, and a vote stops asking about an item once a line has
    shown it. An unreadable answer counts as "no" (logged). A failed backend raises.
    """
    lines = graded_lines(events)
    votes = len(panel.graders)
    sims: dict[tuple[int, str], float] = {}
    if panel.similarity is not None and lines:
        # A line's similarity to an item is its best cosine to any of the item's example lines.
        pairs = [(line, c, example) for line in lines for c in criteria for example in c.all_examples]
        scores = await panel.similarity.similarities([(line.text, example) for line, _, example in pairs])
        for (line, c, _), score in zip(pairs, scores, strict=True):
            key = (line.turn, c.id)
            sims[key] = max(score, sims.get(key, score))
    yes: dict[tuple[int, str], list[int]] = {}
    shown: list[set[str]] = [set() for _ in panel.graders]  # per vote: items a line has shown
    # Line, then item, then vote: the questions about one line share their prompt up to the statement,
    # and the votes on one statement share all of it (an engine with a prompt cache processes it once).
    # Each vote's grader is asked the same questions in the same order as one vote alone would be.
    for line in lines:
        for criterion in criteria:
            probe = LineVotes(
                yes=(),
                similarity=sims.get((line.turn, criterion.id)),
                matched=criterion.matches(line.text),
                fits=fits(criterion, line.text),
            )
            if not probe.gated(panel.floor):
                continue
            for vote, grader in enumerate(panel.graders):
                if criterion.id in shown[vote]:
                    continue
                if probe.sure(panel.sure):
                    yes.setdefault((line.turn, criterion.id), [])  # counts without a question
                    shown[vote].add(criterion.id)
                    continue
                try:
                    said_yes = await ask_line(
                        grader,
                        line.text,
                        criterion,
                        question=panel.question,
                        retries=retries,
                        cancellation_token=cancellation_token,
                    )
                except ModelResponseError as exc:
                    logger.warning("checklist item %s, agent turn %d: counted as no: %s", criterion.id, line.turn, exc)
                    said_yes = False
                votes_so_far = yes.setdefault((line.turn, criterion.id), [])
                if said_yes:
                    votes_so_far.append(vote)
                    shown[vote].add(criterion.id)
    results: list[CriterionResult] = []
    for criterion in criteria:
        answers = {
            line.turn: LineVotes(
                yes=tuple(yes[(line.turn, criterion.id)]),
                similarity=sims.get((line.turn, criterion.id)),
                matched=criterion.matches(line.text),
                fits=fits(criterion, line.text),
            )
            for line in lines
            if (line.turn, criterion.id) in yes
        }
        results.append(decide_criterion(criterion, lines, answers, votes=votes, floor=panel.floor, sure=panel.sure))
    return results


@dataclass(frozen=True)
class ReplyScore:
    """What one candidate reply shows of a checklist (the expert's best-of-N search)."""

    shows: frozenset[str]
    """Positive items the reply shows."""
    breaks: frozenset[str]
    """Forbidden items the reply breaks."""
    value: int
    """Must items shown count 2, nice ones 1, a broken forbidden item -4."""


async def score_reply(
    panel: JudgePanel,
    criteria: Sequence[Criterion],
    reply: str,
    *,
    retries: int = 2,
    cancellation_token: CancellationToken | None = None,
) -> ReplyScore:
    """Grade one candidate agent reply on `criteria` (the items still to show, and the forbidden ones).

    The same per-line questions and gate as a verdict, asked about this one line.
    """
    line = AgentMessage(turn=0, text=reply, origin="model")
    results = await grade_checklist(panel, criteria, [line], retries=retries, cancellation_token=cancellation_token)
    by_id = {c.id: c for c in criteria}
    shows = frozenset(r.id for r in results if r.status == "met" and not by_id[r.id].forbidden)
    breaks = frozenset(r.id for r in results if r.status == "not_met" and by_id[r.id].forbidden)
    value = sum(2 if by_id[i].level == "must" else 1 for i in shows) - 4 * len(breaks)
    return ReplyScore(shows=shows, breaks=breaks, value=value)


def combine_scores(
    scores: Sequence[SatisfactionScore], criteria: Sequence[Criterion], results: Sequence[CriterionResult]
) -> Verdict:
    """One verdict from the satisfaction votes (median and majorities) and the checklist results.

    Raises:
        ValueError: `scores` is empty.
    """
    if not scores:
        raise ValueError("no satisfaction score to combine")
    ranked = sorted(scores, key=lambda s: s.satisfaction)
    middle = ranked[(len(ranked) - 1) // 2]  # the lower median: an actual vote, with its rationale and blame

    def majority(flags: Sequence[bool]) -> bool:
        return 2 * sum(flags) > len(flags)

    policy = policy_followed(criteria, results)
    return Verdict(
        rationale=middle.rationale,
        satisfaction=middle.satisfaction,
        resolved=majority([s.resolved for s in scores]),
        policy_followed=policy if policy is not None else majority([s.policy_followed for s in scores]),
        failure_turn=middle.failure_turn,
        customer_in_role=2 * sum(s.customer_in_role for s in scores) >= len(scores),
        criteria=list(results),
        task_success=task_success(criteria, results),
        votes=len(scores),
        satisfaction_votes=[s.satisfaction for s in scores] if len(scores) > 1 else [],
    )
