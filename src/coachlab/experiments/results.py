"""Run results: the episodes file (JSONL, one episode a line) and the summary built from it."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coachlab.schema import Episode, RoleUsage, TerminationReason
from coachlab.stats import Estimate, bootstrap_mean, pass_hat_k

__all__ = [
    "Adherence",
    "EpisodeLog",
    "GroupSummary",
    "RunSummary",
    "summarize",
    "write_json_atomic",
    "write_text_atomic",
]

logger = logging.getLogger(__name__)


class EpisodeLog:
    """The append-only episodes file of a run; the last record of an id wins.

    Each finished episode is written as one line and flushed to the operating system at once, so
    a killed or interrupted run keeps every episode it finished; the file is fsynced at most once
    a second and on `close`, which bounds what a power cut could take. A torn last line (a crash
    mid-write) is dropped on read.
    """

    FSYNC_EVERY_S = 1.0

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: TextIO | None = None
        self._synced = 0.0

    def read(self) -> dict[str, Episode]:
        """Every episode recorded so far, by id."""
        episodes: dict[str, Episode] = {}
        if not self.path.exists():
            return episodes
        with self.path.open("r", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    episode = Episode.model_validate_json(line)
                except ValidationError:
                    logger.warning("%s:%d: unreadable episode record skipped (torn write?)", self.path, number)
                    continue
                episodes[episode.id] = episode
        return episodes

    def repair(self) -> None:
        """Drop a torn trailing record so appends start on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with self.path.open("r+b") as fh:
                fh.truncate(cut)

    def drop(self, predicate: Callable[[Episode], bool]) -> int:
        """Remove the records for which `predicate` is true (atomic rewrite); returns how many went.

        Unreadable lines are dropped too; the others are kept byte for byte.
        """
        if not self.path.exists():
            return 0
        self.close()
        kept: list[str] = []
        dropped = 0
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                gone = predicate(Episode.model_validate_json(line))
            except ValidationError:
                gone = bool(line.strip())
            if gone:
                dropped += 1
            elif line.strip():
                kept.append(line)
        if dropped:
            write_text_atomic(self.path, "".join(kept))
        return dropped

    def append(self, episode: Episode) -> None:
        """Write one episode (flushed now, fsynced within a second)."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        self._fh.write(episode.model_dump_json() + "\n")
        self._fh.flush()
        now = time.monotonic()
        if now - self._synced >= self.FSYNC_EVERY_S:
            os.fsync(self._fh.fileno())
            self._synced = now

    def close(self) -> None:
        """Fsync and close the file (appends reopen it)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


class Adherence(BaseModel):
    """How well the customer model stayed in its role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_turns: int = Field(description="Customer lines generated (prefix and fixed openings excluded).")
    first_try_in_role: float | None = Field(description="Share of those turns whose first attempt passed the rule.")
    final_in_role: float | None = Field(description="Share of turns that ended in role after re-asks.")
    judge_in_role: float | None = Field(description="Share of judged episodes the judge says stayed in role.")
    judged_episodes: int


class GroupSummary(BaseModel):
    """Results of one scenario under one agent model and condition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario_id: str
    agent_model: str
    condition: str
    episodes: int
    judged: int
    simulator_faults: int = 0
    task_success: float | None = Field(default=None, description="Share of scored episodes that were task successes.")
    satisfaction: Estimate
    resolved_rate: float | None
    policy_rate: float | None
    pass_k: bool | None
    mean_turns: float
    tokens: int
    terminations: dict[str, int]


class RunSummary(BaseModel):
    """Everything the results table shows, also saved as summary.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: list[GroupSummary]
    overall: dict[str, Estimate]
    episodes: int
    judged: int
    infrastructure_errors: int
    judge_errors: int
    simulator_faults: int = 0
    task_success: dict[str, float] = Field(default_factory=dict[str, float], description="By agent/condition.")
    terminations: dict[str, int]
    usage: dict[str, RoleUsage]
    adherence: Adherence
    threshold: int


def _adherence(episodes: Sequence[Episode]) -> Adherence:
    generated = slipped_turns = lost = 0
    for ep in episodes:
        slip_turns = {e.turn for e in ep.events if e.type == "role_slip"}
        generated += sum(1 for e in ep.events if e.type == "customer_message" and e.origin == "model")
        slipped_turns += len(slip_turns)
        if ep.termination is TerminationReason.CUSTOMER_OUT_OF_ROLE:
            lost += 1
            generated += 1
    judged = [ep.verdict for ep in episodes if ep.verdict is not None]
    return Adherence(
        customer_turns=generated,
        first_try_in_role=(1 - slipped_turns / generated) if generated else None,
        final_in_role=(1 - lost / generated) if generated else None,
        judge_in_role=(sum(v.customer_in_role for v in judged) / len(judged)) if judged else None,
        judged_episodes=len(judged),
    )


def summarize(episodes: Iterable[Episode], *, threshold: int = 7, seed: int = 0) -> RunSummary:
    """Aggregate episodes per (agent model, condition, scenario) and overall per agent model."""
    eps = sorted(episodes, key=lambda e: e.id)
    groups: dict[tuple[str, str, str], list[Episode]] = defaultdict(list)
    for ep in eps:
        groups[(ep.agent_model, ep.condition, ep.scenario_id)].append(ep)
    rows: list[GroupSummary] = []
    for (model, condition, scenario), members in groups.items():
        verdicts = [e.verdict for e in members if e.scored and e.verdict is not None]
        scores = [float(v.satisfaction) for v in verdicts]
        successes = [float(v.task_success) for v in verdicts if v.task_success is not None]
        rows.append(
            GroupSummary(
                scenario_id=scenario,
                agent_model=model,
                condition=condition,
                episodes=len(members),
                judged=len(verdicts),
                simulator_faults=sum(e.simulator_fault is not None for e in members),
                task_success=sum(successes) / len(successes) if successes else None,
                satisfaction=bootstrap_mean(scores, seed=seed),
                resolved_rate=sum(v.resolved for v in verdicts) / len(verdicts) if verdicts else None,
                policy_rate=sum(v.policy_followed for v in verdicts) / len(verdicts) if verdicts else None,
                pass_k=(all(x == 1.0 for x in successes) if successes else pass_hat_k(scores, threshold=threshold))
                if scores
                else None,
                mean_turns=sum(e.turns for e in members) / len(members),
                tokens=sum(u.total_tokens for e in members for u in e.usage.values()),
                terminations=dict(Counter(e.termination.value for e in members)),
            )
        )
    overall: dict[str, Estimate] = {}
    by_model: dict[str, list[float]] = defaultdict(list)
    success: dict[str, list[float]] = defaultdict(list)
    for ep in eps:
        if ep.scored and ep.verdict is not None:
            by_model[f"{ep.agent_model}/{ep.condition}"].append(float(ep.verdict.satisfaction))
            if ep.verdict.task_success is not None:
                success[f"{ep.agent_model}/{ep.condition}"].append(float(ep.verdict.task_success))
    for key, scores in by_model.items():
        overall[key] = bootstrap_mean(scores, seed=seed)
    usage: dict[str, RoleUsage] = defaultdict(RoleUsage)
    for ep in eps:
        for role, u in ep.usage.items():
            usage[role] = usage[role] + u
    return RunSummary(
        groups=rows,
        overall=overall,
        episodes=len(eps),
        judged=sum(1 for e in eps if e.scored),
        simulator_faults=sum(e.simulator_fault is not None for e in eps),
        task_success={k: sum(v) / len(v) for k, v in success.items()},
        infrastructure_errors=sum(1 for e in eps if e.termination is TerminationReason.INFRASTRUCTURE_ERROR),
        judge_errors=sum(
            1 for e in eps if e.judge_error is not None and e.termination is not TerminationReason.INFRASTRUCTURE_ERROR
        ),
        terminations=dict(Counter(e.termination.value for e in eps)),
        usage=dict(usage),
        adherence=_adherence(eps),
        threshold=threshold,
    )


def write_json_atomic(path: str | Path, payload: BaseModel | dict[str, object]) -> None:
    """Write JSON through a temporary file, fsync and rename (never a half-written file)."""
    text = payload.model_dump_json(indent=2) if isinstance(payload, BaseModel) else json.dumps(payload, indent=2)
    write_text_atomic(path, text)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text through a temporary file, fsync, rename and fsync the folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    folder = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
