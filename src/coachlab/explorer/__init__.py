"""The scenario-tree explorer: the tree that grows harder scenarios from the student's failures.

The map of the packages is docs/architecture.md.
"""

from coachlab.explorer.tree import NodeStatus, ScenarioTree, TreeNode
from coachlab.explorer.verify import (
    ImitationArm,
    VerificationResult,
    VerifyConfig,
    imitation_arm,
    verify_guidance,
    verify_imitation,
)

__all__ = [
    "ImitationArm",
    "NodeStatus",
    "ScenarioTree",
    "TreeNode",
    "VerificationResult",
    "VerifyConfig",
    "imitation_arm",
    "verify_guidance",
    "verify_imitation",
]
