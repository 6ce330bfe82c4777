"""Commands: `coachlab persona new|validate|draft` and `coachlab validate`: writing and checking YAML.

Registered in the main app (`coachlab.cli`): `persona_app` as `coachlab persona`,
`validate` as `coachlab validate`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from coachlab.errors import UsageError

__all__ = ["persona_app", "validate"]

persona_app = typer.Typer(help="Author and check customer personas.", no_args_is_help=True)

# Logs and CI keep whole lines: a console that is not a terminal gets a wide fixed width.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


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


def validate(
    files: Annotated[list[Path], typer.Argument(help="Experiment, scenario or persona files (or folders of them).")],
) -> None:
    """Check any coachlab YAML file (the kind is recognised from its content)."""
    from coachlab.experiments.authoring import validate_files

    if validate_files(files, kind="auto", console=console, err=err):
        raise typer.Exit(1)
