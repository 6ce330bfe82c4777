"""The scenario tree: grows only under the nodes it is asked to, stays a tree, saves and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest

from coachlab.errors import ConfigError
from coachlab.explorer import NodeStatus, ScenarioTree
from coachlab.stats import gap_closed, paired_uplift
from helpers import scenario


def grown() -> ScenarioTree:
    tree = ScenarioTree()
    tree.add_root(scenario(id="late-parcel"))
    tree.add_root(scenario(id="refund"))
    tree.update("late-parcel", status=NodeStatus.FAILED, student_mean=3.5, teacher_mean=8.0)
    tree.update("refund", status=NodeStatus.PASSED, student_mean=8.0)
    angrier = scenario(id="x", issue="The parcel is ten days late and the customer is furious.")
    tree.add_child("late-parcel", angrier, mutation="angrier, less patient", iteration=1)
    tree.add_child("late-parcel", scenario(id="y"), mutation="asks for a refund policy forbids", iteration=1)
    tree.add_child("late-parcel.1", scenario(id="z"), mutation="gives up after one vague answer", iteration=2)
    return tree


def test_children_hang_under_their_parent_with_the_mutation_on_the_edge() -> None:
    tree = grown()
    assert len(tree) == 5 and tree.is_tree()
    assert [c.id for c in tree.children("late-parcel")] == ["late-parcel.1", "late-parcel.2"]
    assert tree.children("refund") == []
    assert tree.graph.edges["late-parcel", "late-parcel.1"]["mutation"] == "angrier, less patient"
    deep = tree.node("late-parcel.1.1")
    assert deep.depth == 2 and deep.scenario.id == "late-parcel-1-1" and deep.mutation.startswith("gives up")
    assert nx.is_arborescence(tree.graph.subgraph(nx.descendants(tree.graph, "late-parcel") | {"late-parcel"}))
    assert [n.id for n in tree.frontier()] == ["late-parcel.1", "late-parcel.2", "late-parcel.1.1"]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    tree = grown()
    path = tmp_path / "tree.json"
    tree.save(path)
    again = ScenarioTree.load(path)
    assert again.to_json() == tree.to_json()
    assert [n.model_dump() for n in again.nodes()] == [n.model_dump() for n in tree.nodes()]
    assert not list(tmp_path.glob("*.tmp"))
    assert json.loads(path.read_text())["edges"][0]["mutation"] == "angrier, less patient"


def test_a_broken_tree_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "tree.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ScenarioTree.load(bad)
    bad.write_text(json.dumps({"nodes": [{"id": "a", "record": {"id": "a"}}], "edges": []}))
    with pytest.raises(ConfigError, match="not a valid scenario tree"):
        ScenarioTree.load(bad)


def test_paired_uplift_and_gap_closed_on_known_numbers() -> None:
    est = paired_uplift([3, 4, 5, 4], [6, 7, 7, 8], seed=0)
    assert est.mean == 3.0 and est.low is not None and est.low > 0
    useless = paired_uplift([5, 6, 4, 5], [6, 5, 4, 5], seed=0)
    assert useless.mean == 0.0 and useless.low is not None and useless.low < 0 < (useless.high or 0)
    with pytest.raises(ValueError, match="differ in length"):
        paired_uplift([1], [1, 2])
    assert gap_closed(baseline=4.0, library=6.0, teacher=8.0) == 0.5
    assert gap_closed(baseline=5.0, library=6.0, teacher=5.0) is None
