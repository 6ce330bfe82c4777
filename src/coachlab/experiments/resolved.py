"""The resolved run config: what a run folder's numbers came from, and the guard that keeps it true.

Each command that writes into a run folder (`simulate`, `train`, `evaluate`) records in its
`resolved.json` what it ran: the experiment with every default filled (and the scenario lists it
actually used), every persona and scenario as loaded, each role's model identity (provider, model,
endpoint with variables expanded and credentials removed, every sampling setting; see
`coachlab.llm.ModelIdentity`), the retriever `auto` picked, whether the models were scripted (a
dry run), the coachlab and dependency versions and the platform. Keys never appear: model configs
keep their `${VAR}` references and identities leave keys out.

Each record carries a **fingerprint**: the SHA-256 of the part of it that can change results
(`fingerprint_payload`). Operational settings are left out of it: concurrency, retries, the cache,
paths, the description. `evaluation/results.json` carries the evaluate record's fingerprint.

Continuing a run (`--resume`, or `--replay` of a recording) compares the experiment as it resolves
now with the record (`coachlab.experiments.guard`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from coachlab import __version__
from coachlab.envref import expand_env, is_secret_field, literal_secrets, strip_credentials
from coachlab.errors import UsageError
from coachlab.experiments.config import Experiment
from coachlab.library import RetrievalConfig
from coachlab.llm import Backend, ModelIdentity
from coachlab.redact import MASK

__all__ = [
    "HARMLESS",
    "RESOLVED_FILE",
    "SCENARIO_LABELS",
    "Command",
    "ResolvedModel",
    "ResolvedRetrieval",
    "ResolvedRun",
    "RunRecord",
    "fingerprint_payload",
    "load_record",
    "resolve_run",
    "role_models",
    "used_scenarios",
    "value_at",
]

logger = logging.getLogger(__name__)

RESOLVED_FILE = "resolved.json"
"""The record's file name in a run folder."""

Command = Literal["simulate", "train", "evaluate"]

HARMLESS: tuple[tuple[str, ...], ...] = (
    ("description",),
    ("output_dir",),
    ("cache",),
    ("personas",),
    ("scenarios",),
    ("simulate", "concurrency"),
    ("train", "concurrency"),
)
"""Experiment fields that cannot change results (the personas and scenarios are compared by content,
not by the paths they are read from; model entries by their identity, so their `concurrency` and
`retry` are free too)."""

SCENARIO_LABELS: tuple[str, ...] = ("situation",)
"""Scenario fields no agent ever sees (labels for the report): left out of the fingerprint, so labelling the
scenarios of a run in progress does not stop it from resuming."""

_SECTIONS_NOT_USED: dict[Command, tuple[str, ...]] = {
    "simulate": ("train", "evaluate", "retrieval"),
    "train": ("simulate", "evaluate"),
    "evaluate": ("simulate",),
}
"""Experiment sections a command's results do not depend on (evaluate depends on train: its library)."""

_PACKAGES = (
    "autogen-agentchat",
    "autogen-core",
    "autogen-ext",
    "openai",
    "pydantic",
    "numpy",
    "tokenizers",
    "llama_cpp_python",
    "networkx",
    "PyYAML",
)
"""Dependencies whose versions a record keeps (those installed)."""


class ResolvedRetrieval(BaseModel):
    """The retriever a run used: the kind `auto` picked, and the settings that shape what it returns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["embedding", "lexical", "openai"]
    k: int
    floor: float = Field(description="The floor in effect (the kind's default when the file sets none).")
    model: str | None = Field(default=None, description="The offline embedding model (kind embedding).")
    endpoint: dict[str, JsonValue] | None = Field(
        default=None, description="The embeddings endpoint (kind openai): model, base_url expanded, dimensions."
    )


class ResolvedModel(BaseModel):
    """A role's model as run: its identity and its prices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    identity: ModelIdentity
    cost_per_1k_prompt: float = 0.0
    cost_per_1k_completion: float = 0.0


class ResolvedRun(BaseModel):
    """What one command ran in a run folder (one entry of resolved.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: Command
    experiment: dict[str, JsonValue] = Field(
        description="The experiment with defaults filled and the scenario lists as run; keys stay ${VAR} references."
    )
    source: str = Field(description="The experiment file.")
    files: dict[str, str] = Field(
        description="Where each scenario, persona and saved checklist was read from ('scenario:ID', 'criteria:ID')."
    )
    personas: dict[str, dict[str, JsonValue]] = Field(description="Every persona loaded, by id.")
    scenarios: dict[str, dict[str, JsonValue]] = Field(description="Every scenario loaded, as run, by id.")
    models: dict[str, ResolvedModel] = Field(description="The models of the command's roles, by entry name.")
    retrieval: ResolvedRetrieval | None = Field(description="The retriever used (train and evaluate).")
    judge_gate: Literal["embedding", "off"] = Field(
        default="off", description="The checklist's similarity gate as `judge.gate` resolved here (auto: if fetched)."
    )
    scripted: bool = Field(description="A model was scripted (--dry-run): the numbers measure no model.")
    versions: dict[str, str] = Field(description="coachlab, Python and dependency versions.")
    platform: str
    fingerprint: str = Field(description="SHA-256 of what can change results (fingerprint_payload).")

    def with_fingerprint(self) -> ResolvedRun:
        """This record with its fingerprint computed."""
        blob = json.dumps(fingerprint_payload(self), sort_keys=True, separators=(",", ":"))
        return self.model_copy(update={"fingerprint": hashlib.sha256(blob.encode()).hexdigest()})


class RunRecord(BaseModel):
    """resolved.json: the record of each command that wrote into the run folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    simulate: ResolvedRun | None = None
    train: ResolvedRun | None = None
    evaluate: ResolvedRun | None = None

    @property
    def scripted(self) -> bool:
        """Some command of the run used scripted models (a dry run)."""
        return any(run.scripted for run in self.runs())

    def scripted_models(self) -> tuple[list[str], list[str]]:
        """The model entries the run's commands used: (scripted ones, real ones), sorted."""
        scripted = {n for run in self.runs() for n, m in run.models.items() if m.identity.scripted}
        real = {n for run in self.runs() for n, m in run.models.items() if not m.identity.scripted}
        return sorted(scripted), sorted(real - scripted)

    def runs(self) -> list[ResolvedRun]:
        """The records present, in command order."""
        return [run for run in (self.simulate, self.train, self.evaluate) if run is not None]

    def to_json(self) -> str:
        """The file's text: sorted keys, so the same inputs give the same bytes."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# -- resolving ----------------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    found = {"coachlab": __version__, "python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _clean(value: Any, field: str = "") -> Any:
    """A config dump with literal secrets masked and credentials taken out of URLs (refs stay)."""
    if isinstance(value, dict):
        return {k: _clean(v, str(k)) for k, v in cast("dict[Any, Any]", value).items()}
    if isinstance(value, list):
        return [_clean(v, field) for v in cast("list[Any]", value)]
    if isinstance(value, str):
        if is_secret_field(field) and literal_secrets({field: value}):
            return MASK  # an entry built in Python with a key in it; files refuse them
        if "://" in value and "@" in value:
            return strip_credentials(value)
    return value


def used_scenarios(experiment: Experiment, command: Command, *, simulate: Sequence[str] | None = None) -> list[str]:
    """The ids of the scenarios a command runs (train: its roots; simulate: `simulate` or the file's)."""
    cfg = experiment.config
    if command == "simulate":
        return list(simulate) if simulate is not None else [s.id for s in experiment.selected_scenarios()]
    if command == "evaluate":
        return list(cfg.evaluate.scenarios) if cfg.evaluate is not None else []
    if cfg.train is None:
        return []
    held_out = set(cfg.evaluate.scenarios) if cfg.evaluate is not None else set[str]()
    return list(cfg.train.scenarios or [s for s in experiment.scenarios if s not in held_out])


def role_models(experiment: Experiment, command: Command) -> list[str]:
    """The model entries a command's roles use."""
    cfg = experiment.config
    names = ["customer", "judge"]
    if command == "simulate":
        names += cfg.simulate.agents
    elif command == "train" and cfg.train is not None:
        names += [cfg.train.student, cfg.train.teacher]
    elif command == "evaluate" and cfg.evaluate is not None:
        names += [*cfg.evaluate.students, cfg.evaluate.teacher]
    return list(dict.fromkeys(names))


def _retrieval(config: RetrievalConfig) -> ResolvedRetrieval:
    kind = config.resolved().kind
    if kind == "auto":  # pragma: no cover - resolved() never returns auto
        raise AssertionError("auto is resolved")
    endpoint: dict[str, JsonValue] | None = None
    if kind == "openai" and config.endpoint is not None:
        base = config.endpoint.base_url
        expanded = expand_env(base, where="retrieval.endpoint.base_url") if base else None
        endpoint = {
            "model": config.endpoint.model,
            "base_url": strip_credentials(expanded) if isinstance(expanded, str) else None,
            "dimensions": config.endpoint.dimensions,
        }
    return ResolvedRetrieval(
        kind=kind,
        k=config.k,
        floor=config.floor_for(kind),
        model=config.model if kind == "embedding" else None,
        endpoint=endpoint,
    )


def _judge_gate(experiment: Experiment) -> Literal["embedding", "off"]:
    """What `judge.gate` gives on this machine (the gate itself is loaded by the runners)."""
    judge = experiment.config.judge
    if judge.checklist == "off" or judge.gate == "off":
        return "off"
    from coachlab.library.embedding import DEFAULT_EMBEDDING_MODEL
    from coachlab.library.retrieval import embedding_unavailable

    return "embedding" if embedding_unavailable(DEFAULT_EMBEDDING_MODEL) is None else "off"


def resolve_run(
    experiment: Experiment,
    backends: Mapping[str, Backend],
    *,
    command: Command,
    retrieval: RetrievalConfig | None = None,
    simulate: Mapping[str, Any] | None = None,
) -> ResolvedRun:
    """What `command` runs, fully resolved (pure: the same inputs give an equal record).

    Args:
        experiment: The loaded experiment.
        backends: The built backends (the identities of the command's roles are read from them).
        command: The command.
        retrieval: The retrieval config the command uses (train, evaluate); default the experiment's.
        simulate: Overrides of the `simulate:` section the command line made (`trials`, `scenarios`).
    """
    cfg = experiment.config
    dump: dict[str, Any] = _clean(cfg.model_dump(mode="json"))
    sim = dict(simulate or {})
    dump["simulate"].update(sim)
    dump["simulate"]["scenarios"] = used_scenarios(experiment, "simulate", simulate=sim.get("scenarios"))
    if dump.get("train") is not None:
        dump["train"]["scenarios"] = used_scenarios(experiment, "train")
    models: dict[str, ResolvedModel] = {}
    writer = ["teacher"] if command == "simulate" else []  # simulate's teacher writes missing checklists
    for name in dict.fromkeys([*role_models(experiment, command), *writer]):
        backend = backends.get(name)
        if backend is None or backend.resolved is None:
            continue
        entry = cfg.models[name]
        models[name] = ResolvedModel(
            identity=backend.resolved,
            cost_per_1k_prompt=entry.cost_per_1k_prompt,
            cost_per_1k_completion=entry.cost_per_1k_completion,
        )
    files = {f"scenario:{sid}": os.path.normpath(path) for sid, path in experiment.sources.items()}
    files |= {f"persona:{pid}": os.path.normpath(path) for pid, path in experiment.persona_sources.items()}
    run = ResolvedRun(
        command=command,
        experiment=dump,
        source=str(experiment.path),
        files=files,
        personas={pid: p.model_dump(mode="json") for pid, p in experiment.personas.items()},
        scenarios={sid: s.model_dump(mode="json") for sid, s in experiment.scenarios.items()},
        models=models,
        retrieval=_retrieval(retrieval or cfg.retrieval) if command != "simulate" else None,
        judge_gate=_judge_gate(experiment),
        scripted=any(m.identity.scripted for m in models.values()),
        versions=_versions(),
        platform=platform.platform(),
        fingerprint="",
    )
    return run.with_fingerprint()


def fingerprint_payload(run: ResolvedRun) -> dict[str, Any]:
    """The part of a record that can change the command's results (what the fingerprint hashes).

    The experiment without its operational fields (`HARMLESS`), its model entries and retrieval
    section (compared as resolved instead: identities and prices, the retriever used) and the
    sections the command does not use; the scenarios it ran (with their personas, without the labels no
    agent sees: `SCENARIO_LABELS`); its models; its retriever; the coachlab version.
    """
    experiment = copy.deepcopy(run.experiment)
    for path in (*HARMLESS, ("models",), ("retrieval",), *((s,) for s in _SECTIONS_NOT_USED[run.command])):
        _drop(experiment, path)
    section = run.experiment.get(run.command)
    ids = cast("list[str]", section.get("scenarios") or []) if isinstance(section, dict) else []
    return {
        "command": run.command,
        "experiment": experiment,
        "scenarios": {
            sid: {k: v for k, v in run.scenarios[sid].items() if k not in SCENARIO_LABELS}
            for sid in ids
            if sid in run.scenarios
        },
        "models": {name: m.model_dump(mode="json") for name, m in run.models.items()},
        "retrieval": run.retrieval.model_dump(mode="json") if run.retrieval is not None else None,
        "judge_gate": run.judge_gate,
        "coachlab": run.versions.get("coachlab"),
    }


def value_at(data: Any, path: Sequence[str]) -> Any:
    """The value at `path` inside nested dicts, or None."""
    node: Any = data
    for part in path:
        node = cast("dict[str, Any]", node).get(part) if isinstance(node, dict) else None
    return node


def _drop(data: dict[str, Any], path: tuple[str, ...]) -> None:
    node = value_at(data, path[:-1])
    if isinstance(node, dict):
        cast("dict[str, Any]", node).pop(path[-1], None)


# -- the record in a run folder -----------------------------------------------------------------------------


def load_record(root: str | Path) -> RunRecord | None:
    """The run folder's resolved.json, or None when it has none.

    Raises:
        UsageError: The file is there but unreadable.
    """
    path = Path(root) / RESOLVED_FILE
    if not path.is_file():
        return None
    try:
        return RunRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path}: not a readable run record ({type(exc).__name__}); it was not written by this coachlab."
        ) from None
