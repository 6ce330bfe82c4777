"""The strategy library on disk: one JSON file per version, written atomically, never rewritten.

A library folder holds `v0001.json`, `v0002.json`, ...; every change (new strategies, an audit
decision, an edit) writes the next version, so any earlier state can be read back, compared
(`diff`) and audited. Writes go through a temporary file, fsync and an exclusive link, so a crash
leaves either the old latest version or the new one, and two writers never share a number.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coachlab.errors import ConfigError, UsageError
from coachlab.schema import Attempt, AuditStatus, Strategy

__all__ = ["LibraryDiff", "LibraryStore", "LibraryVersion"]

_NAME = re.compile(r"^v(\d{4,})\.json$")


class LibraryVersion(BaseModel):
    """One version of the library."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=0, description="1, 2, ...; 0 is the empty library before any commit.")
    created_at: datetime
    note: str = ""
    strategies: list[Strategy] = Field(default_factory=list[Strategy])

    def get(self, strategy_id: str) -> Strategy:
        """The strategy with this id.

        Raises:
            UsageError: No such strategy in this version.
        """
        for s in self.strategies:
            if s.id == strategy_id:
                return s
        known = ", ".join(s.id for s in self.strategies) or "none"
        raise UsageError(f"library v{self.version}: no strategy {strategy_id!r} (known: {known}).")

    def with_status(self, status: AuditStatus) -> list[Strategy]:
        """The strategies whose latest audit status is `status`."""
        return [s for s in self.strategies if s.status is status]


class LibraryDiff(BaseModel):
    """What changed between two versions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    added: list[str]
    removed: list[str]
    changed: list[str]


class LibraryStore:
    """A folder of library versions.

    Args:
        root: The library folder (created on first write).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self) -> list[int]:
        """Version numbers on disk, oldest first."""
        if not self.root.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.root.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, version: int) -> Path:
        """The file of a version."""
        return self.root / f"v{version:04d}.json"

    def load(self, version: int | None = None) -> LibraryVersion:
        """A version (the latest when omitted; an empty version 0 when there is none).

        Raises:
            UsageError: The version does not exist.
            ConfigError: The file is not a valid library version.
        """
        have = self.versions()
        if version is None:
            if not have:
                return LibraryVersion(version=0, created_at=datetime.fromtimestamp(0, UTC), note="empty")
            version = have[-1]
        path = self.path(version)
        if not path.exists():
            raise UsageError(
                f"{self.root}: no library version {version} (have: {', '.join(map(str, have)) or 'none'})."
            )
        try:
            return LibraryVersion.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(
                f"{path}: not a valid library version ({'.'.join(map(str, first['loc']))}: {first['msg']})."
            ) from None

    def commit(self, strategies: Iterable[Strategy], *, note: str) -> LibraryVersion:
        """Write the next version holding exactly `strategies`.

        Raises:
            UsageError: Two strategies share an id.
        """
        items = list(strategies)
        ids = [s.id for s in items]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise UsageError(f"library: strategy ids must be unique; repeated: {', '.join(dupes)}.")
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            have = self.versions()
            number = (have[-1] if have else 0) + 1
            version = LibraryVersion(version=number, created_at=datetime.now(UTC), note=note, strategies=items)
            tmp = self.root / f".v{number:04d}.{os.getpid()}.tmp"
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write(version.model_dump_json(indent=2))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, self.path(number))  # fails if another writer took this number
            except FileExistsError:
                continue
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(self.root)
            return version

    def add(self, strategies: Iterable[Strategy], *, note: str) -> LibraryVersion:
        """A new version with `strategies` added to (or replacing same-id entries of) the latest.

        When every strategy is already there as it is (audit times aside: a resumed run redoing
        its last step), no version is written and the latest is returned.
        """
        current = self.load()
        latest = {s.id: s for s in current.strategies}
        incoming = list(strategies)
        if current.version and all(s.id in latest and _same(latest[s.id], s) for s in incoming):
            return current
        for s in incoming:
            latest[s.id] = s
        return self.commit(latest.values(), note=note)

    def set_status(self, strategy_id: str, status: AuditStatus, *, by: str, why: str = "") -> LibraryVersion:
        """A new version in which one strategy's audit status changed."""
        return self.set_statuses({strategy_id: why}, status, by=by, note=f"{status.value} {strategy_id} by {by}")

    def set_statuses(self, decisions: Mapping[str, str], status: AuditStatus, *, by: str, note: str) -> LibraryVersion:
        """One new version in which every strategy of `decisions` (id -> why) gets `status`.

        Raises:
            UsageError: An id is not in the latest version.
        """
        latest = self.load()
        for strategy_id in decisions:
            latest.get(strategy_id)
        now = datetime.now(UTC)
        return self.commit(
            [
                s.with_status(status, by=by, at=now, why=decisions[s.id]) if s.id in decisions else s
                for s in latest.strategies
            ],
            note=note,
        )

    def edit(
        self, strategy_id: str, *, by: str, situation: str | None = None, guidance: str | None = None
    ) -> LibraryVersion:
        """A new version with a strategy's text changed; it goes back to `proposed` for review.

        The evidence measured the old text, so it moves with that text into `attempts`: the edited
        strategy has none until `coachlab library verify` measures the new text.
        """
        latest = self.load()
        target = latest.get(strategy_id)
        changes: dict[str, object] = {
            k: v for k, v in (("situation", situation), ("guidance", guidance)) if v is not None
        }
        if not changes:
            raise UsageError("edit: give --situation and/or --guidance.")
        old = Attempt(situation=target.situation, guidance=target.guidance, evidence=target.evidence)
        changes |= {"evidence": None, "attempts": [*target.attempts, old]}
        edited = Strategy.model_validate({**target.model_dump(), **changes})
        edited = edited.with_status(AuditStatus.PROPOSED, by=by, at=datetime.now(UTC), why="edited")
        return self.commit(
            [edited if s.id == strategy_id else s for s in latest.strategies], note=f"edit {strategy_id} by {by}"
        )

    def diff(self, old: int, new: int | None = None) -> LibraryDiff:
        """Strategies added, removed and changed between two versions."""
        a = {s.id: s for s in self.load(old).strategies}
        b = {s.id: s for s in self.load(new).strategies}
        return LibraryDiff(
            added=sorted(set(b) - set(a)),
            removed=sorted(set(a) - set(b)),
            changed=sorted(i for i in set(a) & set(b) if a[i] != b[i]),
        )


def _same(a: Strategy, b: Strategy) -> bool:
    """Equal but for when each audit entry was made."""
    exclude = {"audit": {"__all__": {"at"}}}
    return a.model_dump(exclude=exclude) == b.model_dump(exclude=exclude)  # type: ignore[arg-type]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
