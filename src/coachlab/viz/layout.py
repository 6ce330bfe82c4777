"""How a scenario tree is drawn: a top-down tidy layout and the colour and size of each node.

The page and the PNG share these, so a node has the same place, colour and size in both. A node
is coloured by one of three measures (`MEASURES`): the task success rate and the items met, both
on 0..1, and the mean satisfaction on 1..10, each from red through yellow to green, grey where
there is no data. Which measure a run is shown in first is `coachlab.viz.measures.tree_measure`.
The layout needs no Graphviz: leaves take consecutive slots left to right (children in the order the
teacher wrote them, roots in the order of the experiment), each parent sits centred over its
children, and depth is the row. It is linear in the number of nodes and never recurses, so deep or
wide trees of thousands of nodes lay out in milliseconds.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import networkx as nx

__all__ = [
    "MEASURES",
    "NO_SCORE_COLOR",
    "RATE_STOPS",
    "SATISFACTION_STOPS",
    "Measure",
    "MeasureScale",
    "Stops",
    "TreeLayout",
    "node_radius",
    "satisfaction_color",
    "tidy_layout",
]

Measure = Literal["task_success", "items_met", "satisfaction"]
"""What a node's colour shows: the task success rate, the items met, or the mean satisfaction."""

Stops = tuple[tuple[float, str], ...]
"""A colour scale: (value, #rrggbb) pairs, low to high."""

SATISFACTION_STOPS: Stops = ((1.0, "#d73027"), (5.5, "#fee08b"), (10.0, "#1a9850"))
"""Satisfaction (1-10) to colour: red, yellow, green (ColorBrewer RdYlGn ends)."""

RATE_STOPS: Stops = ((0.0, "#d73027"), (0.5, "#fee08b"), (1.0, "#1a9850"))
"""A rate on 0..1 (task success, items met) to colour: the same red, yellow and green."""

NO_SCORE_COLOR = "#bdbdbd"
"""Nodes not rolled out yet (or with no judged episode, or no checklist verdict for a rate)."""


@dataclass(frozen=True)
class MeasureScale:
    """How one measure is named and coloured.

    Attributes:
        key: The measure.
        label: What it is, for a legend or a colour bar ("task success rate").
        stops: Value to colour, low to high.
        low: The low end as a legend writes it ("0%", "1").
        high: The high end as a legend writes it ("100%", "10").
    """

    key: Measure
    label: str
    stops: Stops
    low: str
    high: str

    def color(self, value: float | None) -> str:
        """The colour of `value` on this scale as #rrggbb; grey when there is none."""
        return _scale_color(value, self.stops)


MEASURES: dict[Measure, MeasureScale] = {
    "task_success": MeasureScale("task_success", "task success rate", RATE_STOPS, "0%", "100%"),
    "items_met": MeasureScale("items_met", "items met (mean share per episode)", RATE_STOPS, "0%", "100%"),
    "satisfaction": MeasureScale("satisfaction", "mean satisfaction", SATISFACTION_STOPS, "1", "10"),
}
"""The measures a tree can be coloured by, in the order a reader should look at them."""


@dataclass(frozen=True)
class TreeLayout:
    """Node positions: x in leaf slots (0 .. width - 1), y the depth (0 at the top)."""

    positions: dict[str, tuple[float, float]]
    width: int
    depth: int


def tidy_layout(graph: nx.DiGraph[str]) -> TreeLayout:
    """Lay out a forest top-down, each parent centred over its children.

    Args:
        graph: A forest of arborescences (edges parent -> child).

    Raises:
        ValueError: The graph is not a forest of arborescences (a node with two parents, or a cycle).
    """
    if any(d > 1 for _, d in graph.in_degree()):
        raise ValueError("tidy_layout: a node has more than one parent; expected a scenario tree.")
    roots = [n for n, d in graph.in_degree() if d == 0]
    positions: dict[str, tuple[float, float]] = {}
    next_slot = 0
    deepest = 0
    for root in roots:
        # Iterative post-order: (node, depth, children visited?)
        stack: list[tuple[str, int, bool]] = [(root, 0, False)]
        while stack:
            node, depth, expanded = stack.pop()
            children = list(graph.successors(node))
            if not children:
                positions[node] = (float(next_slot), float(depth))
                next_slot += 1
                deepest = max(deepest, depth)
            elif expanded:
                first, last = positions[children[0]][0], positions[children[-1]][0]
                positions[node] = ((first + last) / 2, float(depth))
            else:
                stack.append((node, depth, True))
                stack.extend((c, depth + 1, False) for c in reversed(children))
    if len(positions) != graph.number_of_nodes():
        raise ValueError("tidy_layout: the graph has a cycle; expected a scenario tree.")
    return TreeLayout(positions=positions, width=next_slot, depth=deepest)


def _scale_color(value: float | None, stops: Stops) -> str:
    """`value` on a piecewise-linear scale (clamped to its ends) as #rrggbb; grey when there is none."""
    if value is None or math.isnan(value):
        return NO_SCORE_COLOR
    x = min(max(value, stops[0][0]), stops[-1][0])
    for (lo, lo_hex), (hi, hi_hex) in itertools.pairwise(stops):
        if x <= hi:
            t = (x - lo) / (hi - lo)
            a, b = _rgb(lo_hex), _rgb(hi_hex)
            return "#" + "".join(f"{round(p + (q - p) * t):02x}" for p, q in zip(a, b, strict=True))
    return stops[-1][1]  # pragma: no cover - x is clamped to the last stop


def satisfaction_color(score: float | None) -> str:
    """The colour of a mean satisfaction (1-10) as #rrggbb; grey when there is none."""
    return _scale_color(score, SATISFACTION_STOPS)


def node_radius(trials: int) -> float:
    """Radius in page pixels: grows with the square root of the student trials (area ~ trials)."""
    return 7.0 + 3.5 * math.sqrt(max(trials, 0))


def _rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
