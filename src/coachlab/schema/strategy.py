"""Strategy: teacher-written guidance with its provenance, evidence and audit trail."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from coachlab.schema._base import Frozen, Slug, Text

__all__ = ["Attempt", "AuditEntry", "AuditStatus", "Evidence", "Guidance", "MergedOrigin", "Provenance", "Strategy"]


class AuditStatus(StrEnum):
    """Where a strategy stands with the people who ship it.

    `retired`: held-out evaluation measured it doing harm (`coachlab evaluate`); like `rejected`, it
    is kept with its evidence and never served, and a person can approve it again.
    """

    PROPOSED = "proposed"
    APPROVED = "approved"
    REJECTED = "rejected"
    RETIRED = "retired"


class AuditEntry(Frozen):
    """One change of audit status: who, when, why."""

    status: AuditStatus
    by: Text = Field(description="Who decided: a person's name, or 'train' for automatic admission.")
    at: datetime
    why: str = ""


class Provenance(Frozen):
    """Where a strategy came from."""

    scenario_id: str
    node_id: str | None = Field(default=None, description="The scenario-tree node that produced it.")
    episode_id: str | None = Field(default=None, description="The failure transcript it was written from.")
    failure_turn: int | None = None
    teacher_model: str = Field(description="The model entry (identity) of the teacher that wrote it.")
    iteration: int = Field(default=0, ge=0, description="Training iteration.")


class Evidence(Frozen):
    """What verification measured: the student with and without the strategy on the same scenario."""

    trials: int = Field(ge=0)
    mean_without: float | None = None
    mean_with: float | None = None
    uplift_low: float | None = Field(default=None, description="Lower bound of the uplift's confidence interval.")
    uplift_high: float | None = None
    criterion: str = Field(default="uplift", description="'uplift', 'imitation' or 'checklist'.")
    wins: int | None = Field(default=None, description="Paired trials better with the strategy.")
    losses: int | None = Field(default=None, description="Paired trials worse with it.")
    ties: int | None = Field(default=None, description="Paired trials alike.")
    p_value: float | None = Field(default=None, description="Exact one-sided paired test p-value.")
    success_without: float | None = Field(default=None, description="Task success rate without the strategy.")
    success_with: float | None = Field(default=None, description="Task success rate with it.")
    policy_breaks_without: int | None = Field(default=None, description="Episodes that broke a policy item, without.")
    policy_breaks_with: int | None = Field(default=None, description="The same, with the strategy.")
    preferred_without: float | None = Field(
        default=None, description="Imitation: share of the student's replies the judge rated at least the teacher's."
    )
    preferred_with: float | None = Field(default=None, description="The same share with the strategy in the prompt.")
    note: str = ""

    @property
    def uplift(self) -> float | None:
        """Mean satisfaction with the strategy minus without it."""
        if self.mean_with is None or self.mean_without is None:
            return None
        return self.mean_with - self.mean_without

    @property
    def gain(self) -> float:
        """How much the strategy helped by its criterion (satisfaction points, or share of teacher-level replies)."""
        if self.uplift is not None:
            return self.uplift
        if self.preferred_with is not None and self.preferred_without is not None:
            return self.preferred_with - self.preferred_without
        return 0.0

    @property
    def summary(self) -> str:
        """One line for tables: the measured effect and its trials."""
        if self.p_value is not None and self.wins is not None:
            test = f"{self.wins} better / {self.losses} worse / {self.ties} tied, p={self.p_value:.3f}"
            if self.success_with is not None and self.success_without is not None:
                return f"task success {self.success_with:.0%} vs {self.success_without:.0%} without; {test}"
            return f"{self.criterion}: {test}"
        if self.criterion == "imitation":
            if self.preferred_with is None:
                return f"imitation: not judged ({self.trials} trials)"
            without = "n/a" if self.preferred_without is None else f"{self.preferred_without:.0%}"
            return f"teacher-level replies {self.preferred_with:.0%} vs {without} without ({self.trials} trials)"
        if self.uplift is None:
            return f"uplift n/a ({self.trials} trials)"
        return f"uplift {self.uplift:+.2f} [CI {self.uplift_low}, {self.uplift_high}] ({self.trials} trials)"


class Attempt(Frozen):
    """An earlier version of a strategy (before the teacher refined it) with what verification measured."""

    situation: str
    guidance: str
    evidence: Evidence | None = None


class MergedOrigin(Frozen):
    """A near-duplicate candidate that train folded into an existing strategy instead of adding it."""

    candidate_id: str = Field(description="The id the candidate would have had.")
    situation: str = Field(description="The candidate's own text (the strategy keeps its existing text).")
    guidance: str
    similarity: float = Field(description="Its similarity to the strategy it was merged into (see merge_similarity).")
    provenance: Provenance | None = None
    evidence: Evidence | None = None


class Strategy(Frozen):
    """A situation ("when the customer ...") and the guidance that helps there."""

    id: Slug
    situation: Text = Field(description="When it applies, e.g. 'When the customer repeats a complaint'.")
    guidance: Text = Field(description="What to do, short and general enough to reuse.")
    provenance: Provenance | None = None
    evidence: Evidence | None = None
    audit: list[AuditEntry] = Field(default_factory=list[AuditEntry], description="Status changes, oldest first.")
    attempts: list[Attempt] = Field(
        default_factory=list[Attempt],
        description="Earlier versions (refinement rounds, text an edit replaced) with their evidence, oldest first.",
    )
    merged: list[MergedOrigin] = Field(
        default_factory=list[MergedOrigin],
        description="Near-duplicates from other failures merged into this strategy: their origins and evidence.",
    )

    @property
    def status(self) -> AuditStatus:
        """The latest audit status (proposed when never audited)."""
        return self.audit[-1].status if self.audit else AuditStatus.PROPOSED

    def with_status(self, status: AuditStatus, *, by: str, at: datetime, why: str = "") -> Strategy:
        """A copy with one more audit entry."""
        return self.model_copy(update={"audit": [*self.audit, AuditEntry(status=status, by=by, at=at, why=why)]})

    def as_guidance(self, score: float = 0.0) -> Guidance:
        """The strategy as the service agent reads it."""
        return Guidance(id=self.id, situation=self.situation, guidance=self.guidance, score=score)


class Guidance(Frozen):
    """One strategy as the service agent reads it in its prompt, with its retrieval score."""

    id: str
    situation: str
    guidance: str
    score: float = 0.0
