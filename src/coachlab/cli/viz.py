"""Commands: `coachlab tree show|png RUN_DIR` and `coachlab report RUN_DIR`.

Registered in the main app with::

    from coachlab.cli.viz import report, tree_app
    app.add_typer(tree_app, name="tree")
    app.command("report")(report)

The heavy imports (matplotlib, the run readers) happen inside the commands, so `coachlab --help`
stays fast. Errors are `CoachlabError`s, which the main entry point prints as one line.
"""

from __future__ import annotations

import os
import sys
import webbrowser
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["can_open_browser", "open_in_browser", "report", "tree_app", "tree_png", "tree_show"]

tree_app = typer.Typer(
    help="Look at a run's scenario tree: an interactive page (show) or a static picture (png).", no_args_is_help=True
)

console = Console(width=None if sys.stdout.isatty() else 160)

RunDir = Annotated[Path, typer.Argument(help="The run folder (runs/<name>) that coachlab train wrote.")]


def can_open_browser() -> bool:
    """True when a graphical browser can be opened without blocking (never on CI or a headless machine)."""
    if os.environ.get("CI"):
        return False
    if sys.platform not in ("darwin", "win32") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    # Console browsers (lynx, w3m, www-browser) are GenericBrowsers that would take over the terminal.
    return not (
        isinstance(browser, webbrowser.GenericBrowser) and not isinstance(browser, webbrowser.BackgroundBrowser)
    )


def open_in_browser(path: Path) -> bool:
    """Open a local file in the user's browser when one is available; True when it was opened."""
    if not can_open_browser():
        return False
    return webbrowser.get().open(path.resolve().as_uri())


@tree_app.command("show")
def tree_show(
    run_dir: RunDir,
    out: Annotated[Path | None, typer.Option(help="The HTML file to write (default: RUN_DIR/tree.html).")] = None,
    open_page: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in a browser when one is available.")
    ] = True,
) -> None:
    """Write the scenario tree as one self-contained HTML page (works offline) and open it."""
    from coachlab.viz.page import write_page
    from coachlab.viz.run import load_run

    run = load_run(run_dir)
    path = write_page(run, out or run_dir / "tree.html", run_dir=run_dir)
    strategies = len(run.library.strategies)
    console.print(f"Wrote {path}: {len(run.tree)} nodes, {strategies} strategies (library v{run.library.version}).")
    if open_page and open_in_browser(path):
        console.print("Opened it in your browser.")
    else:
        console.print(f"Open it in a browser: {path.resolve().as_uri()}", soft_wrap=True)


@tree_app.command("png")
def tree_png(
    run_dir: RunDir,
    out: Annotated[Path | None, typer.Option(help="The PNG file to write (default: RUN_DIR/tree.png).")] = None,
    dpi: Annotated[
        int | None, typer.Option(min=30, max=600, help="Resolution (default 150; 100 for big trees).")
    ] = None,
) -> None:
    """Draw the scenario tree as a static PNG picture (for papers and READMEs)."""
    from coachlab.viz.png import write_tree_png
    from coachlab.viz.run import load_run

    run = load_run(run_dir)
    path = write_tree_png(run, out or run_dir / "tree.png", dpi=dpi)
    console.print(f"Wrote {path} ({len(run.tree)} nodes).")


def report(
    run_dir: RunDir,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for report.html, report.md and the PNG charts (default: RUN_DIR/report)."),
    ] = None,
) -> None:
    """Write the experiment report (HTML and Markdown, charts as PNG): config, evaluation, tree, library, tokens."""
    from coachlab.viz.report import write_report
    from coachlab.viz.run import NO_EVALUATION, load_run

    run = load_run(run_dir)
    files = write_report(run, out)
    console.print(f"Wrote {files.html} and {files.markdown} with {len(files.images)} charts in {files.html.parent}.")
    if run.evaluation is None:
        console.print(NO_EVALUATION.format(root=run_dir), markup=False)
