"""The resume guard: a run continues only with the experiment it was started with.

`record_run` is what each runner calls before it writes anything: it resolves what the command is
about to run (`resolve_run`), compares it with the run folder's record when the command continues
results already there (`--resume`) or replays a recording (`--replay`), refuses every difference
that can change results, listing each as (file, field, old, new), lets operational changes
(`HARMLESS`: concurrency, retries, the cache, paths, the description) through, and saves the record.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from coachlab.errors import UsageError
from coachlab.experiments.config import Experiment
from coachlab.experiments.criteria import criteria_path
from coachlab.experiments.resolved import (
    HARMLESS,
    RESOLVED_FILE,
    Command,
    ResolvedRun,
    RunRecord,
    fingerprint_payload,
    load_record,
    resolve_run,
    value_at,
)
from coachlab.experiments.results import write_text_atomic
from coachlab.library import RetrievalConfig
from coachlab.llm import Backend

__all__ = ["Difference", "compare_runs", "record_run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Difference:
    """One way the experiment differs from a run's record."""

    file: str
    field: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.old} -> {self.new}"


def _flatten(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, dict) and value:
        for key, item in cast("dict[str, Any]", value).items():
            yield from _flatten(item, (*path, key))
    elif isinstance(value, list) and value:
        for index, item in enumerate(cast("list[Any]", value)):
            yield from _flatten(item, (*path, index))
    else:
        yield path, value


_ABSENT = object()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _field(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _where(run: ResolvedRun, path: tuple[str | int, ...]) -> tuple[str, str]:
    """The file and field a payload path comes from."""
    head, rest = path[0], path[1:]
    if head == "experiment":
        return run.source, _field(rest)
    if head == "scenarios" and rest:
        sid = str(rest[0])
        persona = run.scenarios.get(sid, {}).get("persona")
        pid = persona.get("id") if isinstance(persona, dict) else None
        if len(rest) > 1 and rest[1] == "persona" and f"persona:{pid}" in run.files:
            return run.files[f"persona:{pid}"], _field([str(pid), *rest[2:]])
        if len(rest) > 1 and rest[1] == "success_criteria" and f"criteria:{sid}" in run.files:
            return run.files[f"criteria:{sid}"], _field(rest[1:])
        return run.files.get(f"scenario:{sid}", run.source), _field([sid, *rest[1:]])
    if head == "models" and len(rest) >= 2:
        name, kind, *more = rest
        if kind == "identity" and more:
            key, *deeper = more
            label = {
                "model": ["config", "model"],
                "base_url": ["config", "base_url (expanded)"],
                "settings": ["config"],
                "scripted": ["scripted (--dry-run)"],
                "client": ["client"],
            }.get(str(key), [key])
            return run.source, _field(["models", name, *label, *deeper])
        return run.source, _field(["models", name, kind, *more])
    if head == "retrieval":
        return run.source, _field(["retrieval", *rest]) + (" (as resolved)" if rest == ("kind",) else "")
    if head == "coachlab":
        return "coachlab package", "version"
    if head == "judge_gate":
        return run.source, "judge.gate (as resolved)"
    return run.source, _field(path)


def _summarized(payload: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """`payload` with each scenario or model that `other` lacks shown as one value, not field by field."""
    out = dict(payload)
    for part, shown in (("scenarios", "(a scenario)"), ("models", "(a model)")):
        mine, theirs = cast("dict[str, Any]", payload[part]), cast("dict[str, Any]", other[part])
        out[part] = {key: (value if key in theirs else shown) for key, value in mine.items()}
    return out


def compare_runs(old: ResolvedRun, new: ResolvedRun) -> list[Difference]:
    """Every difference between two records that can change results, as (file, field, old, new)."""
    old_payload, new_payload = fingerprint_payload(old), fingerprint_payload(new)
    before = dict(_flatten(_summarized(old_payload, new_payload)))
    after = dict(_flatten(_summarized(new_payload, old_payload)))
    found: list[Difference] = []
    for path in dict.fromkeys([*before, *after]):
        was, now = before.get(path, _ABSENT), after.get(path, _ABSENT)
        if was != now:
            file, field = _where(new if now is not _ABSENT else old, path)
            found.append(Difference(file, field, _show(was), _show(now)))
    return found


def _harmless_changes(old: ResolvedRun, new: ResolvedRun) -> list[str]:
    changes: list[str] = []
    for path in HARMLESS:
        a, b = value_at(old.experiment, path), value_at(new.experiment, path)
        if a != b:
            changes.append(f"{'.'.join(path)}: {_show(a)} -> {_show(b)}")
    return changes


def _refusal(root: Path, differences: Iterable[Difference], *, replay: bool, what: str) -> UsageError:
    lines = "\n".join(f"  {d}" for d in differences)
    if what == "library":
        return UsageError(
            f"{root} holds a library trained under another train: section; evaluating it as this experiment "
            f"would credit it to settings that did not make it. What changed:\n{lines}\nUndo the change(s), or "
            "train the changed experiment in a new folder (--out DIR) or from nothing (--overwrite)."
        )
    if replay:
        return UsageError(
            f"--replay: the experiment differs from the recorded {what} in {root}, so the recording cannot answer "
            f"it. What changed:\n{lines}\nReplay with the experiment files the run was recorded with."
        )
    return UsageError(
        f"{root} holds a {what} of another experiment; continuing it would mix results of the two. What changed:\n"
        f"{lines}\nUndo the change(s) to resume, or run the changed experiment in a new folder (--out DIR) or from "
        "nothing (--overwrite; the response cache still answers every call that did not change)."
    )


def record_run(
    experiment: Experiment,
    backends: Mapping[str, Backend],
    *,
    root: str | Path,
    command: Command,
    continuing: bool,
    retrieval: RetrievalConfig | None = None,
    simulate: Mapping[str, Any] | None = None,
) -> ResolvedRun:
    """Resolve what `command` runs, check it against the run folder's record, and save it there.

    Args:
        experiment: The loaded experiment.
        backends: The built backends.
        root: The run folder (resolved.json goes there).
        command: The command.
        continuing: The command continues results already in the folder (`--resume`): they must
            come from the same experiment. A replay (backends that replay a recording) is checked
            against the recording's record, copied into the folder, in any case.
        retrieval: The retrieval config the command uses (train, evaluate).
        simulate: Command-line overrides of the `simulate:` section.

    Returns:
        The command's record (its fingerprint goes into results).

    Raises:
        UsageError: A difference that can change results (each listed as file: field: old -> new).
    """
    folder = Path(root)
    new = resolve_run(experiment, backends, command=command, retrieval=retrieval, simulate=simulate)
    saved = {f"criteria:{sid}": criteria_path(folder, sid) for sid in experiment.scenarios}
    new = new.model_copy(
        update={"files": new.files | {k: os.path.normpath(path) for k, path in saved.items() if path.exists()}}
    )
    record = load_record(folder) or RunRecord()
    replay = any(b.replay is not None for b in backends.values())
    old = getattr(record, command)
    if isinstance(old, ResolvedRun) and (continuing or replay):
        differences = compare_runs(old, new)
        if differences:
            raise _refusal(folder, differences, replay=replay, what=f"{command} run")
        for change in _harmless_changes(old, new):
            logger.info("%s: allowed change that cannot alter results: %s", folder, change)
    elif continuing and not replay:
        logger.warning(
            "%s has no record of its %s run (%s): the experiment cannot be checked against it.",
            folder,
            command,
            RESOLVED_FILE,
        )
    if command == "evaluate" and record.train is not None and experiment.config.train is not None:
        # The library under evaluation was trained with the record's train section.
        trained, now = record.train.experiment.get("train"), new.experiment.get("train")
        if trained != now:
            differences = [
                Difference(str(experiment.path), _field(["train", *path]), _show(was), _show(is_now))
                for path, was, is_now in _diff_dicts(trained, now)
            ]
            raise _refusal(folder, differences, replay=replay, what="library")
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / RESOLVED_FILE, record.model_copy(update={command: new}).to_json())
    return new


def _diff_dicts(a: Any, b: Any) -> list[tuple[tuple[str | int, ...], Any, Any]]:
    """(path, old, new) for each leaf that differs (`_ABSENT` where a side lacks it)."""
    before, after = dict(_flatten(a)), dict(_flatten(b))
    return [
        (path, before.get(path, _ABSENT), after.get(path, _ABSENT))
        for path in dict.fromkeys([*before, *after])
        if before.get(path, _ABSENT) != after.get(path, _ABSENT)
    ]
