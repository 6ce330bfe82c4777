"""The app that gathers every command, and the entry point `main`.

Each command lives in its own module of this package: `simulate`, `distill` (train, evaluate,
distill), `authoring` (validate, persona), `models`, `library`, `judge`, `viz` (report, tree) and
`serve`; what they share is in `support`.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings

import typer

from coachlab.cli.authoring import persona_app, validate
from coachlab.cli.distill import distill, evaluate, train
from coachlab.cli.judge import judge_app
from coachlab.cli.library import library_app
from coachlab.cli.models import models_app
from coachlab.cli.serve import serve
from coachlab.cli.simulate import simulate
from coachlab.cli.support import err
from coachlab.cli.viz import report, tree_app
from coachlab.errors import CoachlabError

__all__ = ["app", "main", "stop_on_sigterm"]

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
# `coachlab --help` lists the commands in this order.
app.command("report")(report)
app.command("serve")(serve)
app.command("simulate")(simulate)
app.command("train")(train)
app.command("evaluate")(evaluate)
app.command("distill")(distill)
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
