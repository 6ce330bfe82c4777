"""Commands: `coachlab library list|show|approve|reject|edit|diff|export RUN_DIR`: audit a run's strategy library.

Registered in the main app (`coachlab.experiments.cli`) with `app.add_typer(library_app, name="library")`.
Every change writes a new library version with the decision in each strategy's audit trail.
Errors are `CoachlabError`s, which the main entry point prints as one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from coachlab.errors import UsageError

__all__ = ["library_app"]

library_app = typer.Typer(
    help="Audit the strategy library of a run: list, show, approve, reject, edit, diff, export.", no_args_is_help=True
)

console = Console(width=None if sys.stdout.isatty() else 160)

RunDir = Annotated[Path, typer.Argument(help="The run folder (runs/<name>).")]
StrategyId = Annotated[str, typer.Argument(help="The strategy id (see `coachlab library list`).")]
By = Annotated[str, typer.Option("--by", help="Who decides (recorded in the audit trail).")]


def _store(run_dir: Path):
    from coachlab.experiments.distill import RunLayout
    from coachlab.library import LibraryStore

    store = LibraryStore(RunLayout(run_dir).library)
    if not store.versions():
        raise UsageError(f"{run_dir}: no strategy library here (run coachlab train first, or check the folder).")
    return store


@library_app.command("list")
def library_list(
    run_dir: RunDir,
    status: Annotated[str | None, typer.Option(help="Only proposed, approved or rejected.")] = None,
    version: Annotated[int | None, typer.Option(help="A past version (default: the latest).")] = None,
) -> None:
    """List the strategies with their status and measured uplift."""
    from rich.table import Table

    lib = _store(run_dir).load(version)
    table = Table(title=f"library v{lib.version}: {lib.note}")
    for col in ("id", "status", "situation", "guidance", "evidence"):
        table.add_column(col, overflow="fold")
    for s in lib.strategies:
        if status and s.status.value != status:
            continue
        table.add_row(s.id, s.status.value, s.situation, s.guidance, s.evidence.summary if s.evidence else "none")
    console.print(table)


@library_app.command("show")
def library_show(run_dir: RunDir, strategy_id: StrategyId) -> None:
    """Show one strategy: text, provenance, evidence and audit trail."""
    s = _store(run_dir).load().get(strategy_id)
    console.print_json(s.model_dump_json())
    console.print(f"Approve: coachlab library approve {run_dir} {s.id} --by NAME --why '...'")
    console.print(f"Reject:  coachlab library reject {run_dir} {s.id} --by NAME --why '...'")


def _decide(run_dir: Path, strategy_id: str, status: str, *, by: str, why: str) -> None:
    from coachlab.schema import AuditStatus

    v = _store(run_dir).set_status(strategy_id, AuditStatus(status), by=by, why=why)
    console.print(f"{strategy_id}: {status} by {by} (library v{v.version}).")


@library_app.command("approve")
def library_approve(
    run_dir: RunDir, strategy_id: StrategyId, by: By, why: Annotated[str, typer.Option(help="Why.")] = ""
) -> None:
    """Approve a strategy (writes a new library version)."""
    _decide(run_dir, strategy_id, "approved", by=by, why=why)


@library_app.command("reject")
def library_reject(
    run_dir: RunDir, strategy_id: StrategyId, by: By, why: Annotated[str, typer.Option(help="Why.")] = ""
) -> None:
    """Reject a strategy (writes a new library version; retrieval skips it)."""
    _decide(run_dir, strategy_id, "rejected", by=by, why=why)


@library_app.command("edit")
def library_edit(
    run_dir: RunDir,
    strategy_id: StrategyId,
    by: By,
    situation: Annotated[str | None, typer.Option(help="New situation text.")] = None,
    guidance: Annotated[str | None, typer.Option(help="New guidance text.")] = None,
) -> None:
    """Edit a strategy's text; it goes back to proposed until someone approves it."""
    v = _store(run_dir).edit(strategy_id, by=by, situation=situation, guidance=guidance)
    console.print(f"{strategy_id}: edited by {by}, now proposed (library v{v.version}).")


@library_app.command("diff")
def library_diff(
    run_dir: RunDir,
    old: Annotated[int, typer.Argument(help="The older version.")],
    new: Annotated[int | None, typer.Argument(help="The newer version (default: latest).")] = None,
) -> None:
    """What changed between two library versions."""
    d = _store(run_dir).diff(old, new)
    for label, ids in (("added", d.added), ("removed", d.removed), ("changed", d.changed)):
        console.print(f"{label}: {', '.join(ids) or '-'}")


@library_app.command("export")
def library_export(
    run_dir: RunDir,
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: print).")] = None,
    status: Annotated[str, typer.Option(help="Which strategies: approved, proposed, rejected or all.")] = "approved",
) -> None:
    """Export strategies as YAML (situation, guidance, evidence) for shipping or review."""
    import yaml

    lib = _store(run_dir).load()
    items = [s.model_dump(mode="json") for s in lib.strategies if status == "all" or s.status.value == status]
    text = yaml.safe_dump({"library_version": lib.version, "strategies": items}, sort_keys=False, allow_unicode=True)
    if out is None:
        console.print(text, markup=False)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"Wrote {len(items)} strategies to {out}.")
