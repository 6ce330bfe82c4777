"""The scenario-tree explorer: the tree that grows harder scenarios from the student's failures."""

from coachlab.explorer.tree import NodeStatus, ScenarioTree, TreeNode
from coachlab.explorer.verify import VerificationResult, VerifyConfig, verify_guidance

__all__ = ["NodeStatus", "ScenarioTree", "TreeNode", "VerificationResult", "VerifyConfig", "verify_guidance"]
