"""Commands: `coachlab train|evaluate|distill EXPERIMENT`: the distillation loop and its held-out evaluation.

Registered in the main app (`coachlab.cli`) with `app.command("train")(train)` and likewise
`evaluate` and `distill`; `distill` runs the other two in turn.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from coachlab.cli.support import (
    ReplayFrom,
    RetryFailed,
    check_retry,
    console,
    dry,
    interrupted,
    mode_line,
    run_closing,
)
from coachlab.errors import UsageError
from coachlab.experiments.replay import open_replay, run_folder

if TYPE_CHECKING:
    from coachlab.environments import Observer
    from coachlab.experiments.config import Experiment
    from coachlab.experiments.replay import Replay
    from coachlab.explorer.train import TrainSummary
    from coachlab.llm import Backend

__all__ = ["distill", "evaluate", "train"]


def _prepare(
    experiment: Path,
    out: Path | None,
    overwrite: bool,
    dry_run: bool,
    names: list[str],
    strong: list[str],
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

    exp = dry(load_experiment(experiment), dry_run)
    root = out or run_folder(exp, dry_run=dry_run, replay=recording)
    if recording is not None:
        recording.prepare(root, overwrite=overwrite, library=library)
        backends = recording.backends(exp, names)
    else:
        if overwrite and root.exists():
            shutil.rmtree(root)
        clients = dry_run_clients(names, strong=strong) if dry_run else None
        backends = build_backends(exp, names, clients=clients)
    mode_line(dry_run, recording)
    for name, backend in backends.items():
        console.print(f"  {name}: {backend.identity}" + ("  [dim](dry run)[/dim]" if dry_run else ""))
    return exp, root, backends


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
    check_retry(resume, retry_failed)
    recording = open_replay(replay, resume=resume, dry_run=dry_run)
    again = f"coachlab train {experiment}" + (" --dry-run" if dry_run else "") + (f" --out {out}" if out else "")
    try:
        _train(
            experiment,
            out,
            resume=resume,
            retry_failed=retry_failed,
            overwrite=overwrite,
            dry_run=dry_run,
            again=again,
            recording=recording,
        )
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
    from coachlab.cli.progress import ProgressDisplay
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.distill import train_experiment
    from coachlab.experiments.runfolder import train_roots

    cfg = load_experiment(experiment).config
    if cfg.train is None:
        raise UsageError(f"{experiment}: no `train:` section; add one to run coachlab train.")
    names = ["customer", "judge", cfg.train.student, cfg.train.teacher]
    exp, root, backends = _prepare(experiment, out, overwrite, dry_run, names, [cfg.train.teacher], recording=recording)
    resume = resume or recording is not None  # a replay continues from the recording's record
    console.print(f"[bold]{exp.config.name}[/bold]: training on {', '.join(s.id for s in train_roots(exp))} -> {root}")
    try:
        with ProgressDisplay(None, console=console, label="train episodes") as display:
            summary = run_closing(
                backends,
                train_experiment(
                    exp,
                    backends,
                    run_dir=root,
                    resume=resume,
                    retry_failed=retry_failed,
                    use_cache=not (dry_run or recording),
                    observers=[display],
                ),
            )
    except KeyboardInterrupt:
        interrupted(f"Interrupted: the tree and library are saved in {root}. Resume with: {again} --resume")
    _print_trained(summary, root, again)
    return root


def _print_trained(summary: TrainSummary, root: Path, again: str) -> None:
    """Print what a training run did and where it is."""
    from coachlab.experiments.runfolder import RunLayout

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
    check_retry(resume, retry_failed)
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
    from coachlab.cli.progress import ProgressDisplay
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.evaluate import evaluate_experiment
    from coachlab.experiments.evaluate_markdown import to_markdown
    from coachlab.experiments.runfolder import RunLayout
    from coachlab.experiments.simulate import episode_concurrency

    cfg = load_experiment(experiment).config
    if cfg.evaluate is None:
        raise UsageError(f"{experiment}: no `evaluate:` section; add one to run coachlab evaluate.")
    names = ["customer", "judge", *cfg.evaluate.students, cfg.evaluate.teacher]
    exp, root, backends = _prepare(
        experiment,
        out,
        overwrite and recording is not None,
        dry_run,
        names,
        [cfg.evaluate.teacher],
        recording=recording,
        library=True,
    )
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
                    concurrency=episode_concurrency(concurrency or exp.config.simulate.concurrency, backends.values()),
                ),
            )
    except KeyboardInterrupt:
        interrupted(
            f"Interrupted: finished episodes are kept in {RunLayout(root).evaluation}. Resume with: {again} --resume"
        )
    console.print(to_markdown(report), markup=False)
    evaluation = RunLayout(root).evaluation
    console.print(f"Results: {evaluation}/results.json and results.md")
    return evaluation


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
    check_retry(resume, retry_failed)
    recording = open_replay(replay, resume=resume, dry_run=dry_run)
    try:
        _distill(
            experiment,
            out,
            resume=resume,
            retry_failed=retry_failed,
            overwrite=overwrite,
            dry_run=dry_run,
            recording=recording,
            start=start,
        )
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
    from coachlab.cli.progress import ProgressDisplay
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.distill import Phase, distill_experiment
    from coachlab.experiments.evaluate_markdown import to_markdown
    from coachlab.experiments.runfolder import RunLayout, train_roots
    from coachlab.experiments.simulate import elapsed, episode_concurrency

    again = f"coachlab distill {experiment}" + (" --dry-run" if dry_run else "") + (f" --out {out}" if out else "")
    cfg = load_experiment(experiment).config
    if cfg.train is None or cfg.evaluate is None:
        missing = "train" if cfg.train is None else "evaluate"
        raise UsageError(f"{experiment}: no `{missing}:` section; distill needs `train:` and `evaluate:`.")
    names = ["customer", "judge", cfg.train.student, cfg.train.teacher, *cfg.evaluate.students, cfg.evaluate.teacher]
    strong = [cfg.train.teacher, cfg.evaluate.teacher]
    exp, root, backends = _prepare(
        experiment, out, overwrite, dry_run, list(dict.fromkeys(names)), strong, recording=recording
    )
    resume = resume or recording is not None  # a replay continues from the recording's record
    layout = RunLayout(root)
    console.print(f"[bold]{exp.config.name}[/bold]: training on {', '.join(s.id for s in train_roots(exp))} -> {root}")
    phase: list[Phase] = ["train"]

    @contextlib.contextmanager
    def watch(now: Phase) -> Generator[Sequence[Observer]]:
        phase[0] = now
        label = "train episodes" if now == "train" else "evaluation episodes"
        with ProgressDisplay(None, console=console, label=label) as display:
            yield [display]

    def trained(summary: TrainSummary, restarted: tuple[int | None, int] | None) -> None:
        _print_trained(summary, root, again)
        console.print(f"[bold]Training done in {elapsed(start)}[/bold]; evaluating on the held-out scenarios.")
        if (
            restarted is not None
        ):  # a node redone by --retry-failed changed the library: the old numbers measure another
            was, now = restarted
            console.print(
                f"The library changed since the last evaluation (v{was} -> v{now}): evaluating from the start."
            )

    try:
        done = run_closing(
            backends,
            distill_experiment(
                exp,
                backends,
                run_dir=root,
                resume=resume,
                retry_failed=retry_failed,
                use_cache=not (dry_run or recording),
                concurrency=episode_concurrency(exp.config.simulate.concurrency, backends.values()),
                watch=watch,
                trained=trained,
            ),
        )
    except KeyboardInterrupt:
        if phase[0] == "train":
            interrupted(f"Interrupted: the tree and library are saved in {root}. Resume with: {again} --resume")
        interrupted(f"Interrupted: finished episodes are kept in {layout.evaluation}. Resume with: {again} --resume")
    console.print(to_markdown(done.report), markup=False)
    console.print(f"Results: {layout.evaluation}/results.json and results.md")
    console.print(f"\n[bold]Finished in {elapsed(start)}[/bold]. Where things are:")
    console.print(f"  scenario tree:    {layout.tree}")
    console.print(f"  strategy library: {layout.library}/   (coachlab library list {root})")
    console.print(f"  results:          {layout.evaluation}/results.md and results.json")
    console.print(f"  transcripts:      {layout.train}/transcripts/ and {layout.evaluation}/transcripts/")
