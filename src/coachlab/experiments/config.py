"""Experiment files: what a researcher edits to run coachlab.

An experiment names the persona folders and scenario files it draws on, the models of each role
(AutoGen component configs), and how to run. Paths are relative to the experiment file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from coachlab.environments import EnvironmentConfig, ExpertConfig
from coachlab.envref import literal_secrets
from coachlab.errors import ConfigError
from coachlab.explorer.config import TrainConfig
from coachlab.judging import JudgeConfig
from coachlab.judging.gate import Similarity, load_gate
from coachlab.library import RetrievalConfig
from coachlab.llm import ModelEntry
from coachlab.schema import Persona, Scenario, ScenarioSpec
from coachlab.yamlio import YamlDocument, load_yaml, validate_yaml

__all__ = [
    "CONDITIONS",
    "CONTROLS",
    "CacheConfig",
    "Condition",
    "EvaluateConfig",
    "Experiment",
    "ExperimentConfig",
    "SimulateConfig",
    "load_experiment",
    "load_personas",
    "load_scenarios",
]

REQUIRED_ROLES = ("customer", "judge")


Condition = Literal["baseline", "generic", "library", "oracle", "placebo", "twin", "teacher"]
CONDITIONS: tuple[Condition, ...] = ("baseline", "generic", "library", "oracle", "placebo", "teacher")
"""The conditions `evaluate` runs unless `evaluate.conditions` says otherwise (`twin` only on request)."""
CONTROLS: tuple[Condition, ...] = ("oracle", "placebo", "twin")
"""The control arms: run only on scenarios whose checklist has a must item (see `coachlab.experiments.controls`);
`twin` only on those with a training twin."""


class EvaluateConfig(BaseModel):
    """The `evaluate:` section of an experiment file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenarios: list[str] = Field(min_length=1, description="Held-out scenario ids (never used by train).")
    students: list[str] = Field(default_factory=lambda: ["student"], description="Students: the transfer matrix.")
    teacher: str = "teacher"
    conditions: list[Condition] = Field(default_factory=lambda: list(CONDITIONS))
    trials: int = Field(default=4, ge=1, le=1000)
    generic_size: int = Field(default=5, ge=1, description="Strategies in the generic condition's fixed list.")
    threshold: int = Field(default=7, ge=1, le=10, description="pass^k threshold.")
    seed: int = 0
    ablate: bool = Field(
        default=False,
        description="Also run the library without each approved strategy (leave-one-out) on every scenario and trial: "
        "one more library run per strategy.",
    )
    retire: bool = Field(
        default=True, description="Mark strategies that did harm on these scenarios `retired` in the library."
    )
    retire_min_episodes: int = Field(
        default=4, ge=1, description="Scored episodes a strategy must have been shown in before it can be retired."
    )


class SimulateConfig(BaseModel):
    """The `simulate:` section: which scenarios, who plays the agent, how many trials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: list[str] = Field(
        default_factory=lambda: ["student"], description="Model entries that play the service agent."
    )
    scenarios: list[str] | None = Field(default=None, description="Scenario ids to run; all when omitted.")
    trials: int = Field(default=3, ge=1, le=1000, description="Episodes per scenario and agent.")
    seed: int = Field(default=0, description="Base seed; each episode's seed derives from it.")
    concurrency: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        # In-process models take turns on the CPU: more episodes in flight only evict each other's KV prefixes.
        description="Episodes in flight at once (simulate and evaluate). Default: 1 when a model runs in this process,"
        " else 4.",
    )
    satisfaction_threshold: int = Field(default=7, ge=1, le=10, description="Score that counts as a pass (pass^k).")


class CacheConfig(BaseModel):
    """The `cache:` section: the role-aware response cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    path: str | None = Field(default=None, description="SQLite file; default <output dir>/cache.sqlite.")


class ExperimentConfig(BaseModel):
    """An experiment file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", description="Names the output folder.")
    description: str = ""
    personas: list[str] = Field(default_factory=lambda: ["../personas"], description="Persona folders or files.")
    scenarios: list[str] = Field(min_length=1, description="Scenario files (each with a `scenarios:` list).")
    models: dict[str, ModelEntry] = Field(description="Model entries by name: customer, judge, student, teacher...")
    environment: EnvironmentConfig = Field(default_factory=EnvironmentConfig)
    judge: JudgeConfig = Field(
        default_factory=JudgeConfig, description="How verdicts are made: votes, checklist grading, the similarity gate."
    )
    expert: ExpertConfig = Field(
        default_factory=ExpertConfig,
        description="How the teacher plays the service agent (the ceiling, expert replies, mentor turns).",
    )
    simulate: SimulateConfig = Field(default_factory=SimulateConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    train: TrainConfig | None = Field(default=None, description="The distillation loop (coachlab train).")
    evaluate: EvaluateConfig | None = Field(default=None, description="Held-out evaluation (coachlab evaluate).")
    retrieval: RetrievalConfig = Field(
        default_factory=RetrievalConfig, description="How the student finds strategies per turn (train and evaluate)."
    )
    output_dir: str | None = Field(default=None, description="Where results go; default runs/<name>.")

    @model_validator(mode="after")
    def _roles_exist(self) -> ExperimentConfig:
        needed = [*REQUIRED_ROLES, *self.simulate.agents]
        if self.train is not None:
            needed += [self.train.student, self.train.teacher]
        if self.evaluate is not None:
            needed += [*self.evaluate.students, self.evaluate.teacher]
            trained: set[str] = set(self.train.scenarios or []) if self.train else set()
            both = sorted(set(self.evaluate.scenarios) & trained)
            if both:
                raise ValueError(f"evaluate.scenarios must be held out from train.scenarios; both list {both}")
        missing = list(dict.fromkeys(r for r in needed if r not in self.models))
        if missing:
            raise ValueError(
                f"models: needs entries for {', '.join(missing)} (have: {', '.join(self.models) or 'none'})"
            )
        return self


@dataclass
class Experiment:
    """A loaded experiment: its config, where it came from, and its resolved scenarios."""

    config: ExperimentConfig
    path: Path
    personas: dict[str, Persona]
    scenarios: dict[str, Scenario]
    sources: dict[str, Path] = field(default_factory=lambda: {})
    """The file each scenario was read from, by scenario id."""
    persona_sources: dict[str, Path] = field(default_factory=lambda: {})
    """The file each persona was read from, by persona id (inline personas are not here)."""

    @property
    def output_dir(self) -> Path:
        """The folder results are written to (relative paths start at the current folder)."""
        return Path(self.config.output_dir) if self.config.output_dir else Path("runs") / self.config.name

    def judge_gate(self) -> Similarity | None:
        """The checklist's similarity gate for this experiment's `judge:` settings (None: no gate, or no checklist).

        Raises:
            UsageError: `judge.gate: embedding` and the offline embedding model cannot run here.
        """
        judge = self.config.judge
        return load_gate(judge.gate) if judge.checklist != "off" else None

    def experts(self) -> frozenset[str]:
        """The model entries that play the expert (the teacher of `train:` and `evaluate:`)."""
        names = {self.config.train.teacher} if self.config.train else set[str]()
        if self.config.evaluate:
            names.add(self.config.evaluate.teacher)
        return frozenset(names)

    def where(self, field_path: str) -> str:
        """'file: field' for error messages."""
        return f"{self.path}: {field_path}"

    def selected_scenarios(self, ids: Sequence[str] | None = None) -> list[Scenario]:
        """The scenarios to run, in file order (`ids` overrides the `simulate.scenarios` list)."""
        wanted = list(ids) if ids else self.config.simulate.scenarios
        if not wanted:
            return list(self.scenarios.values())
        unknown = [s for s in wanted if s not in self.scenarios]
        if unknown:
            raise ConfigError(
                f"{self.path}: simulate.scenarios: unknown scenario {unknown[0]!r}"
                f"{_did_you_mean(unknown[0], self.scenarios)}. Known: {', '.join(self.scenarios)}."
            )
        return [self.scenarios[s] for s in wanted]


def _did_you_mean(name: str, options: Iterable[str]) -> str:
    guess = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {guess[0]!r}?)" if guess else ""


def load_personas(paths: Iterable[str | Path]) -> tuple[dict[str, Persona], dict[str, Path]]:
    """Load persona files (or every .yaml/.yml in folders).

    Raises:
        ConfigError: A file is invalid, or two files declare the same id.
    """
    personas: dict[str, Persona] = {}
    sources: dict[str, Path] = {}
    for path in paths:
        p = Path(path)
        try:
            is_dir = p.is_dir()
        except OSError as exc:
            raise ConfigError(f"{p}: cannot use this path: {exc.strerror}.") from None
        files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")]) if is_dir else [p]
        if is_dir and not files:
            raise ConfigError(f"{p}: no persona files (*.yaml) in this folder.")
        for file in files:
            persona = validate_yaml(Persona, load_yaml(file, what="persona file"))
            if persona.id in personas:
                raise ConfigError(f"{file}: id: persona {persona.id!r} is already defined in {sources[persona.id]}.")
            personas[persona.id] = persona
            sources[persona.id] = file
    return personas, sources


def _scenario_specs(doc: YamlDocument) -> list[tuple[ScenarioSpec, tuple[str | int, ...]]]:
    data = doc.data
    if isinstance(data, dict) and "scenarios" in data:
        items = data["scenarios"]  # pyright: ignore[reportUnknownVariableType]
        extra = sorted(str(k) for k in data if k != "scenarios")  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        if extra:
            raise ConfigError(
                f"{doc.path}:{doc.line_of((extra[0],))}: {extra[0]}: unknown field; a scenario file holds "
                f"`scenarios:` only{_did_you_mean(extra[0], ['scenarios'])}."
            )
        if not isinstance(items, list) or not items:
            line = doc.line_of(("scenarios",))
            raise ConfigError(f"{doc.path}:{line}: scenarios: expected a non-empty list of scenarios.")
        return [
            (validate_yaml(ScenarioSpec, doc, data=item, prefix=("scenarios", i)), ("scenarios", i))
            for i, item in enumerate(items)  # pyright: ignore[reportUnknownArgumentType, reportUnknownVariableType]
        ]
    return [(validate_yaml(ScenarioSpec, doc), ())]


def load_scenarios(
    paths: Iterable[str | Path], personas: dict[str, Persona]
) -> tuple[dict[str, Scenario], dict[str, Path]]:
    """Load scenario files and resolve each persona reference.

    Raises:
        ConfigError: A file is invalid, an id repeats, or a scenario names an unknown persona.
    """
    scenarios: dict[str, Scenario] = {}
    sources: dict[str, Path] = {}
    for path in paths:
        doc = load_yaml(path, what="scenario file")
        for spec, loc in _scenario_specs(doc):
            if spec.id in scenarios:
                raise ConfigError(
                    f"{doc.path}:{doc.line_of((*loc, 'id'))}: id: scenario {spec.id!r} is already defined "
                    f"in {sources[spec.id]}."
                )
            if isinstance(spec.persona, Persona):
                persona = spec.persona
            elif spec.persona in personas:
                persona = personas[spec.persona]
            else:
                field_path = ".".join(str(x) for x in (*loc, "persona"))
                known = ", ".join(sorted(personas)) or "none loaded"
                raise ConfigError(
                    f"{doc.path}:{doc.line_of((*loc, 'persona'))}: {field_path}: no persona {spec.persona!r}"
                    f"{_did_you_mean(spec.persona, personas)}. Known personas: {known}. "
                    "Write a persona id from the experiment's persona folders, or a persona inline."
                )
            scenarios[spec.id] = Scenario.model_validate({**spec.model_dump(exclude={"persona"}), "persona": persona})
            sources[spec.id] = doc.path
    return scenarios, sources


def _refuse_literal_keys(doc: YamlDocument, config: ExperimentConfig) -> None:
    """A key written into the file would be copied into the run folder: only `${VAR}` references are allowed."""
    for name, entry in config.models.items():
        for loc, _ in literal_secrets(entry.config):
            full = ("models", name, "config", *loc)
            field_name = ".".join(str(x) for x in full)
            last = str(loc[-1]) if isinstance(loc[-1], str) else "api_key"
            raise ConfigError(
                f"{doc.path}:{doc.line_of(full)}: {field_name}: a key is written in the file; keys come from the "
                f'environment only. Write a reference instead, e.g. {last}: "${{OPENAI_API_KEY}}" (then export '
                f'OPENAI_API_KEY=...), or "${{SERVER_KEY:-not-needed}}" for a server that needs no key.'
            )


def load_experiment(path: str | Path) -> Experiment:
    """Load an experiment file with its personas and scenarios.

    Raises:
        ConfigError: Anything is missing or invalid, or a key is written in the file instead of a
            `${VAR}` reference; the message names file, field and line.
    """
    doc = load_yaml(path, what="experiment file")
    config = validate_yaml(ExperimentConfig, doc)
    _refuse_literal_keys(doc, config)
    base = doc.path.parent

    def rel(p: str) -> Path:
        return (base / p) if not Path(p).is_absolute() else Path(p)

    for key in ("personas", "scenarios"):
        for i, item in enumerate(getattr(config, key)):
            where = f"{doc.path}:{doc.line_of((key, i))}: {key}[{i}]"
            try:
                found, is_dir = rel(item).exists(), rel(item).is_dir()
            except OSError as exc:
                raise ConfigError(f"{where}: cannot use {item!r}: {exc.strerror}.") from None
            if not found:
                raise ConfigError(f"{where}: {rel(item)} does not exist (paths are relative to the experiment file).")
            if key == "scenarios" and is_dir:
                raise ConfigError(f"{where}: {rel(item)} is a folder; list the scenario files in it.")
    personas, persona_sources = load_personas(rel(p) for p in config.personas)
    scenarios, sources = load_scenarios((rel(p) for p in config.scenarios), personas)
    lists = {
        "simulate": config.simulate.scenarios or [],
        "train": (config.train.scenarios or []) if config.train else [],
        "evaluate": config.evaluate.scenarios if config.evaluate else [],
    }
    for section, ids in lists.items():
        for i, sid in enumerate(ids):
            if sid not in scenarios:
                raise ConfigError(
                    f"{doc.path}:{doc.line_of((section, 'scenarios', i))}: {section}.scenarios[{i}]: unknown scenario "
                    f"{sid!r}{_did_you_mean(sid, scenarios)}. Known: {', '.join(scenarios)}."
                )
    return Experiment(
        config=config,
        path=doc.path,
        personas=personas,
        scenarios=scenarios,
        sources=sources,
        persona_sources=persona_sources,
    )
