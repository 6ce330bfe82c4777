"""What a run folder holds, read once for the page, the picture and the report.

The tree page, `tree png` and `report` all start from `load_run`, so they read the same saved
files (tree.json, library/, train/episodes.jsonl, evaluation/results.json, experiment.yaml) and
never disagree. A folder without a tree, or with a file that cannot be read, is a `UsageError`
that names the path; a run with no evaluation yet loads fine (`evaluation` is None).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from coachlab.errors import ConfigError, UsageError
from coachlab.experiments.config import ExperimentConfig
from coachlab.experiments.evaluation_report import EvaluationReport
from coachlab.experiments.resolved import RunRecord, load_record
from coachlab.experiments.results import EpisodeLog
from coachlab.explorer.tree import ScenarioTree, TreeNode
from coachlab.library import LibraryStore, LibraryVersion
from coachlab.schema import AuditStatus, Episode, RoleUsage, Strategy
from coachlab.yamlio import load_yaml, validate_yaml

__all__ = ["DRY_RUN", "NO_EVALUATION", "RoleCost", "RunData", "load_run", "role_costs"]

NO_EVALUATION = "No evaluation yet: run `coachlab evaluate EXPERIMENT.yaml --out {root}` to add the results."
"""What the report says in place of the evaluation when there is none."""
DRY_RUN = (
    "DRY RUN: every model in this run was a scripted stand-in (as coachlab --dry-run makes them). Its numbers check "
    "the pipeline; they measure no model."
)
"""The banner of the report and the tree page of a dry run."""
PARTLY_SCRIPTED = "PARTLY SCRIPTED: {names} answered from scripts, not models; the numbers do not measure them."
"""The banner when only some models were scripted."""


@dataclass(frozen=True)
class RunData:
    """Everything the pictures show, as read from one run folder.

    Attributes:
        root: The run folder.
        tree: The scenario tree (node records are the single source of per-node numbers).
        library: The latest library version (version 0 when training admitted nothing yet).
        episodes: Training episodes by id (train/episodes.jsonl), for transcripts and verdicts.
        evaluation: evaluation/results.json, or None before `coachlab evaluate`.
        experiment: The run's copy of its experiment file, when it is there and valid.
        notes: Things a reader should know (a missing file, an unreadable experiment copy).
        record: resolved.json (what each command ran), when the run has one.
    """

    root: Path
    tree: ScenarioTree
    library: LibraryVersion
    episodes: dict[str, Episode]
    evaluation: EvaluationReport | None
    experiment: ExperimentConfig | None
    notes: list[str] = field(default_factory=lambda: [])
    record: RunRecord | None = None

    @property
    def dry_run(self) -> bool:
        """Some of the run's models were scripted (`--dry-run`): its numbers do not measure them."""
        return self.record is not None and self.record.scripted

    @property
    def banner(self) -> str | None:
        """What the report and the page say first about a run with scripted models (None for a real run)."""
        if self.record is None:
            return None
        scripted, real = self.record.scripted_models()
        if not scripted:
            return None
        return DRY_RUN if not real else PARTLY_SCRIPTED.format(names=", ".join(scripted))

    @property
    def name(self) -> str:
        """The experiment's name (the folder's name when the experiment file is missing)."""
        return self.experiment.name if self.experiment is not None else self.root.name

    def strategies_of(self, node: TreeNode) -> list[Strategy]:
        """The strategies a node produced, as the latest library version has them."""
        known = {s.id: s for s in self.library.strategies}
        return [known[i] for i in node.strategy_ids if i in known]

    def admitted(self, node: TreeNode) -> int:
        """How many of a node's strategies are approved now."""
        return sum(1 for s in self.strategies_of(node) if s.status is AuditStatus.APPROVED)

    def trials(self, node: TreeNode) -> int:
        """Student trials rolled out at a node (its episodes other than the teacher's)."""
        return sum(1 for e in node.episode_ids if self._condition(e) != "teacher")

    def scored_episodes(self, node: TreeNode, *, teacher: bool = False) -> list[Episode]:
        """A node's scored episodes (judged, no simulator fault) in train/episodes.jsonl.

        Args:
            node: The node.
            teacher: The teacher's episodes instead of the student's.
        """
        found = (self.episodes.get(e) for e in node.episode_ids)
        return [e for e in found if e is not None and e.scored and (e.condition == "teacher") == teacher]

    def _condition(self, episode_id: str) -> str:
        ep = self.episodes.get(episode_id)
        if ep is not None:
            return ep.condition
        return "teacher" if "/teacher/" in episode_id else "student"


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder written by `coachlab train` (and maybe `coachlab evaluate`).

    Raises:
        UsageError: The folder does not exist, holds no tree.json, or a file in it is unreadable.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: no such run folder (give the folder `coachlab train` wrote, e.g. runs/<name>).")
    tree_path = root / "tree.json"
    if not tree_path.exists():
        raise UsageError(f"{root}: no scenario tree (tree.json) here; run `coachlab train` first or check the folder.")
    try:
        tree = ScenarioTree.load(tree_path)
        library = LibraryStore(root / "library").load()
    except ConfigError as exc:
        raise UsageError(f"{exc} The run folder {root} cannot be shown.") from None
    notes: list[str] = []
    episodes_path = root / "train" / "episodes.jsonl"
    episodes = EpisodeLog(episodes_path).read()
    if not episodes and len(tree):
        notes.append(f"{episodes_path} is missing or empty: transcripts and verdicts cannot be shown.")
    evaluation = _evaluation(root)
    experiment = _experiment(root, notes)
    try:
        record = load_record(root)
    except UsageError as exc:
        notes.append(str(exc))
        record = None
    return RunData(
        root=root,
        tree=tree,
        library=library,
        episodes=episodes,
        evaluation=evaluation,
        experiment=experiment,
        notes=notes,
        record=record,
    )


def _evaluation(root: Path) -> EvaluationReport | None:
    path = root / "evaluation" / "results.json"
    if not path.exists():
        return None
    try:
        return EvaluationReport.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise UsageError(
            f"{path}: not valid evaluation results ({where}: {first['msg']}); re-run coachlab evaluate."
        ) from None


def _experiment(root: Path, notes: list[str]) -> ExperimentConfig | None:
    path = root / "experiment.yaml"
    if not path.exists():
        notes.append(f"{path} is missing: the configuration summary and prices are not shown.")
        return None
    try:
        return validate_yaml(ExperimentConfig, load_yaml(path, what="experiment file"))
    except ConfigError as exc:
        notes.append(f"The run's experiment file could not be read: {exc}")
        return None


@dataclass(frozen=True)
class RoleCost:
    """Tokens and estimated price of one role on one model, in one phase of the run."""

    phase: str
    role: str
    model: str
    usage: RoleUsage
    cost: float | None

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.usage.total_tokens


def _price(run: RunData, model: str, usage: RoleUsage) -> float | None:
    if run.experiment is None or model not in run.experiment.models:
        return None
    entry = run.experiment.models[model]
    return (
        usage.prompt_tokens * entry.cost_per_1k_prompt + usage.completion_tokens * entry.cost_per_1k_completion
    ) / 1000


def _counts(usage: RoleUsage) -> RoleUsage:
    """`usage` without its seconds: sums of them in another order may differ in the last digit."""
    return usage.model_copy(update={"model_seconds": None})


def role_costs(run: RunData) -> list[RoleCost]:
    """Tokens and cost per (phase, role, model).

    Training: the tree's node ledgers (every call of a node, episodes and teacher work alike); the
    service agent's share is split between the student and the teacher by the episodes it played
    when train/episodes.jsonl accounts for all of it, and shown as one line otherwise (then without
    a price). Evaluation: the rows of results.json.
    """
    cfg = run.experiment
    student = cfg.train.student if cfg is not None and cfg.train is not None else "student"
    teacher = cfg.train.teacher if cfg is not None and cfg.train is not None else "teacher"
    totals: dict[tuple[str, str, str], RoleUsage] = defaultdict(RoleUsage)

    def model_of(role: str) -> str:
        """The model entry behind a ledger role other than the service agent's."""
        if role.startswith(("teacher", "mentor")):  # coaching calls; the mentor plays turns of mixed rollouts
            return teacher
        return next((base for base in ("judge", "customer") if role.startswith(base)), role)

    for node in run.tree.nodes():
        for role, usage in node.usage.items():
            if role != "agent":
                totals[("train", role, model_of(role))] += usage
    agent_by_model: dict[str, RoleUsage] = defaultdict(RoleUsage)
    for ep in run.episodes.values():
        if "agent" in ep.usage:
            agent_by_model[ep.agent_model] += ep.usage["agent"]
    tree_agent = sum((n.usage.get("agent", RoleUsage()) for n in run.tree.nodes()), RoleUsage())
    if agent_by_model and _counts(sum(agent_by_model.values(), RoleUsage())) == _counts(tree_agent):
        for model, usage in agent_by_model.items():
            totals[("train", "agent", model)] += usage
    elif tree_agent.calls:
        totals[("train", "agent", f"{student} + {teacher}")] += tree_agent
    if run.evaluation is not None:
        rows = [r for s in run.evaluation.students for r in s.rows]
        rows += [run.evaluation.teacher] if run.evaluation.teacher is not None else []
        for row in rows:
            for role, usage in row.usage.items():
                totals[("evaluate", role, row.agent_model if role == "agent" else model_of(role))] += usage
    return [
        RoleCost(phase=phase, role=role, model=model, usage=usage, cost=_price(run, model, usage))
        for (phase, role, model), usage in totals.items()
    ]
