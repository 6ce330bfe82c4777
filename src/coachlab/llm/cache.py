"""A response cache for model calls, keyed so that roles and trials never share answers.

AutoGen's `ChatCompletionCache` keys only on the messages: a shared cache would hand one role's
answer to another and make repeated trials identical. Here the key also holds the role, the
backend identity (`ModelIdentity.key`: provider, model, the endpoint with its variables expanded,
every sampling setting; never a key), the seed, the trial, the full prompt and the output schema,
so an exact repeat hits and nothing else does. The store is one SQLite file, safe to reuse across
runs and resumes; `--replay` opens a recorded run's file read-only. An answer is kept with what it
cost the engine (a `MeteredResult`), so a cached or replayed call counts what it cost when made.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autogen_core.models import CreateResult, LLMMessage
from pydantic import BaseModel

from coachlab.llm.metering import MeteredResult

__all__ = ["CacheKey", "ResponseCache"]


@dataclass(frozen=True)
class CacheKey:
    """Everything that decides a model's answer, apart from chance.

    `model` is the backend's `ModelIdentity.key()`: every setting of the backend that can change an
    answer (the endpoint expanded, sampling settings), and no secret.
    """

    role: str
    model: str
    temperature: float | None
    seed: int | None
    trial: int | None
    messages: Sequence[LLMMessage]
    json_output: bool | type[BaseModel] | None = None
    extra: Mapping[str, Any] | None = None

    def digest(self) -> str:
        """A stable SHA-256 of the key's content."""
        schema: Any = self.json_output.model_json_schema() if isinstance(self.json_output, type) else self.json_output
        payload = {
            "role": self.role,
            "model": self.model,
            "temperature": self.temperature,
            "seed": self.seed,
            "trial": self.trial,
            "messages": [m.model_dump(mode="json") for m in self.messages],
            "json_output": schema,
            "extra": dict(self.extra or {}),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """A persistent map from `CacheKey` to `CreateResult`.

    Args:
        path: The SQLite file (created with its folder if missing, unless `readonly`).
        readonly: Open an existing file for reading only (a replay); `put` then stores nothing.

    Raises:
        FileNotFoundError: `readonly` and the file does not exist.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(self.path)
            self._db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        self.hits = 0
        self.misses = 0
        self._stored: set[str] = set()

    def get(self, key: CacheKey) -> CreateResult | None:
        """The stored result for `key`, or None.

        The result is marked `cached=True` when it was stored before this cache was opened: an
        answer an earlier run (or the run before its interruption) paid for. An answer stored since,
        by an identical call of this run, is not marked: whether two identical calls overlap is a
        matter of timing, and counts must not be. A read-only cache (a replay) marks nothing, since
        its answers are the recorded run's own, so a replay counts calls as that run did.
        """
        digest = key.digest()
        row = self._db.execute("SELECT result FROM responses WHERE key = ?", (digest,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        result = MeteredResult.model_validate_json(row[0])  # None costs in an answer stored before they were kept
        cached = not self.readonly and digest not in self._stored
        return result.model_copy(update={"cached": cached})

    def put(self, key: CacheKey, result: CreateResult) -> CreateResult:
        """Store `result` under `key` and return the answer the cache holds for it.

        The first answer stored wins: when two identical calls overlap, both reach the model, and the
        one that stores second gets the first one's answer back, to use and count, as a replay or a
        resumed run would. A read-only cache stores nothing and returns `result`.
        """
        if self.readonly:
            return result
        digest = key.digest()
        stored = self._db.execute(
            "INSERT OR IGNORE INTO responses (key, result) VALUES (?, ?)", (digest, result.model_dump_json())
        )
        self._stored.add(digest)
        if stored.rowcount == 1:
            return result
        row = self._db.execute("SELECT result FROM responses WHERE key = ?", (digest,)).fetchone()
        return MeteredResult.model_validate_json(row[0]) if row is not None else result

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()
