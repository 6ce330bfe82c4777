"""A train/evaluate run folder: its files, its saved checklists and calibration, and what it was trained on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coachlab.errors import UsageError
from coachlab.experiments.config import Experiment
from coachlab.experiments.criteria import (
    criteria_path,
    ensure_criteria,
    ensure_examples,
    load_criteria,
    with_saved_examples,
)
from coachlab.experiments.effects import only_retired_since
from coachlab.judging.calibration import CalibrationReport
from coachlab.library import LibraryStore
from coachlab.llm import Backend, ResponseCache
from coachlab.schema import Scenario

__all__ = [
    "RunLayout",
    "add_criteria",
    "cache_path",
    "evaluated_version",
    "evaluation_current",
    "evaluation_outdated",
    "load_calibration",
    "open_cache",
    "saved_criteria",
    "train_roots",
]


@dataclass(frozen=True)
class RunLayout:
    """The files of a train/evaluate run folder."""

    root: Path

    @property
    def tree(self) -> Path:
        """The scenario tree (node-link JSON)."""
        return self.root / "tree.json"

    @property
    def library(self) -> Path:
        """The strategy library's versions."""
        return self.root / "library"

    @property
    def train(self) -> Path:
        """Train episodes and transcripts."""
        return self.root / "train"

    @property
    def evaluation(self) -> Path:
        """Evaluation episodes, transcripts and results."""
        return self.root / "evaluation"


def evaluated_version(layout: RunLayout) -> int | None:
    """The library version the run's evaluation was made against, or None when there is none."""
    stamp = layout.evaluation / "library_version.txt"
    try:
        return int(stamp.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def evaluation_current(layout: RunLayout) -> bool:
    """True when the run's evaluation measured the latest library (evaluate's own retirements aside).

    An evaluation that retires harmful strategies writes a new library version; its numbers still
    describe the library it ran, so it is not stale for that.
    """
    was = evaluated_version(layout)
    store = LibraryStore(layout.library)
    if was is None or was not in store.versions():
        return False
    return only_retired_since(store.load(was), store.load())


def evaluation_outdated(layout: RunLayout) -> bool:
    """True when the run folder holds an evaluation of another library than its latest one.

    Training changed the library since (a node redone by `--retry-failed`), so the old numbers
    measure another library: a resumed `distill` evaluates from the start instead of continuing them.
    """
    return evaluated_version(layout) is not None and not evaluation_current(layout)


def cache_path(experiment: Experiment, root: Path) -> Path:
    """The run's response cache file: `cache.path`, else cache.sqlite in the run folder (train and evaluate alike)."""
    configured = experiment.config.cache.path
    return Path(configured) if configured else root / "cache.sqlite"


def open_cache(experiment: Experiment, root: Path) -> ResponseCache | None:
    """The run's response cache (None when `cache.enabled` is false)."""
    return ResponseCache(cache_path(experiment, root)) if experiment.config.cache.enabled else None


def train_roots(experiment: Experiment) -> list[Scenario]:
    """The training scenarios: `train.scenarios`, or every scenario not held out for evaluation."""
    cfg = experiment.config
    if cfg.train is None:
        raise UsageError(f"{experiment.path}: no `train:` section; add one to run coachlab train.")
    held_out: set[str] = set(cfg.evaluate.scenarios) if cfg.evaluate else set()
    ids = cfg.train.scenarios or [s for s in experiment.scenarios if s not in held_out]
    return [experiment.scenarios[s] for s in ids]


def load_calibration(run_dir: Path) -> CalibrationReport | None:
    """The judge's calibration saved in the run folder by `coachlab judge calibrate`, if any (unreadable: None)."""
    path = run_dir / "calibration.json"
    if not path.exists():
        return None
    try:
        return CalibrationReport.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def saved_criteria(experiment: Experiment, scenarios: Sequence[Scenario], run_dir: Path) -> None:
    """Give `scenarios` without a checklist the one this run saved earlier (a read: no teacher is asked).

    A run applies them before it checks its record (resolved.json), so a resumed or replayed run
    compares the checklists it really grades.
    """
    judge = experiment.config.judge
    if judge.checklist == "off":
        return
    for scenario in scenarios:
        scenario = experiment.scenarios[scenario.id]
        path = criteria_path(run_dir, scenario.id)
        if judge.write_criteria and not scenario.success_criteria and path.exists():
            scenario = scenario.model_copy(update={"success_criteria": load_criteria(path)})
        if judge.examples:
            scenario = with_saved_examples(scenario, run_dir)
        experiment.scenarios[scenario.id] = scenario


async def add_criteria(
    experiment: Experiment, scenarios: Sequence[Scenario], backends: dict[str, Backend], run_dir: Path, teacher: str
) -> None:
    """Give `scenarios` without a checklist the run's saved one or the teacher's (see `ensure_criteria`)."""
    judge = experiment.config.judge
    if judge.checklist == "off":
        return
    if judge.write_criteria:
        experiment.scenarios.update(
            await ensure_criteria(scenarios, run_dir=run_dir, backends=backends, teacher=teacher)
        )
    if judge.examples:
        current = [experiment.scenarios[s.id] for s in scenarios]
        experiment.scenarios.update(
            await ensure_examples(current, run_dir=run_dir, backends=backends, teacher=teacher, count=judge.examples)
        )
