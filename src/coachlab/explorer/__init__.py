"""The scenario-tree explorer: the tree that grows harder scenarios from the student's failures."""

from coachlab.explorer.tree import NodeStatus, ScenarioTree, TreeNode

__all__ = ["NodeStatus", "ScenarioTree", "TreeNode"]
