"""What the command modules share: the consoles, the run options, running work, Ctrl-C, --dry-run.

Used by the run commands (`simulate`, `distill`), by `judge` and `library` (`run_closing`) and by
the entry point in `coachlab.cli.app` (`err`); imports none of them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from coachlab.errors import UsageError

if TYPE_CHECKING:
    from coachlab.experiments.config import Experiment
    from coachlab.experiments.replay import Replay
    from coachlab.llm import Backend

__all__ = [
    "ReplayFrom",
    "RetryFailed",
    "check_retry",
    "console",
    "dry",
    "err",
    "interrupted",
    "mode_line",
    "run_closing",
]

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


def interrupted(message: str) -> NoReturn:
    """Ctrl-C: one line on stderr saying what is kept and how to resume, then exit 130 (no traceback)."""
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(130)


def dry(exp: Experiment, dry_run: bool) -> Experiment:
    """With --dry-run, the checklist's similarity gate is off: scripted lines resemble no example line."""
    if dry_run:
        exp.config = exp.config.model_copy(update={"judge": exp.config.judge.model_copy(update={"gate": "off"})})
    return exp


def check_retry(resume: bool, retry_failed: bool) -> None:
    """Refuse --retry-failed without --resume (a `UsageError`)."""
    if retry_failed and not resume:
        raise UsageError("--retry-failed re-runs what an earlier run could not finish: use it with --resume.")


def mode_line(dry_run: bool, replay: Replay | None) -> None:
    """Say up front when no model is measured: a --dry-run, or a --replay of a recording."""
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
