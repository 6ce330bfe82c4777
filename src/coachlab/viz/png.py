"""`coachlab tree png`: the scenario tree as a static picture for papers and READMEs.

matplotlib with the Agg backend (no display, no pyplot state) and the same tidy top-down layout,
colours and sizes as the page: fill = the student's mean satisfaction, ring = the teacher's, size
= student trials, a blue badge = strategies admitted at the node, edges labelled with the
mutation (labels are left out on big trees, where they could not be read).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from coachlab.viz.layout import SATISFACTION_STOPS, node_radius, satisfaction_color, tidy_layout
from coachlab.viz.run import RunData

# matplotlib's stubs leave **kwargs unannotated, which strict mode reports on every drawing call.
# pyright: reportUnknownMemberType=false

__all__ = ["satisfaction_cmap", "tree_figure", "write_tree_png"]

LABEL_LIMIT = 60
"""Trees with more nodes than this are drawn without text labels."""


def satisfaction_cmap() -> LinearSegmentedColormap:
    """The page's satisfaction scale (1-10) as a matplotlib colormap."""
    lo, hi = SATISFACTION_STOPS[0][0], SATISFACTION_STOPS[-1][0]
    return LinearSegmentedColormap.from_list(
        "coachlab_satisfaction", [((v - lo) / (hi - lo), c) for v, c in SATISFACTION_STOPS]
    )


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def tree_figure(run: RunData) -> Figure:
    """Draw the tree of a run on a new figure (not attached to pyplot)."""
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
            ax.annotate(
                _short(mutation, 24), (x2, y2), xytext=(0, 13 + node_radius(run.trials(tree.node(child)))),
                textcoords="offset points", ha="center", va="bottom", fontsize=6.5, color="#57606a",
            )  # fmt: skip
    ax.add_collection(LineCollection(segments, colors="#8c959f", linewidths=1.0, zorder=1))
    scale = 1.0 if labels else 0.45
    nodes = list(tree.nodes())
    xs = [pos[r.id][0] for r in nodes]
    ys = [pos[r.id][1] for r in nodes]
    sizes = [(2 * 0.75 * node_radius(run.trials(r)) * scale) ** 2 for r in nodes]
    ax.scatter(
        xs, ys, s=sizes, c=[satisfaction_color(r.student_mean) for r in nodes],
        edgecolors=[satisfaction_color(r.teacher_mean) for r in nodes], linewidths=2.6 * scale, zorder=2,
    )  # fmt: skip
    for r, x, y in zip(nodes, xs, ys, strict=True):
        admitted = run.admitted(r)
        radius_pt = 0.75 * node_radius(run.trials(r)) * scale
        if admitted:
            ax.annotate(
                str(admitted), (x, y), xytext=(radius_pt * 0.8, radius_pt * 0.8), textcoords="offset points",
                ha="center", va="center", fontsize=6 if labels else 4, color="white", fontweight="bold", zorder=4,
                bbox={"boxstyle": "circle,pad=0.2", "fc": "#0969da", "ec": "white", "lw": 0.8},
            )  # fmt: skip
        if labels:
            parent = next(iter(tree.graph.predecessors(r.id)), None)
            text = r.id if parent is None else r.id[len(parent) :]
            ax.annotate(
                _short(text, 26), (x, y), xytext=(0, -(radius_pt + 3)), textcoords="offset points",
                ha="center", va="top", fontsize=7, zorder=3,
            )  # fmt: skip
    margin = 0.6
    ax.set_xlim(min(xs, default=0) - margin, max(xs, default=0) + margin)
    ax.set_ylim(min(ys, default=0) - 0.45, max(ys, default=0) + 0.45)
    if not nodes:
        ax.text(0.5, 0.5, "empty tree: nothing rolled out yet", ha="center", va="center", transform=ax.transAxes)
    colorbar = fig.colorbar(
        ScalarMappable(norm=Normalize(1, 10), cmap=satisfaction_cmap()), ax=ax, shrink=0.7, pad=0.01, aspect=30
    )
    colorbar.set_label("mean satisfaction (fill: student, ring: teacher)", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    handles = [
        Line2D([], [], marker="o", ls="", mfc="#bdbdbd", mec="#bdbdbd", ms=7, label="not rolled out"),
        Line2D([], [], marker="o", ls="", mfc="#0969da", mec="white", ms=7, label="admitted strategies"),
    ]
    ax.legend(
        handles=handles, loc="lower left", fontsize=7, frameon=False, title="size = student trials", title_fontsize=7
    )
    ax.set_title(f"{run.name}: scenario tree, {n} nodes, library v{run.library.version}", fontsize=10)
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
