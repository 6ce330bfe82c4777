"""`TrainConfig`: the `train:` section of an experiment file (budgets, thresholds, verification, turn mix)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from coachlab.explorer.verify import VerifyConfig

__all__ = ["TrainConfig"]


class TrainConfig(BaseModel):
    """The `train:` section of an experiment file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenarios: list[str] | None = Field(default=None, description="Root scenario ids; default: all but held-out.")
    student: str = Field(default="student", description="Model entry of the student.")
    teacher: str = Field(default="teacher", description="Model entry of the teacher.")
    trials: int = Field(default=3, ge=2, le=100, description="Student trials per node (and verification arm).")
    success_rate: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="With a checklist: a node fails when the student's task success rate is below this (1.0: every "
        "trial must succeed, like pass^k).",
    )
    threshold: float = Field(
        default=7.0, ge=1, le=10, description="Without a checklist: a node fails when the student's mean is below."
    )
    teacher_margin: float = Field(default=2.0, ge=0, description="...or when the teacher beats it by more than this.")
    barely_margin: float = Field(default=1.0, ge=0, description="Passed nodes this close to the threshold grow too.")
    strategies_per_failure: int = Field(default=2, ge=1, le=5)
    # Two strategies, each a situation, an action and the words to say, run to about 150-250 tokens
    # of JSON: more than a reply-sized limit (160 in the quickstart) holds.
    writer_max_tokens: int | None = Field(
        default=400,
        ge=16,
        description="The teacher's token limit when it writes strategies, refinements and children (None: its "
        "model entry's max_tokens).",
    )
    # Off by default: the missed checklist items already say what the customer needed, and a small
    # teacher (the embedded 1.5B) copies the goal's words into every draft, which the leak check then
    # refuses. Worth turning on for a strong teacher.
    hindsight_goal: bool = Field(
        default=False,
        description="Show the teacher the persona's private goal and satisfied_when when it writes strategies.",
    )
    hindsight_examples: bool = Field(
        default=True,
        description="Show the teacher the checklist's example lines for the items the student missed (what a good "
        "agent says) when it writes strategies.",
    )
    children_per_failure: int = Field(default=2, ge=0, le=5)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    admit_as: Literal["approved", "proposed"] = Field(default="approved", description="Status of verified strategies.")
    merge_duplicates: bool = Field(
        default=True,
        description="Merge an admitted strategy into an approved or proposed one it nearly repeats, keeping both "
        "origins (coachlab.library.duplicates).",
    )
    merge_similarity: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Merge at or above this similarity of situation + guidance; default per retriever: 0.9 cosine "
        "with the retriever's embedder, 0.7 content-word Jaccard with the lexical retriever.",
    )
    max_nodes: int = Field(default=20, ge=1, description="Budget: nodes in the tree.")
    max_depth: int = Field(default=2, ge=0, description="Budget: depth of children.")
    max_iterations: int = Field(default=3, ge=1, description="Budget: passes over the frontier.")
    max_tokens: int | None = Field(default=None, ge=1, description="Budget: tokens spent by all roles.")
    student_share: list[float] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description="Per depth (the last value holds deeper): the share of agent turns the student plays in a "
        "node's rollouts; the teacher plays the rest. E.g. [0.5, 0.75, 1.0] lets the student take over as the "
        "tree deepens.",
    )
    concurrency: int = Field(
        default=4,
        ge=1,
        le=4096,
        description="Episodes (or verification replies) in flight at once: a node's student and teacher rollouts, "
        "and both arms of a verification, run together; each model entry's own `concurrency` still applies. Results "
        "are taken in order, so the tree, the library and the episodes file are those of a run one at a time. With a "
        "model that runs in this process (the embedded ones) train runs one at a time whatever this says: those calls "
        "take turns on the CPU anyway, and episodes in flight together evict each other's KV prefixes.",
    )
    seed: int = 0

    @field_validator("student_share")
    @classmethod
    def _shares(cls, value: list[float]) -> list[float]:
        if any(not 0 < v <= 1 for v in value):
            raise ValueError("every share must be above 0 and at most 1")
        return value

    def share_at(self, depth: int) -> float:
        """The student's share of agent turns at `depth`."""
        return self.student_share[min(depth, len(self.student_share) - 1)]
