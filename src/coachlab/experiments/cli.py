"""The `coachlab` command line."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from coachlab.errors import CoachlabError, UsageError
from coachlab.experiments.authoring_cli import persona_app, validate
from coachlab.experiments.judge_cli import judge_app
from coachlab.experiments.library_cli import library_app
from coachlab.experiments.models_cli import models_app
from coachlab.experiments.replay import open_replay, run_folder
from coachlab.serve.cli import serve
from coachlab.viz.cli import report, tree_app

if TYPE_CHECKING:
    from coachlab.experiments.config import Experiment
    from coachlab.experiments.replay import Replay
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


ReplayFrom = Annotated[
    Path | None,
    typer.Option(
        "--replay",
        metavar="RUN",
        help="Run again from the recorded run folder RUN's response cache alone: no model is called and no key is "
        "read; stops at the first call the recording lacks. Writes to --out (default RUN-replay).",
    ),
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


def _mode_line(dry_run: bool, replay: Replay | None) -> None:
    if dry_run:
        console.print(
            "[bold yellow]DRY RUN[/bold yellow]: every model is a scripted stand-in; the results check the pipeline "
            "and measure no model."
        )
    if replay is not None:
        console.print(f"[bold]REPLAY[/bold] of {replay.source}: every answer comes from its response cache.")


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
        bool,
        typer.Option(
            help="Replace every model by a scripted one: checks the whole pipeline fast (default folder "
            "runs/<name>-dry-run)."
        ),
    ] = False,
    replay: ReplayFrom = None,
) -> None:
    """Simulate every scenario x agent x trial of an experiment and print the results table."""
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.distill import saved_criteria
    from coachlab.experiments.guard import record_run
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
    recording = open_replay(replay, resume=resume, dry_run=dry_run)
    exp = _dry(load_experiment(experiment), dry_run)
    cfg = exp.config.simulate
    chosen = exp.selected_scenarios([s.strip() for s in scenarios.split(",") if s.strip()] if scenarios else None)
    n_trials = trials if trials is not None else cfg.trials
    if n_trials < 1:
        raise UsageError("--trials must be at least 1.")
    root = out or run_folder(exp, dry_run=dry_run, replay=recording)
    names = ["customer", "judge", *cfg.agents]
    needs_teacher = (
        exp.config.judge.checklist != "off"
        and exp.config.judge.write_criteria
        and "teacher" in exp.config.models
        and any(not s.success_criteria for s in chosen)
    )
    if needs_teacher and "teacher" not in names:
        names.append("teacher")  # writes the checklists the scenarios lack
    if recording is not None:
        recording.prepare(root, overwrite=overwrite, library=False)
        backends = recording.backends(exp, names)
        resume = True  # against the recording's record, copied into the new folder
    else:
        if overwrite:
            overwrite_run(root)
        clients = dry_run_clients(names) if dry_run else None
        backends = build_backends(exp, names, clients=clients)
    sim = Simulation(exp, backends, out_dir=root, use_cache=not (no_cache or dry_run or recording))
    plans = plan_episodes(chosen, agents=cfg.agents, trials=n_trials, seed=cfg.seed)
    todo = sim.pending(plans, resume=resume, retry_failed=retry_failed)
    saved_criteria(exp, chosen, root)
    record = functools.partial(
        record_run, exp, backends, root=root, command="simulate",
        simulate={"trials": n_trials, "scenarios": [s.id for s in chosen]},
    )  # fmt: skip
    record(continuing=resume and sim.paths.episodes.exists())
    sim.save_config(keep_existing=resume)
    _mode_line(dry_run, recording)
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
                backends,
                _simulate_with_criteria(exp, sim, todo, backends, root, concurrency or cfg.concurrency, record),
            )
    except KeyboardInterrupt:
        _interrupted(
            f"Interrupted: {len(sim.log.read())} finished episodes are kept in {sim.paths.episodes}. "
            f"Resume with: coachlab simulate {experiment}"
            + (" --dry-run" if dry_run else "")
            + (f" --out {out}" if out else "")
            + " --resume"
        )
    finally:
        sim.close()
        if recording is not None:
            recording.close()
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
    record: Callable[..., object],
) -> None:
    """Write the checklists the scenarios lack (see `ensure_criteria`), then run the episodes.

    `record` saves the run's record again when the teacher wrote a checklist (it is part of what ran).
    """
    from coachlab.experiments.distill import add_criteria

    before = dict(exp.scenarios)
    await add_criteria(exp, [p.scenario for p in todo], dict(backends), root, "teacher")
    if exp.scenarios != before:
        record(continuing=False)
    todo = [dataclasses.replace(p, scenario=exp.scenarios.get(p.scenario.id, p.scenario)) for p in todo]
    await sim.run(todo, concurrency=concurrency)


def _prepare(
    experiment: Path,
    out: Path | None,
    overwrite: bool,
    dry_run: bool,
    names: list[str],
    teacher: str,
    *,
    recording: Replay | None = None,
    library: bool = False,
) -> tuple[Experiment, Path, dict[str, Backend]]:
    """Load the experiment, pick the run folder, build the backends (scripted for --dry-run, recorded for --replay).

    `library`: a replay of an evaluation starts from the recorded library.
    """
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.simulate import build_backends
    from coachlab.testing import dry_run_clients

    exp = _dry(load_experiment(experiment), dry_run)
    root = out or run_folder(exp, dry_run=dry_run, replay=recording)
    if recording is not None:
        recording.prepare(root, overwrite=overwrite, library=library)
        backends = recording.backends(exp, names)
    else:
        if overwrite and root.exists():
            shutil.rmtree(root)
        clients = dry_run_clients(names, strong=[teacher]) if dry_run else None
        backends = build_backends(exp, names, clients=clients)
    _mode_line(dry_run, recording)
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
    dry_run: Annotated[
        bool, typer.Option(help="Scripted models: checks the whole loop fast (default folder runs/<name>-dry-run).")
    ] = False,
    replay: ReplayFrom = None,
) -> None:
    """Grow the scenario tree and the strategy library (the distillation loop)."""
    from coachlab.experiments.simulate import elapsed

    start = time.perf_counter()
    _check_retry(resume, retry_failed)
    recording = open_replay(replay, resume=resume, dry_run=dry_run)
    again = f"coachlab train {experiment}" + (" --dry-run" if dry_run else "") + (f" --out {out}" if out else "")
    try:
        _train(
            experiment, out, resume=resume, retry_failed=retry_failed, overwrite=overwrite, dry_run=dry_run,
            again=again, recording=recording,
        )  # fmt: skip
    finally:
        if recording is not None:
            recording.close()
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
    recording: Replay | None = None,
) -> Path:
    """Run `train` and print its summary; returns the run folder."""
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.distill import RunLayout, train_experiment, train_roots
    from coachlab.experiments.progress import ProgressDisplay

    cfg = load_experiment(experiment).config
    if cfg.train is None:
        raise UsageError(f"{experiment}: no `train:` section; add one to run coachlab train.")
    names = ["customer", "judge", cfg.train.student, cfg.train.teacher]
    exp, root, backends = _prepare(experiment, out, overwrite, dry_run, names, cfg.train.teacher, recording=recording)
    resume = resume or recording is not None  # a replay continues from the recording's record
    console.print(f"[bold]{exp.config.name}[/bold]: training on {', '.join(s.id for s in train_roots(exp))} -> {root}")
    try:
        with ProgressDisplay(None, console=console, label="train episodes") as display:
            summary = run_closing(
                backends,
                train_experiment(
                    exp, backends, run_dir=root, resume=resume, retry_failed=retry_failed,
                    use_cache=not (dry_run or recording), observers=[display],
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
    dry_run: Annotated[
        bool, typer.Option(help="Scripted models: checks the pipeline fast (default folder runs/<name>-dry-run).")
    ] = False,
    replay: ReplayFrom = None,
) -> None:
    """Evaluate held-out scenarios under baseline / generic / library / teacher and print gap closed."""
    from coachlab.experiments.simulate import elapsed

    start = time.perf_counter()
    _check_retry(resume, retry_failed)
    recording = open_replay(replay, resume=resume, dry_run=dry_run)
    try:
        _evaluate(
            experiment,
            out,
            resume=resume,
            retry_failed=retry_failed,
            overwrite=overwrite,
            concurrency=concurrency,
            dry_run=dry_run,
            again=f"coachlab evaluate {experiment}"
            + (" --dry-run" if dry_run else "")
            + (f" --out {out}" if out else ""),
            recording=recording,
        )
    finally:
        if recording is not None:
            recording.close()
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
    recording: Replay | None = None,
) -> Path:
    """Run `evaluate` and print its table; returns the results folder (deleted first with `overwrite`)."""
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.distill import RunLayout, evaluate_experiment
    from coachlab.experiments.evaluate_markdown import to_markdown
    from coachlab.experiments.progress import ProgressDisplay

    cfg = load_experiment(experiment).config
    if cfg.evaluate is None:
        raise UsageError(f"{experiment}: no `evaluate:` section; add one to run coachlab evaluate.")
    names = ["customer", "judge", *cfg.evaluate.students, cfg.evaluate.teacher]
    exp, root, backends = _prepare(
        experiment, out, overwrite and recording is not None, dry_run, names, cfg.evaluate.teacher,
        recording=recording, library=True,
    )  # fmt: skip
    if recording is not None:
        resume = True  # a replay continues from the recording's record
    elif overwrite and RunLayout(root).evaluation.exists():
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
                    use_cache=not (dry_run or recording),
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
    dry_run: Annotated[
        bool, typer.Option(help="Scripted models: checks the whole loop fast (default folder runs/<name>-dry-run).")
    ] = False,
    replay: ReplayFrom = None,
) -> None:
    """The whole loop: train (tree + library), then evaluate on held-out scenarios, then say where it all is."""
    start = time.perf_counter()
    _check_retry(resume, retry_failed)
    recording = open_replay(replay, resume=resume, dry_run=dry_run)
    try:
        _distill(experiment, out, resume=resume, retry_failed=retry_failed, overwrite=overwrite, dry_run=dry_run,
                 recording=recording, start=start)  # fmt: skip
    finally:
        if recording is not None:
            recording.close()


def _distill(
    experiment: Path,
    out: Path | None,
    *,
    resume: bool,
    retry_failed: bool,
    overwrite: bool,
    dry_run: bool,
    recording: Replay | None,
    start: float,
) -> None:
    """Run `distill`: train, then evaluate, then say where everything is."""
    from coachlab.experiments.distill import RunLayout, evaluated_version, evaluation_outdated
    from coachlab.experiments.simulate import elapsed
    from coachlab.library import LibraryStore

    again = f"coachlab distill {experiment}" + (" --dry-run" if dry_run else "") + (f" --out {out}" if out else "")
    root = _train(
        experiment, out, resume=resume, retry_failed=retry_failed, overwrite=overwrite, dry_run=dry_run, again=again,
        recording=recording,
    )  # fmt: skip
    console.print(f"[bold]Training done in {elapsed(start)}[/bold]; evaluating on the held-out scenarios.")
    layout = RunLayout(root)
    was, now = evaluated_version(layout), LibraryStore(layout.library).load().version
    stale = resume and evaluation_outdated(layout)
    if stale:  # training changed the library (a node redone by --retry-failed): the old numbers measure another one
        console.print(f"The library changed since the last evaluation (v{was} -> v{now}): evaluating from the start.")
    _evaluate(
        experiment, root, resume=resume, retry_failed=retry_failed, overwrite=stale, concurrency=None,
        dry_run=dry_run, again=again, recording=recording,
    )  # fmt: skip
    console.print(f"\n[bold]Finished in {elapsed(start)}[/bold]. Where things are:")
    console.print(f"  scenario tree:    {layout.tree}")
    console.print(f"  strategy library: {layout.library}/   (coachlab library list {root})")
    console.print(f"  results:          {layout.evaluation}/results.md and results.json")
    console.print(f"  transcripts:      {layout.train}/transcripts/ and {layout.evaluation}/transcripts/")


app.command("validate")(validate)


def stop_on_sigterm() -> None:
    """Make SIGTERM stop a run as Ctrl-C does: saved, one line on how to resume, exit 130.

    `kill`, `docker stop`, systemd and batch schedulers send SIGTERM, whose default ends the process
    on the spot: the episode in flight is lost (resume redoes it) and nothing says how to go on. Call
    from the main thread, before the run starts.
    """

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def main() -> None:
    """Entry point: run the app, turning coachlab errors into one-line messages."""
    stop_on_sigterm()
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
