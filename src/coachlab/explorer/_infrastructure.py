"""`InfrastructureError`: a node's processing stops at the first episode an infrastructure error ended.

Raised by the trainer's rollouts and by the coach's verifications alike, and caught by the trainer,
which keeps the node with status `error` and learns nothing from it.
"""

from __future__ import annotations

from collections.abc import Sequence

from coachlab.schema import Episode, TerminationReason

__all__ = ["InfrastructureError", "require_complete"]


class InfrastructureError(Exception):
    """An episode of the node being processed ended on an infrastructure error."""


def require_complete(episodes: Sequence[Episode]) -> None:
    """Stop the node's processing at the first episode that ended on an infrastructure error."""
    for episode in episodes:
        if episode.termination is TerminationReason.INFRASTRUCTURE_ERROR:
            raise InfrastructureError(f"episode {episode.id}: {episode.termination_detail}")
