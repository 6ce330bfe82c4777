"""The report's per-strategy chart: each strategy's outcome where it was shown and where not, with CIs.

In the `library` condition, retrieval shows a strategy in some episodes and not in others; the
evaluation report already measures both sides and their difference
(`coachlab.experiments.effects.StrategyEffect`). The chart draws them on task success, or on items
met where no episode of either side succeeded, or on satisfaction without a checklist, beside the
library minus the baseline on the same seeds where it was shown. matplotlib with the Agg backend
and no pyplot state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from coachlab.experiments.effects import StrategyEffect
from coachlab.experiments.evaluation_report import EvaluationReport
from coachlab.stats import Estimate
from coachlab.viz.layout import MEASURES, Measure
from coachlab.viz.plots import new_figure, whisker

# matplotlib's stubs leave **kwargs unannotated, which strict mode reports on every drawing call.
# pyright: reportUnknownMemberType=false

__all__ = ["STRATEGY_LIMIT", "strategy_chart", "strategy_measure", "strategy_rows"]

STRATEGY_LIMIT = 12
"""At most this many rows in the per-strategy chart (the most shown)."""


_EFFECT_FIELDS: dict[Measure, tuple[str, str, str]] = {
    "task_success": ("success_shown", "success_not_shown", "success_effect"),
    "items_met": ("items_shown", "items_not_shown", "items_effect"),
    "satisfaction": ("satisfaction_shown", "satisfaction_not_shown", "satisfaction_effect"),
}


def strategy_rows(report: EvaluationReport, *, limit: int | None = STRATEGY_LIMIT) -> list[StrategyEffect]:
    """The per-strategy figures the chart shows: strategies shown at least once, most shown first, at most `limit`."""
    effects = [e for s in report.students for e in s.strategies if e.episodes > 0]
    effects.sort(key=lambda e: (-e.episodes, -e.turns, e.strategy_id, e.student))
    return effects if limit is None else effects[:limit]


def strategy_measure(effects: Sequence[StrategyEffect]) -> Measure:
    """The measure of the per-strategy chart: task success, else items met where none succeeded, else satisfaction."""
    if not effects or effects[0].primary == "satisfaction":
        return "satisfaction"
    if any((x := est.mean) is not None and x > 0 for e in effects for est in (e.success_shown, e.success_not_shown)):
        return "task_success"
    if any(e.items_shown.mean is not None or e.items_not_shown.mean is not None for e in effects):
        return "items_met"
    return "task_success"


def _errorbar(
    ax: Axes, y: float, est: Estimate, *, marker: str, color: str, label: str, face: str | None = None
) -> None:
    """A point at the estimate's mean with its CI as a horizontal whisker (nothing when there is no mean).

    `label` names the point's container, for whoever reads the figure back.
    """
    if est.mean is None:
        return
    mean, err = whisker(est)
    ax.errorbar(
        [mean],
        [y],
        xerr=[[err[0]], [err[1]]],
        capsize=3,
        elinewidth=1,
        ls="none",
        marker=marker,
        color=color,
        mfc=face or color,
        ms=6 if marker == "o" else 5,
        label=label,
    )


def strategy_chart(report: EvaluationReport, *, situations: Mapping[str, str] | None = None) -> Figure:
    """Per strategy, the outcome where it was shown and where not (left) and the difference (right), with 95% CIs.

    Rows are the strategies shown at least once in the library condition, most shown first, at most
    `STRATEGY_LIMIT`. The right panel also marks the library minus the baseline on the same seeds
    where the strategy was shown, when the baseline ran (on the primary outcome). `situations` (id ->
    situation) adds the situation under each id.
    """
    every = strategy_rows(report, limit=None)
    effects = every[:STRATEGY_LIMIT]
    measure = strategy_measure(effects)
    shown_f, not_f, effect_f = _EFFECT_FIELDS[measure]
    several = len(report.students) > 1
    fig = new_figure(10.0, max(2.4, 1.4 + 0.5 * len(effects)))
    left, right = fig.subplots(1, 2, sharey=True, width_ratios=[1.1, 1.0])
    names = situations or {}
    labels: list[str] = []
    paired = False
    for k, e in enumerate(effects):
        y = len(effects) - 1 - k
        shown, not_shown, effect = getattr(e, shown_f), getattr(e, not_f), getattr(e, effect_f)
        row = f"{e.strategy_id} ({e.student})"
        _errorbar(left, y + 0.12, shown, marker="o", color="#0969da", label=f"{row}: shown")
        _errorbar(left, y - 0.12, not_shown, marker="o", color="#8c959f", face="white", label=f"{row}: not shown")
        if effect.mean is not None:
            sure = (effect.low is not None and effect.low > 0) or (effect.high is not None and effect.high < 0)
            color = ("#1a9850" if effect.mean > 0 else "#d73027") if sure else "#8c959f"
            mean, err = whisker(effect)
            right.barh(
                [y + 0.12],
                [mean],
                0.3,
                xerr=[[err[0]], [err[1]]],
                color=color,
                capsize=3,
                error_kw={"elinewidth": 1},
                label=f"{row}: effect",
            )
        else:
            right.text(
                0, y + 0.12, "  n/a: shown in every episode or none scored", va="center", fontsize=6.5, color="#57606a"
            )
        if e.vs_baseline is not None and e.vs_baseline.mean is not None and measure == e.primary:
            _errorbar(right, y - 0.15, e.vs_baseline, marker="D", color="#8172b3", label=f"{row}: vs baseline")
            paired = True
        who = f" ({e.student})" if several else ""
        situation = names.get(e.strategy_id, "")
        situation = situation if len(situation) <= 44 else situation[:43] + "\u2026"
        labels.append(f"{e.strategy_id}{who}\n{e.episodes} episodes" + (f": {situation}" if situation else ""))
    left.set_yticks(range(len(effects))[::-1], labels, fontsize=7)
    left.set_ylim(-0.6, max(len(effects), 1) - 0.4)  # room for the points above and below each row
    right.axvline(0, color="#57606a", lw=0.8)
    if measure == "satisfaction":
        left.set_xlim(0.5, 10.5)
        right.set_xlabel("shown minus not shown (points)", fontsize=8)
    else:
        left.set_xlim(-0.03, 1.03)
        right.set_xlim(-1.05, 1.05)
        for ax in (left, right):
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        right.set_xlabel("shown minus not shown (percentage points)", fontsize=8)
    label = MEASURES[measure].label
    left.set_xlabel(label, fontsize=8)
    left.set_title(f"{label}: where shown vs not shown", fontsize=9)
    right.set_title("effect, 95% CI (green/red: CI clear of 0)", fontsize=9)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=7)
    handles = [
        Line2D([], [], marker="o", ls="", color="#0969da", label="episodes where shown"),
        Line2D([], [], marker="o", ls="", color="#8c959f", mfc="white", label="library episodes where not shown"),
    ]
    if paired:
        handles.append(
            Line2D([], [], marker="D", ls="", color="#8172b3", label="library minus baseline where shown (same seeds)")
        )
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    more = f" (the {len(effects)} most shown of {len(every)})" if len(every) > len(effects) else ""
    fig.suptitle(f"Per strategy, in the library condition{more}", fontsize=10)
    return fig
