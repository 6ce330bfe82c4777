"""The scenario tree: a networkx arborescence of scenarios grown from the student's failures.

Roots are the experiment's training scenarios; each child is a harder scenario the teacher wrote
from a failure point of its parent (the edge carries the mutation, in one line). Every node keeps
its record (scenario, status, scores, episode ids, strategies, tokens) as the node attribute
`record`, so one saved file drives resume, reports and pictures. The tree is saved as node-link
JSON through a temporary file, fsync and rename, after every change that matters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coachlab.errors import ConfigError, UsageError
from coachlab.schema import RoleUsage, Scenario

__all__ = ["NodeStatus", "ScenarioTree", "TreeNode"]


class NodeStatus(StrEnum):
    """Where a node stands in the train loop."""

    FRONTIER = "frontier"
    PASSED = "passed"
    FAILED = "failed"
    EXPANDED = "expanded"
    ERROR = "error"
    """An infrastructure error stopped its processing: kept, nothing learned from it (`--retry-failed` redoes it)."""


class TreeNode(BaseModel):
    """What the tree knows about one scenario."""

    model_config = ConfigDict(extra="forbid")

    id: str
    scenario: Scenario
    depth: int = Field(ge=0)
    status: NodeStatus = NodeStatus.FRONTIER
    iteration: int = Field(default=0, ge=0, description="The iteration that created the node.")
    mutation: str | None = Field(default=None, description="How it differs from its parent (children only).")
    episode_ids: list[str] = Field(default_factory=list[str])
    student_mean: float | None = Field(default=None, description="Mean satisfaction of the student's scored trials.")
    teacher_mean: float | None = Field(default=None, description="The teacher's satisfaction.")
    student_success: float | None = Field(
        default=None, description="Task success rate of the student's scored trials (None without a checklist)."
    )
    teacher_success: float | None = Field(default=None, description="The teacher's task success (0 or 1).")
    simulator_faults: int = Field(default=0, ge=0, description="Rollouts the simulated customer spoiled (not scored).")
    failure_turn: int | None = None
    strategy_ids: list[str] = Field(default_factory=list[str], description="Strategies this node produced.")
    usage: dict[str, RoleUsage] = Field(default_factory=dict[str, RoleUsage])
    error: str | None = Field(default=None, description="Why processing stopped (status `error` only).")


class ScenarioTree:
    """A directed tree of `TreeNode`s (parent -> child)."""

    def __init__(self) -> None:
        self.graph: nx.DiGraph[str] = nx.DiGraph()

    def __len__(self) -> int:
        return int(self.graph.number_of_nodes())

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.graph

    def node(self, node_id: str) -> TreeNode:
        """The record of a node.

        Raises:
            UsageError: No such node.
        """
        if node_id not in self.graph:
            raise UsageError(f"scenario tree: no node {node_id!r}.")
        record: TreeNode = self.graph.nodes[node_id]["record"]
        return record

    def nodes(self) -> Iterator[TreeNode]:
        """Every node, in insertion order."""
        for n in self.graph.nodes:
            yield self.node(n)

    def add_root(self, scenario: Scenario) -> TreeNode:
        """Add a training scenario as a root (idempotent: an existing root is returned)."""
        if scenario.id in self.graph:
            return self.node(scenario.id)
        record = TreeNode(id=scenario.id, scenario=scenario, depth=0)
        self.graph.add_node(scenario.id, record=record)
        return record

    def add_child(self, parent_id: str, scenario: Scenario, *, mutation: str, iteration: int) -> TreeNode:
        """Add a harder child of `parent_id`; its id is `<parent>.<n>`."""
        parent = self.node(parent_id)
        n = sum(1 for _ in self.graph.successors(parent_id)) + 1
        child_id = f"{parent_id}.{n}"
        child_scenario = scenario.model_copy(update={"id": _slug(child_id)})
        record = TreeNode(
            id=child_id, scenario=child_scenario, depth=parent.depth + 1, iteration=iteration, mutation=mutation
        )
        self.graph.add_node(child_id, record=record)
        self.graph.add_edge(parent_id, child_id, mutation=mutation)
        return record

    def update(self, node_id: str, **changes: Any) -> TreeNode:
        """Replace fields of a node's record (validated)."""
        record = TreeNode.model_validate({**self.node(node_id).model_dump(), **changes})
        self.graph.nodes[node_id]["record"] = record
        return record

    def frontier(self) -> list[TreeNode]:
        """Nodes still to roll out, shallowest first."""
        return sorted((r for r in self.nodes() if r.status is NodeStatus.FRONTIER), key=lambda r: (r.depth, r.id))

    def children(self, node_id: str) -> list[TreeNode]:
        """The children of a node."""
        return [self.node(c) for c in self.graph.successors(node_id)]

    def root_of(self, node_id: str) -> TreeNode:
        """The root (training scenario) a node grew from; a root is its own.

        Raises:
            UsageError: No such node.
        """
        current = self.node(node_id).id
        seen = {current}
        while True:
            parents = [p for p in self.graph.predecessors(current) if p not in seen]
            if not parents:
                return self.node(current)
            current = parents[0]
            seen.add(current)

    def is_tree(self) -> bool:
        """True when the graph is a forest of arborescences (every node has at most one parent, no cycles)."""
        return len(self) == 0 or (
            bool(nx.is_forest(self.graph.to_undirected())) and all(d <= 1 for _, d in self.graph.in_degree())
        )

    def to_json(self) -> dict[str, Any]:
        """Node-link JSON with each node's record inlined."""
        data = cast("dict[str, Any]", nx.node_link_data(self.graph, edges="edges"))  # pyright: ignore[reportUnknownMemberType]
        nodes = cast("list[dict[str, Any]]", data["nodes"])
        for node in nodes:
            record = cast(TreeNode, node["record"])
            node["record"] = record.model_dump(mode="json")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: str = "tree") -> ScenarioTree:
        """Rebuild a tree saved by `to_json`.

        Raises:
            ConfigError: The data is not a valid saved tree.
        """
        try:
            for node in data["nodes"]:
                node["record"] = TreeNode.model_validate(node["record"])
            graph = cast(
                "nx.DiGraph[str]",
                nx.node_link_graph(data, directed=True, edges="edges"),  # pyright: ignore[reportUnknownMemberType]
            )
        except (KeyError, TypeError, ValidationError, nx.NetworkXError) as exc:
            raise ConfigError(f"{source}: not a valid scenario tree ({type(exc).__name__}: {exc}).") from None
        tree = cls()
        tree.graph = graph
        return tree

    def save(self, path: str | Path) -> None:
        """Write the tree atomically (temporary file, fsync, rename)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(self.to_json(), fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)

    @classmethod
    def load(cls, path: str | Path) -> ScenarioTree:
        """Read a tree written by `save`.

        Raises:
            ConfigError: The file is missing or not a valid tree.
        """
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: no scenario tree here.") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON (line {exc.lineno}): {exc.msg}.") from None
        return cls.from_json(data, source=str(p))


def _slug(node_id: str) -> str:
    return node_id.lower().replace(".", "-")
