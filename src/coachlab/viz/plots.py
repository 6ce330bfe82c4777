"""The report's charts: satisfaction per condition, the transfer matrix, tree growth, tokens per role.

matplotlib with the Agg backend and no pyplot state, so charts can be drawn from any thread and
nothing needs a display.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from coachlab.experiments.evaluation_report import ConditionResult, EvaluationReport
from coachlab.explorer.tree import NodeStatus
from coachlab.schema import AuditStatus
from coachlab.viz.png import satisfaction_cmap
from coachlab.viz.run import RoleCost, RunData

# matplotlib's stubs leave **kwargs unannotated, which strict mode reports on every drawing call.
# pyright: reportUnknownMemberType=false

__all__ = ["growth_chart", "growth_rows", "satisfaction_chart", "tokens_chart", "transfer_chart"]

_STUDENT_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")
_TEACHER_COLOR = "#3b3b3b"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _whiskers(rows: Sequence[ConditionResult]) -> tuple[list[float], list[list[float]]]:
    means = [r.satisfaction.mean if r.satisfaction.mean is not None else 0.0 for r in rows]
    low = [m - r.satisfaction.low if r.satisfaction.low is not None else 0.0 for r, m in zip(rows, means, strict=True)]
    high = [
        r.satisfaction.high - m if r.satisfaction.high is not None else 0.0 for r, m in zip(rows, means, strict=True)
    ]
    return means, [low, high]


def satisfaction_chart(report: EvaluationReport, *, threshold: float | None = None) -> Figure:
    """Mean satisfaction per condition, one bar per student, 95% bootstrap CI whiskers; the teacher last."""
    conditions = list(dict.fromkeys(r.condition for s in report.students for r in s.rows))
    n = max(len(report.students), 1)
    fig = _figure(max(5.0, 1.2 + 1.1 * (len(conditions) + 1) * (0.6 + 0.25 * n)), 3.8)
    ax = fig.add_subplot()
    width = 0.8 / n
    for i, student in enumerate(report.students):
        rows = [next((r for r in student.rows if r.condition == c), None) for c in conditions]
        present = [(j, r) for j, r in enumerate(rows) if r is not None and r.satisfaction.mean is not None]
        if not present:
            continue
        xs = [j - 0.4 + width * (i + 0.5) for j, _ in present]
        means, err = _whiskers([r for _, r in present])
        ax.bar(xs, means, width * 0.92, yerr=err, capsize=3, color=_STUDENT_COLORS[i % len(_STUDENT_COLORS)],
               label=student.student, error_kw={"elinewidth": 1})  # fmt: skip
        for x, m in zip(xs, means, strict=True):
            ax.text(x, 0.15, f"{m:.1f}", ha="center", va="bottom", fontsize=7, color="white", fontweight="bold")
    ticks = list(conditions)
    teacher = report.teacher
    if teacher is not None and teacher.satisfaction.mean is not None:
        x = len(conditions)
        means, err = _whiskers([teacher])
        ax.bar([x], means, 0.8 / max(n, 2), yerr=err, capsize=3, color=_TEACHER_COLOR,
               label="teacher" if teacher.agent_model == "teacher" else f"teacher ({teacher.agent_model})",
               error_kw={"elinewidth": 1})  # fmt: skip
        ax.text(x, 0.15, f"{means[0]:.1f}", ha="center", va="bottom", fontsize=7, color="white", fontweight="bold")
        ticks.append("teacher")
    if threshold is not None:
        ax.axhline(threshold, color="#999999", ls="--", lw=1, label=f"pass threshold ({threshold:g})")
    ax.set_xticks(range(len(ticks)), ticks)
    ax.set_ylim(0, 10.5)
    ax.set_ylabel("mean satisfaction (1-10)")
    ax.set_title("Satisfaction per condition (whiskers: 95% bootstrap CI)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", frameon=False, ncols=min(n + 2, 4))
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def transfer_chart(report: EvaluationReport) -> Figure:
    """The transfer matrix: mean satisfaction of every student (rows) under every condition (columns)."""
    conditions = list(dict.fromkeys(r.condition for s in report.students for r in s.rows))
    students = [s.student for s in report.students]
    values: list[list[float]] = []
    for s in report.students:
        row = {r.condition: r.satisfaction.mean for r in s.rows}
        values.append([v if (v := row.get(c)) is not None else float("nan") for c in conditions])
    fig = _figure(max(4.5, 1.8 + 1.3 * len(conditions)), max(2.4, 1.2 + 0.55 * len(students)))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap=satisfaction_cmap(), vmin=1, vmax=10, aspect="auto")
    ax.set_xticks(range(len(conditions)), conditions)
    ax.set_yticks(range(len(students)), students)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, "n/a" if v != v else f"{v:.2f}", ha="center", va="center", fontsize=9)
    ceiling = report.teacher.satisfaction.mean if report.teacher is not None else None
    title = "Transfer: mean satisfaction, students x conditions"
    ax.set_title(title + (f" (teacher {ceiling:.2f})" if ceiling is not None else ""), fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.9).ax.tick_params(labelsize=7)
    return fig


def growth_rows(run: RunData) -> list[dict[str, int]]:
    """Per training iteration: nodes created by status, strategies admitted/rejected, cumulative nodes."""
    by_iteration: dict[int, Counter[str]] = {}
    for node in run.tree.nodes():
        by_iteration.setdefault(node.iteration, Counter())[node.status.value] += 1
    strategies: dict[int, Counter[str]] = {}
    node_ids = {n.id for n in run.tree.nodes()}
    for s in run.library.strategies:
        if s.provenance is not None and (s.provenance.node_id is None or s.provenance.node_id in node_ids):
            strategies.setdefault(s.provenance.iteration, Counter())[s.status.value] += 1
    rows: list[dict[str, int]] = []
    total = 0
    for it in sorted(set(by_iteration) | set(strategies)):
        counts = by_iteration.get(it, Counter())
        total += sum(counts.values())
        st = strategies.get(it, Counter())
        rows.append(
            {
                "iteration": it,
                "nodes": sum(counts.values()),
                **{status.value: counts[status.value] for status in NodeStatus},
                "admitted": st[AuditStatus.APPROVED.value],
                "proposed": st[AuditStatus.PROPOSED.value],
                "rejected": st[AuditStatus.REJECTED.value],
                "cumulative": total,
            }
        )
    return rows


_STATUS_COLORS = {
    "expanded": "#54aeff",
    "failed": "#ff8182",
    "passed": "#4ac26b",
    "frontier": "#d4a72c",
    "error": "#8c959f",
}


def growth_chart(run: RunData) -> Figure:
    """Tree growth: nodes created per iteration by their status now, the cumulative size, strategies admitted."""
    rows = growth_rows(run)
    fig = _figure(max(4.8, 1.5 + 0.9 * len(rows)), 3.4)
    ax = fig.add_subplot()
    xs = [r["iteration"] for r in rows]
    bottom = [0.0] * len(rows)
    for status in NodeStatus:
        heights = [float(r[status.value]) for r in rows]
        if any(heights):
            ax.bar(xs, heights, 0.6, bottom=bottom, color=_STATUS_COLORS[status.value], label=f"{status.value} nodes")
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.plot(xs, [r["cumulative"] for r in rows], "o-", color="#24292f", lw=1.5, label="nodes in the tree")
    ax.plot(xs, [r["admitted"] for r in rows], "s--", color="#0969da", lw=1.2, label="strategies admitted")
    ax.set_xticks(xs)
    ax.set_xlabel("iteration")
    ax.set_ylabel("count")
    ax.set_title("Tree growth per iteration", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def tokens_chart(costs: Sequence[RoleCost]) -> Figure:
    """Tokens per phase, role and model (horizontal bars: prompt and completion)."""
    items = sorted(costs, key=lambda c: (c.phase, -c.tokens))
    fig = _figure(7.0, max(2.2, 0.9 + 0.32 * len(items)))
    ax = fig.add_subplot()
    labels = [f"{c.phase}: {c.role} ({c.model})" for c in items]
    ys = list(range(len(items)))[::-1]
    prompt = [c.usage.prompt_tokens for c in items]
    completion = [c.usage.completion_tokens for c in items]
    ax.barh(ys, prompt, color="#4c72b0", label="prompt tokens")
    ax.barh(ys, completion, left=prompt, color="#dd8452", label="completion tokens")
    ax.set_yticks(ys, labels, fontsize=7)
    ax.set_xlabel("tokens")
    ax.set_title("Tokens per role", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return fig
