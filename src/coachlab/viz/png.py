"""`coachlab tree png`: the scenario tree as a static picture for papers and READMEs.

matplotlib with the Agg backend (no display, no pyplot state) and the same tidy top-down layout,
colours and sizes as the page: fill = the student's task success rate on the node (items met in a
run where no node succeeds, satisfaction in a run with no checklist; `coachlab.viz.measures`), ring
= the teacher's in the same measure, size = student trials, a blue badge = strategies admitted at
the node, edges labelled with the mutation (labels are left out on big trees, where they could not
be read). The colour bar says which measure is shown.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from coachlab.viz.layout import MEASURES, NO_SCORE_COLOR, SATISFACTION_STOPS, Measure, Stops, node_radius, tidy_layout
from coachlab.viz.measures import NodeScores, node_scores, tree_measure
from coachlab.viz.run import RunData

# matplotlib's stubs leave **kwargs unannotated, which strict mode reports on every drawing call.
# pyright: reportUnknownMemberType=false

__all__ = ["measure_cmap", "satisfaction_cmap", "tree_figure", "write_tree_png"]

LABEL_LIMIT = 60
"""Trees with more nodes than this are drawn without text labels."""

_WHY = {
    "task_success": "",
    "items_met": "\n(no node's student succeeded: items met shown)",
    "satisfaction": "\n(no checklist verdicts: satisfaction shown)",
}


def _cmap(name: str, stops: Stops) -> LinearSegmentedColormap:
    lo, hi = stops[0][0], stops[-1][0]
    return LinearSegmentedColormap.from_list(name, [((v - lo) / (hi - lo), c) for v, c in stops])


def satisfaction_cmap() -> LinearSegmentedColormap:
    """The page's satisfaction scale (1-10) as a matplotlib colormap."""
    return _cmap("coachlab_satisfaction", SATISFACTION_STOPS)


def measure_cmap(measure: Measure) -> tuple[LinearSegmentedColormap, Normalize]:
    """A measure's scale (`coachlab.viz.layout.MEASURES`) as a matplotlib colormap and the range it spans."""
    stops = MEASURES[measure].stops
    return _cmap(f"coachlab_{measure}", stops), Normalize(stops[0][0], stops[-1][0])


_UNDER_TEXT = {"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85}
"""A white ground under a node's text, so the edges that pass behind it do not cross it out."""


def _percent(x: float) -> str:
    return f"{100 * x:.0f}%"


def _node_figure(scores: NodeScores, shown: Measure) -> str | None:
    """The student's figure under a node's label: the shown measure (and items met beside task success)."""
    value = scores.student[shown]
    if value is None:
        return None
    if shown == "satisfaction":
        return f"satisfaction {value:.1f}"
    if shown == "items_met":
        return f"items met {_percent(value)}"
    items = scores.student["items_met"]
    return f"success {_percent(value)}" + (f" \u00b7 items {_percent(items)}" if items is not None else "")


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def tree_figure(run: RunData, *, measure: Measure | None = None) -> Figure:
    """Draw the tree of a run on a new figure (not attached to pyplot).

    Args:
        run: The loaded run folder.
        measure: What the fill and the ring show; default the run's first measure
            (`coachlab.viz.measures.tree_measure`: task success, else items met, else satisfaction).
    """
    tree = run.tree
    layout = tidy_layout(tree.graph)
    n = len(tree)
    labels = n <= LABEL_LIMIT
    slot_in = 1.45 if labels else 0.32  # inches per leaf slot
    width = min(max(1.5 + slot_in * max(layout.width, 1), 6.0), 60.0)
    height = min(max(1.8 + 1.25 * (layout.depth + 1), 3.5), 30.0)
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    nodes = list(tree.nodes())
    scores = {r.id: node_scores(run, r) for r in nodes}
    shown: Measure = measure or tree_measure(scores.values())
    scale = MEASURES[shown]
    pos = {k: (x, -y) for k, (x, y) in layout.positions.items()}
    segments: list[list[tuple[float, float]]] = []
    for parent, child in tree.graph.edges:
        (x1, y1), (x2, y2) = pos[parent], pos[child]
        my = (y1 + y2) / 2
        # A cubic Bezier (as on the page), sampled: parent -> (x1, my) -> (x2, my) -> child.
        curve: list[tuple[float, float]] = []
        for i in range(13):
            t = i / 12
            a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
            curve.append((a * x1 + b * x1 + c * x2 + d * x2, a * y1 + b * my + c * my + d * y2))
        segments.append(curve)
        mutation = tree.node(child).mutation
        if labels and mutation:
            lift = 13 + node_radius(run.trials(tree.node(child)))
            ax.annotate(
                _short(mutation, 24),
                (x2, y2),
                xytext=(0, lift),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=6.5,
                color="#57606a",
            )
    ax.add_collection(LineCollection(segments, colors="#8c959f", linewidths=1.0, zorder=1))
    size = 1.0 if labels else 0.45
    xs = [pos[r.id][0] for r in nodes]
    ys = [pos[r.id][1] for r in nodes]
    ax.scatter(
        xs,
        ys,
        s=[(2 * 0.75 * node_radius(run.trials(r)) * size) ** 2 for r in nodes],
        c=[scale.color(scores[r.id].student[shown]) for r in nodes],
        edgecolors=[scale.color(scores[r.id].teacher[shown]) for r in nodes],
        linewidths=2.6 * size,
        zorder=2,
    )
    for r, x, y in zip(nodes, xs, ys, strict=True):
        admitted = run.admitted(r)
        radius_pt = 0.75 * node_radius(run.trials(r)) * size
        if admitted:
            ax.annotate(
                str(admitted),
                (x, y),
                xytext=(radius_pt * 0.8, radius_pt * 0.8),
                textcoords="offset points",
                ha="center",
                va="center",
                fontsize=6 if labels else 4,
                color="white",
                fontweight="bold",
                zorder=4,
                bbox={"boxstyle": "circle,pad=0.2", "fc": "#0969da", "ec": "white", "lw": 0.8},
            )
        if labels:
            parent = next(iter(tree.graph.predecessors(r.id)), None)
            text = r.id if parent is None else r.id[len(parent) :]
            ax.annotate(
                _short(text, 26),
                (x, y),
                xytext=(0, -(radius_pt + 3)),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=7,
                zorder=3,
                bbox=_UNDER_TEXT,
            )
            figure = _node_figure(scores[r.id], shown)
            if figure is not None:
                ax.annotate(
                    figure,
                    (x, y),
                    xytext=(0, -(radius_pt + 12)),
                    textcoords="offset points",
                    ha="center",
                    va="top",
                    fontsize=6,
                    color="#57606a",
                    zorder=3,
                    bbox=_UNDER_TEXT,
                )
    margin = 0.6
    ax.set_xlim(min(xs, default=0) - margin, max(xs, default=0) + margin)
    ax.set_ylim(min(ys, default=0) - 0.45, max(ys, default=0) + 0.45)
    if not nodes:
        ax.text(0.5, 0.5, "empty tree: nothing rolled out yet", ha="center", va="center", transform=ax.transAxes)
    cmap, norm = measure_cmap(shown)
    colorbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.8, pad=0.01, aspect=30)
    if shown != "satisfaction":
        colorbar.ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    why = _WHY[shown] if measure is None else ""
    colorbar.set_label(f"{scale.label}\nfill: student, ring: teacher{why}", fontsize=7.5)
    colorbar.ax.tick_params(labelsize=7)
    handles = [
        Line2D([], [], marker="o", ls="", mfc=NO_SCORE_COLOR, mec=NO_SCORE_COLOR, ms=7, label="no data yet"),
        Line2D([], [], marker="o", ls="", mfc="#0969da", mec="white", ms=7, label="admitted strategies"),
    ]
    ax.legend(
        handles=handles, loc="lower left", fontsize=7, frameon=False, title="size = student trials", title_fontsize=7
    )
    ax.set_title(
        f"{run.name}: scenario tree, {n} nodes, library v{run.library.version}\ncoloured by {scale.label}",
        fontsize=10,
    )
    return fig


def write_tree_png(run: RunData, out: str | Path, *, dpi: int | None = None) -> Path:
    """Write the tree picture as PNG (folders created); returns the path.

    Args:
        run: The loaded run folder.
        out: The PNG file to write.
        dpi: Resolution; default 150 for trees up to `LABEL_LIMIT` nodes, 100 above.
    """
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = tree_figure(run)
    fig.savefig(path, dpi=dpi or (150 if len(run.tree) <= LABEL_LIMIT else 100), facecolor="white")
    return path
