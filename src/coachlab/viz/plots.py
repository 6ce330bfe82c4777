"""The report's charts: outcomes per condition, the transfer matrix, tree growth, tokens per role.

The evaluation charts lead with the outcomes every decision rests on: task success and items met
per condition (`outcomes_chart`), then satisfaction beside them (`satisfaction_chart`); what each
strategy did where it was shown is `coachlab.viz.strategy_chart`. The control arms (oracle ceiling,
placebo, twin) are drawn where a run has them, hatched and edged so they read as controls, not as
ways to coach; the teacher comes last. matplotlib with the Agg backend and no pyplot state, so
charts can be drawn from any thread and nothing needs a display.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

from coachlab.experiments.config import CONTROLS
from coachlab.experiments.effects import ABLATE_PREFIX
from coachlab.experiments.evaluation_report import ConditionResult, EvaluationReport
from coachlab.explorer.tree import NodeStatus
from coachlab.schema import AuditStatus
from coachlab.stats import Estimate
from coachlab.viz.layout import MEASURES, Measure
from coachlab.viz.png import measure_cmap
from coachlab.viz.run import RoleCost, RunData

# matplotlib's stubs leave **kwargs unannotated, which strict mode reports on every drawing call.
# pyright: reportUnknownMemberType=false

__all__ = [
    "ORACLE",
    "chart_conditions",
    "growth_chart",
    "growth_rows",
    "has_outcome",
    "is_control",
    "new_figure",
    "outcomes_chart",
    "report_measure",
    "satisfaction_chart",
    "tokens_chart",
    "transfer_chart",
    "whisker",
]

_STUDENT_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")
_TEACHER_COLOR = "#3b3b3b"
_CONTROL_HATCH = "///"

ORACLE = "oracle"
"""The control arm drawn as a ceiling: each scenario's own checklist as words to say."""


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches with constrained layout, on an Agg canvas (no pyplot)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def is_control(condition: str) -> bool:
    """Whether a condition is a control arm (oracle ceiling, placebo, twin): a yardstick, not a way to coach."""
    return condition in CONTROLS


def chart_conditions(report: EvaluationReport) -> list[str]:
    """The conditions the per-condition charts show, in order: the arms as they ran, then the controls.

    Leave-one-out conditions (`ablate-<id>`) are left out: the per-strategy table has them. The
    teacher is not among them; the charts draw it last.
    """
    ran = list(
        dict.fromkeys(r.condition for s in report.students for r in s.rows if not r.condition.startswith(ABLATE_PREFIX))
    )
    return [c for c in ran if not is_control(c)] + [c for c in ran if is_control(c)]


def _rows(report: EvaluationReport) -> list[ConditionResult]:
    return [r for s in report.students for r in s.rows] + ([report.teacher] if report.teacher is not None else [])


def has_outcome(report: EvaluationReport, measure: Measure) -> bool:
    """Whether some row of the report has a figure in `measure`."""
    return any(getattr(r, measure).mean is not None for r in _rows(report))


def report_measure(report: EvaluationReport) -> Measure:
    """The measure a one-measure chart of the report shows: task success, else items met, else satisfaction.

    Task success when some row succeeded at all; items met when task success is 0 wherever it was
    measured (one missed item fails it, so items met is what can still move); satisfaction without
    a checklist.
    """
    rows = _rows(report)
    if any((x := r.task_success.mean) is not None and x > 0 for r in rows):
        return "task_success"
    if has_outcome(report, "items_met"):
        return "items_met"
    return "task_success" if has_outcome(report, "task_success") else "satisfaction"


def whisker(est: Estimate) -> tuple[float, list[float]]:
    """An estimate as matplotlib draws it: its mean (0 without one) and [below, above] the CI reaches (never < 0)."""
    mean = est.mean if est.mean is not None else 0.0
    low = mean - est.low if est.low is not None else 0.0
    high = est.high - mean if est.high is not None else 0.0
    return mean, [max(low, 0.0), max(high, 0.0)]


def _tint(hex_color: str, amount: float = 0.62) -> str:
    """`hex_color` mixed with white (amount 1 = white)."""
    h = hex_color.lstrip("#")
    rgb = [int(h[i : i + 2], 16) for i in (0, 2, 4)]
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in rgb)


def _value_text(measure: Measure, value: float) -> str:
    return f"{value:.1f}" if measure == "satisfaction" else f"{100 * value:.0f}%"


def _bar(
    ax: Axes, x: float, width: float, est: Estimate, color: str, *, control: bool, measure: Measure, label: str
) -> None:
    """One bar with its CI whisker and its value written at the foot (above it when the bar is short).

    `label` names the bar's container ("student / condition", "teacher"), for whoever reads the figure back.
    """
    mean, err = whisker(est)
    top = MEASURES[measure].stops[-1][0]
    ax.bar(
        [x],
        [mean],
        width,
        yerr=[[err[0]], [err[1]]],
        capsize=3,
        color=_tint(color) if control else color,
        edgecolor=color if control else "none",
        linewidth=1.2 if control else 0.0,
        hatch=_CONTROL_HATCH if control else None,
        error_kw={"elinewidth": 1},
        label=label,
    )
    inside = mean >= 0.14 * top
    ax.text(
        x,
        0.012 * top if inside else mean + err[1] + 0.015 * top,
        _value_text(measure, mean),
        ha="center",
        va="bottom",
        fontsize=6.5,
        color="white" if inside and not control else "#24292f",
        fontweight="bold",
    )


def _condition_panel(ax: Axes, report: EvaluationReport, conditions: Sequence[str], measure: Measure) -> None:
    """Bars of one measure per condition (one per student), the controls hatched, the teacher last.

    On task success and items met the oracle is also drawn as each student's ceiling (`_ceiling_lines`).
    """
    n = max(len(report.students), 1)
    width = 0.8 / n
    for i, student in enumerate(report.students):
        color = _STUDENT_COLORS[i % len(_STUDENT_COLORS)]
        for j, condition in enumerate(conditions):
            row = next((r for r in student.rows if r.condition == condition), None)
            if row is None or getattr(row, measure).mean is None:
                continue
            x = j - 0.4 + width * (i + 0.5)
            _bar(
                ax,
                x,
                width * 0.92,
                getattr(row, measure),
                color,
                control=is_control(condition),
                measure=measure,
                label=f"{student.student} / {condition}",
            )
    if measure != "satisfaction":  # the oracle says the checklist's words: a ceiling on checklist outcomes only
        _ceiling_lines(ax, report, conditions, measure)
    ticks = [f"{c}\n(control)" if is_control(c) else c for c in conditions]
    teacher = report.teacher
    if teacher is not None and getattr(teacher, measure).mean is not None:
        _bar(
            ax,
            len(conditions),
            0.8 / max(n, 2),
            getattr(teacher, measure),
            _TEACHER_COLOR,
            control=False,
            measure=measure,
            label="teacher",
        )
        ticks.append("teacher")
    ax.set_xticks(range(len(ticks)), ticks, fontsize=8)
    top = MEASURES[measure].stops[-1][0]
    ax.set_ylim(0, top * 1.08)
    if measure != "satisfaction":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.spines[["top", "right"]].set_visible(False)


def _ceiling_lines(ax: Axes, report: EvaluationReport, conditions: Sequence[str], measure: Measure) -> None:
    """The oracle as a ceiling: a dashed line per student at its oracle figure, across the arms up to the oracle.

    Each line is labelled once per height ("oracle ceiling", with the student's name when the
    students' ceilings differ).
    """
    if ORACLE not in conditions:
        return
    right = conditions.index(ORACLE) + 0.45
    ceilings: list[tuple[str, str, float]] = []
    for i, student in enumerate(report.students):
        row = next((r for r in student.rows if r.condition == ORACLE), None)
        mean = getattr(row, measure).mean if row is not None else None
        if mean is not None:
            ceilings.append((student.student, _STUDENT_COLORS[i % len(_STUDENT_COLORS)], mean))
    several = len({round(m, 6) for _, _, m in ceilings}) > 1
    top = MEASURES[measure].stops[-1][0]
    labelled: set[float] = set()
    for name, color, mean in ceilings:
        ax.hlines(
            mean, -0.5, right, colors=color, linestyles="--", linewidth=1.3, zorder=3, gid=f"oracle ceiling: {name}"
        )
        if round(mean, 6) in labelled:
            continue
        labelled.add(round(mean, 6))
        ax.text(
            -0.48,
            mean + 0.012 * top,
            f"oracle ceiling ({name})" if several else "oracle ceiling",
            ha="left",
            va="bottom",
            fontsize=6.5,
            color=color if several else "#24292f",
            zorder=4,
        )


def _legend_handles(report: EvaluationReport, conditions: Sequence[str], measure: Measure) -> list[Patch | Line2D]:
    handles: list[Patch | Line2D] = [
        Patch(color=_STUDENT_COLORS[i % len(_STUDENT_COLORS)], label=s.student) for i, s in enumerate(report.students)
    ]
    teacher = report.teacher
    if teacher is not None and getattr(teacher, measure).mean is not None:
        name = "teacher" if teacher.agent_model == "teacher" else f"teacher ({teacher.agent_model})"
        handles.append(Patch(color=_TEACHER_COLOR, label=name))
    controls = [c for c in conditions if is_control(c)]
    if controls:
        handles.append(
            Patch(facecolor="white", edgecolor="#57606a", hatch=_CONTROL_HATCH, label=f"control: {', '.join(controls)}")
        )
    if ORACLE in conditions and measure != "satisfaction":
        handles.append(Line2D([], [], color="#57606a", ls="--", lw=1.3, label="oracle ceiling (per student)"))
    return handles


def _panel_width(report: EvaluationReport, conditions: Sequence[str]) -> float:
    slots = len(conditions) + (1 if report.teacher is not None else 0)
    return 1.0 + 0.95 * max(slots, 1) * (0.7 + 0.2 * max(len(report.students), 1))


def outcomes_chart(report: EvaluationReport) -> Figure:
    """Task success and items met per condition, side by side: one bar per student with its 95% CI whisker.

    The control arms are hatched with a solid edge and named "(control)"; the teacher comes last.
    """
    conditions = chart_conditions(report)
    panel = _panel_width(report, conditions)
    fig = new_figure(min(max(8.0, 2 * panel), 18.0), 4.0)
    left, right = fig.subplots(1, 2, sharey=True)
    panels: tuple[tuple[Axes, Measure, str], ...] = (
        (left, "task_success", "Task success (primary): all must items met, no policy broken"),
        (right, "items_met", "Items met: share of checklist items met per episode"),
    )
    for ax, measure, title in panels:
        _condition_panel(ax, report, conditions, measure)
        ax.set_title(title, fontsize=9)
    left.set_ylabel("share of scored episodes / items")
    fig.suptitle("Outcomes per condition (whiskers: 95% CI, scenarios then trials)", fontsize=10)
    fig.legend(
        handles=_legend_handles(report, conditions, "items_met"),
        loc="outside lower center",
        ncols=6,
        fontsize=7,
        frameon=False,
    )
    return fig


def satisfaction_chart(report: EvaluationReport, *, threshold: float | None = None) -> Figure:
    """Mean satisfaction per condition (secondary): one bar per student, 95% CI whiskers, controls hatched."""
    conditions = chart_conditions(report)
    fig = new_figure(min(max(5.0, _panel_width(report, conditions)), 12.0), 3.8)
    ax = fig.add_subplot()
    _condition_panel(ax, report, conditions, "satisfaction")
    handles = _legend_handles(report, conditions, "satisfaction")
    if threshold is not None:
        handles.append(ax.axhline(threshold, color="#999999", ls="--", lw=1, label=f"pass threshold ({threshold:g})"))
    ax.set_ylabel("mean satisfaction (1-10)")
    ax.set_title("Satisfaction per condition, beside the outcomes (whiskers: 95% CI)", fontsize=10)
    ax.legend(handles=handles, fontsize=7, loc="upper left", frameon=False, ncols=min(len(handles), 4))
    return fig


def transfer_chart(report: EvaluationReport) -> Figure:
    """The transfer matrix: every student (rows) under every condition (columns), in `report_measure`."""
    conditions = chart_conditions(report)
    students = [s.student for s in report.students]
    measure = report_measure(report)
    values: list[list[float]] = []
    for s in report.students:
        row = {r.condition: getattr(r, measure).mean for r in s.rows}
        values.append([v if (v := row.get(c)) is not None else float("nan") for c in conditions])
    fig = new_figure(max(4.5, 1.8 + 1.3 * len(conditions)), max(2.4, 1.2 + 0.55 * len(students)))
    ax = fig.add_subplot()
    cmap, norm = measure_cmap(measure)
    image = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto")
    ax.set_xticks(range(len(conditions)), [f"{c}\n(control)" if is_control(c) else c for c in conditions])
    ax.set_yticks(range(len(students)), students)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, "n/a" if v != v else _value_text(measure, v), ha="center", va="center", fontsize=9)
    teacher = getattr(report.teacher, measure).mean if report.teacher is not None else None
    title = f"Transfer: {MEASURES[measure].label}, students x conditions"
    ax.set_title(title + (f" (teacher {_value_text(measure, teacher)})" if teacher is not None else ""), fontsize=10)
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    if measure != "satisfaction":
        bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    bar.ax.tick_params(labelsize=7)
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
    fig = new_figure(max(4.8, 1.5 + 0.9 * len(rows)), 3.4)
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
    fig = new_figure(7.0, max(2.2, 0.9 + 0.32 * len(items)))
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
