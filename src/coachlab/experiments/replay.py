"""`--replay RUN`: run an experiment again from a recorded run folder's response cache alone.

A finished run folder holds its record (resolved.json: each role's model identity) and its response
cache. Replaying builds, for each role, a backend that answers only from that cache as the recorded
model did (`Backend.replaying`): no client is built, no key is read, no model is called. The replay
writes a new run folder (by default `RUN-replay`) that starts with a copy of the record, so the
runners check the experiment against it exactly as `--resume` does, and a run that departs from the
recording stops at its first unrecorded call with `ReplayMiss`, naming the role and the call.
Every number comes out as it was: `results.json` byte for byte.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from coachlab.errors import UsageError
from coachlab.experiments.config import Experiment
from coachlab.experiments.resolved import RESOLVED_FILE, RunRecord, load_record
from coachlab.library import LibraryStore
from coachlab.llm import Backend, ModelIdentity, ResponseCache

__all__ = ["Replay", "open_replay", "replay_folder", "run_folder"]


def replay_folder(source: Path) -> Path:
    """Where a replay of `source` goes by default: a sibling folder named `<source>-replay`."""
    return source.with_name(source.name + "-replay")


def run_folder(experiment: Experiment, *, dry_run: bool, replay: Replay | None) -> Path:
    """The run folder when `--out` is not given.

    The experiment's; `<it>-dry-run` for a dry run (never the folder of a real run); `RUN-replay` for
    a replay of RUN.
    """
    if replay is not None:
        return replay_folder(replay.source)
    root = experiment.output_dir
    return root.with_name(root.name + "-dry-run") if dry_run else root


def open_replay(source: Path | None, *, resume: bool, dry_run: bool) -> Replay | None:
    """The recording `--replay` names, opened (None without the option).

    Raises:
        UsageError: Combined with `--dry-run` or `--resume`, or `source` is no recorded run.
    """
    if source is None:
        return None
    if dry_run:
        raise UsageError("--replay answers from a recorded run; --dry-run from scripts: choose one.")
    if resume:
        raise UsageError("--replay writes a new run folder from the recording; --resume does not apply to it.")
    return Replay(source)


class Replay:
    """A recorded run folder opened for replaying: its record and its read-only response cache.

    Args:
        source: The recorded run folder.

    Raises:
        UsageError: The folder holds no record, or no response cache.
    """

    def __init__(self, source: Path) -> None:
        self.source = source
        record = load_record(source)
        if record is None or not record.runs():
            raise UsageError(
                f"--replay: {source} holds no {RESOLVED_FILE}, so it is not a run folder coachlab recorded "
                "(or it was made by a coachlab that did not record runs); there is nothing to replay."
            )
        self.record: RunRecord = record
        cache = record.runs()[0].experiment.get("cache")
        settings = cache if isinstance(cache, dict) else {}
        if settings.get("enabled") is False:
            raise UsageError(f"--replay: {source} was run with cache.enabled: false; it kept no answers to replay.")
        configured = settings.get("path")
        path = Path(configured) if isinstance(configured, str) and configured else source / "cache.sqlite"
        try:
            self.cache = ResponseCache(path, readonly=True)
        except FileNotFoundError:
            raise UsageError(f"--replay: no response cache at {path}; the recorded run kept no answers.") from None
        self._prepared: Path | None = None

    def identity(self, name: str) -> ModelIdentity:
        """The identity the recorded run gave model entry `name`.

        Raises:
            UsageError: The recording has no such model.
        """
        for run in self.record.runs():
            if name in run.models:
                return run.models[name].identity
        known = sorted({n for run in self.record.runs() for n in run.models})
        raise UsageError(
            f"--replay: {self.source} recorded no model {name!r} (it recorded {', '.join(known) or 'none'}); "
            "replay the command that was run there."
        )

    def backends(self, experiment: Experiment, names: Iterable[str]) -> dict[str, Backend]:
        """A replaying backend per model entry name, with the recorded identity and the file's settings."""
        return {
            name: Backend.replaying(name, experiment.config.models[name], self.identity(name), self.cache)
            for name in dict.fromkeys(names)
        }

    def prepare(self, root: Path, *, overwrite: bool, library: bool) -> None:
        """Make `root` the replay's folder: the recording's record, checklists and judge calibration (and library).

        Args:
            root: The replay's run folder.
            overwrite: Delete what `root` holds first.
            library: Copy the recorded library (an evaluation replays against it).

        Raises:
            UsageError: `root` is the recorded folder, or holds results and `overwrite` is not set.
        """
        if self._prepared == root:
            return
        if root.resolve() == self.source.resolve():
            raise UsageError("--replay writes a new run folder: give --out a folder other than the recorded one.")
        if root.exists() and any(root.iterdir()):
            if not overwrite:
                raise UsageError(f"{root} already exists: pass --overwrite to replace it, or --out another folder.")
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.source / RESOLVED_FILE, root / RESOLVED_FILE)
        for written in ("criteria", "examples"):  # the checklists and example lines the teacher wrote are inputs
            if (self.source / written).is_dir():
                shutil.copytree(self.source / written, root / written)
        if (self.source / "calibration.json").is_file():  # the judge's calibration goes into results.json
            shutil.copyfile(self.source / "calibration.json", root / "calibration.json")
        if library and (self.source / "library").is_dir():
            shutil.copytree(self.source / "library", root / "library")
            self._evaluated_library(root / "library")
        self._prepared = root

    def _evaluated_library(self, folder: Path) -> None:
        """Drop the copied versions written after the one the recorded evaluation ran against.

        They came later (evaluate's retirements, a person's decisions): the replay evaluates what the
        recording evaluated, and retires what it retired.
        """
        stamp = self.source / "evaluation" / "library_version.txt"
        try:
            evaluated = int(stamp.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        store = LibraryStore(folder)
        for version in store.versions():
            if version > evaluated:
                store.path(version).unlink()

    def close(self) -> None:
        """Close the recorded cache."""
        self.cache.close()
