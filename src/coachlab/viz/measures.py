"""What a tree node's colour measures: task success first, items met where nothing succeeds, satisfaction last.

Task success (every must item met, no policy item broken) is the outcome every decision of the
loop rests on, so the tree page and the tree picture are coloured by the student's task success
rate on each node: the node record's `student_success`, the number the train loop decided on. One
missed item of five fails task success, so in a run where no node's student ever succeeds, the
pictures are coloured by items met instead: the mean over the node's scored student episodes of
the share of checklist items met (`Verdict.items_met`, the definition the evaluation report
uses). The judge's 1-10 satisfaction is barely related to labelled outcomes (docs/verdicts.md, "How
far to trust the judge"), so it is a secondary view, and the colour only of a run with no checklist
verdicts at all. The teacher ring is in the same measure, and every measure a run has data for
stays available (the page switches between them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from coachlab.explorer.tree import TreeNode
from coachlab.schema import Episode
from coachlab.viz.layout import MEASURES, Measure
from coachlab.viz.run import RunData

__all__ = ["NodeScores", "available_measures", "episode_score", "node_scores", "tree_measure"]


@dataclass(frozen=True)
class NodeScores:
    """A node's student and teacher figures in every measure (None where there is no data).

    Attributes:
        student: Task success rate, items met (0..1) and mean satisfaction (1..10) of the student's
            scored trials.
        teacher: The same for the teacher's episode.
    """

    student: Mapping[Measure, float | None]
    teacher: Mapping[Measure, float | None]


def episode_score(episode: Episode, measure: Measure) -> float | None:
    """One episode's figure in `measure`: 1.0 / 0.0 for task success, the share of items met, satisfaction.

    None when the episode has no verdict, or no checklist verdict for a rate.
    """
    v = episode.verdict
    if v is None:
        return None
    if measure == "task_success":
        return None if v.task_success is None else float(v.task_success)
    if measure == "items_met":
        return v.items_met
    return float(v.satisfaction)


def _items_met(episodes: Iterable[Episode]) -> float | None:
    values = [x for e in episodes if (x := episode_score(e, "items_met")) is not None]
    return sum(values) / len(values) if values else None


def node_scores(run: RunData, node: TreeNode) -> NodeScores:
    """The figures a node can be coloured by.

    Task success and satisfaction are the node record's (what the train loop decided on); items
    met is averaged over the node's scored episodes in train/episodes.jsonl.
    """
    return NodeScores(
        student={
            "task_success": node.student_success,
            "items_met": _items_met(run.scored_episodes(node)),
            "satisfaction": node.student_mean,
        },
        teacher={
            "task_success": node.teacher_success,
            "items_met": _items_met(run.scored_episodes(node, teacher=True)),
            "satisfaction": node.teacher_mean,
        },
    )


def tree_measure(scores: Iterable[NodeScores]) -> Measure:
    """The measure a tree is shown in first: the module's rule.

    Task success when some node's student succeeded; else items met when some node has checklist
    verdicts (task success is 0 wherever it was measured); else task success when it was measured
    with no item decided; else satisfaction (no checklist in the run, or nothing rolled out).
    """
    students = [s.student for s in scores]
    if any((x := s["task_success"]) is not None and x > 0 for s in students):
        return "task_success"
    if any(s["items_met"] is not None for s in students):
        return "items_met"
    if any(s["task_success"] is not None for s in students):
        return "task_success"
    return "satisfaction"


def available_measures(scores: Iterable[NodeScores], *, first: Measure) -> list[Measure]:
    """The measures some node (student or teacher) has data for, in `MEASURES` order; `first` always among them."""
    listed = list(scores)
    return [
        m for m in MEASURES if m == first or any(s.student[m] is not None or s.teacher[m] is not None for s in listed)
    ]
