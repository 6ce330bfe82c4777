"""Commands: `coachlab library list|show|approve|reject|edit|verify|diff|export RUN_DIR`: audit a run's library.

Registered in the main app (`coachlab.cli`) with `app.add_typer(library_app, name="library")`.
Every change writes a new library version with the decision in each strategy's audit trail.
Errors are `CoachlabError`s, which the main entry point prints as one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer
from rich.console import Console

from coachlab.cli.support import run_closing
from coachlab.errors import UsageError
from coachlab.schema import AuditStatus

if TYPE_CHECKING:
    from coachlab.experiments.effects import StrategyEffect
    from coachlab.experiments.evaluation_report import EvaluationReport

__all__ = ["library_app"]

library_app = typer.Typer(
    help="Audit the strategy library of a run: list, show, approve, reject, edit, verify, diff, export.",
    no_args_is_help=True,
)

console = Console(width=None if sys.stdout.isatty() else 160)

RunDir = Annotated[Path, typer.Argument(help="The run folder (runs/<name>).")]
StrategyId = Annotated[str, typer.Argument(help="The strategy id (see `coachlab library list`).")]
By = Annotated[str, typer.Option("--by", help="Who decides (recorded in the audit trail).")]


def _store(run_dir: Path):
    from coachlab.experiments.runfolder import RunLayout
    from coachlab.library import LibraryStore

    store = LibraryStore(RunLayout(run_dir).library)
    if not store.versions():
        raise UsageError(f"{run_dir}: no strategy library here (run coachlab train first, or check the folder).")
    return store


def _evaluation(run_dir: Path) -> EvaluationReport | None:
    """The run's latest evaluation results (None when there is none; a note when they cannot be read)."""
    from coachlab.experiments.evaluation_report import EvaluationReport
    from coachlab.experiments.runfolder import RunLayout

    path = RunLayout(run_dir).evaluation / "results.json"
    if not path.is_file():
        return None
    try:
        return EvaluationReport.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        console.print(f"{path}: not readable evaluation results, so no per-strategy figures ({type(exc).__name__}).")
        return None


def _figures(effects: list[StrategyEffect]) -> tuple[str, str]:
    """The `retrieved` and `held-out effect` cells of one strategy, a line per student."""
    many = len(effects) > 1
    retrieved: list[str] = []
    effect: list[str] = []
    for e in effects:
        who = f"{e.student}: " if many else ""
        measure = "task success" if e.primary == "task_success" else "satisfaction"
        retrieved.append(f"{who}{e.episodes} episodes ({e.turns} turns)")
        verdict = "harmful" if e.harmful else e.direction
        effect.append(f"{who}{measure} {e.effect}, {verdict}")
    return "\n".join(retrieved) or "-", "\n".join(effect) or "-"


@library_app.command("list")
def library_list(
    run_dir: RunDir,
    status: Annotated[str | None, typer.Option(help="Only proposed, approved, rejected or retired.")] = None,
    version: Annotated[int | None, typer.Option(help="A past version (default: the latest).")] = None,
) -> None:
    """List the strategies: status, measured uplift, and what the latest evaluation measured for each."""
    from rich.table import Table

    from coachlab.experiments.runfolder import RunLayout

    if status is not None and status not in {s.value for s in AuditStatus}:
        raise UsageError(f"--status {status}: use one of {', '.join(s.value for s in AuditStatus)}.")
    lib = _store(run_dir).load(version)
    report = _evaluation(run_dir)
    effects: dict[str, list[StrategyEffect]] = {}
    for student in report.students if report is not None else []:
        for e in student.strategies:
            effects.setdefault(e.strategy_id, []).append(e)
    table = Table(title=f"library v{lib.version}: {lib.note}")
    for col in ("id", "status", "situation", "guidance", "evidence"):
        table.add_column(col, overflow="fold")
    if report is not None:  # figures stay on one line each: a reader compares them down the column
        table.add_column("held out: shown in", no_wrap=True)
        table.add_column("effect: shown - not shown [95% CI]", no_wrap=True)
    for s in lib.strategies:
        if status and s.status.value != status:
            continue
        row = [s.id, s.status.value, s.situation, s.guidance, s.evidence.summary if s.evidence else "none"]
        if report is not None:
            row += _figures(effects.get(s.id, []))
        table.add_row(*row)
    console.print(table)
    if report is not None:
        retired = f"; it retired {', '.join(report.retired)}" if report.retired else ""
        console.print(
            f"Held-out figures: the evaluation of library v{report.library_version} "
            f"({RunLayout(run_dir).evaluation}/results.md){retired}."
        )


@library_app.command("show")
def library_show(run_dir: RunDir, strategy_id: StrategyId) -> None:
    """Show one strategy: text, provenance, evidence and audit trail."""
    s = _store(run_dir).load().get(strategy_id)
    console.print_json(s.model_dump_json())
    if s.provenance is not None:
        origins = f"Origins: {s.provenance.node_id or s.provenance.scenario_id} (this text)"
        if s.merged:
            origins += "; merged: " + ", ".join(
                m.candidate_id + (f" from {m.provenance.node_id or m.provenance.scenario_id}" if m.provenance else "")
                for m in s.merged
            )
        console.print(origins, markup=False, highlight=False)
    console.print(f"Approve: coachlab library approve {run_dir} {s.id} --by NAME --why '...'")
    console.print(f"Reject:  coachlab library reject {run_dir} {s.id} --by NAME --why '...'")


def _decide(run_dir: Path, strategy_id: str, status: str, *, by: str, why: str) -> None:
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
    """Edit a strategy's text; it goes back to proposed, without evidence, until verified and approved."""
    v = _store(run_dir).edit(strategy_id, by=by, situation=situation, guidance=guidance)
    console.print(f"{strategy_id}: edited by {by}, now proposed (library v{v.version}).")
    console.print(
        f"Its evidence measured the old text (kept in its attempts): measure the new one with "
        f"coachlab library verify {run_dir} {strategy_id} --by {by}",
        soft_wrap=True,
        markup=False,
    )


def _trained_with(run_dir: Path) -> Path:
    """The experiment file the run's library was trained with (resolved.json's train record)."""
    from coachlab.experiments.resolved import RESOLVED_FILE, load_record

    record = load_record(run_dir)
    if record is None or record.train is None:
        raise UsageError(f"{run_dir}: no train record ({RESOLVED_FILE}); pass the experiment file with --experiment.")
    return Path(record.train.source)


@library_app.command("verify")
def library_verify(
    run_dir: RunDir,
    strategy_id: StrategyId,
    by: By,
    experiment: Annotated[
        Path | None,
        typer.Option(help="The experiment file the run was trained with (default: the one its resolved.json names)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Scripted models: for a run trained with --dry-run.")] = False,
) -> None:
    """Verify a strategy again on the node it came from: an edit must earn its own evidence (runs the models)."""
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.library_verify import verify_strategy
    from coachlab.experiments.simulate import build_backends
    from coachlab.testing import dry_run_clients

    _store(run_dir)
    exp = load_experiment(experiment or _trained_with(run_dir))
    train = exp.config.train
    if train is None:
        raise UsageError(f"{exp.path}: no `train:` section; verify uses its `verify:` settings.")
    if dry_run:  # as coachlab train --dry-run: scripted lines resemble no checklist example
        exp.config = exp.config.model_copy(update={"judge": exp.config.judge.model_copy(update={"gate": "off"})})
    names = ["customer", "judge", train.student, train.teacher]
    clients = dry_run_clients(names, strong=[train.teacher]) if dry_run else None
    backends = build_backends(exp, names, clients=clients)
    console.print(f"Verifying {strategy_id} again ({train.verify.criterion}, {train.verify.trials} trials per arm)...")
    outcome = run_closing(
        backends,
        verify_strategy(exp, backends, run_dir=run_dir, strategy_id=strategy_id, by=by, use_cache=not dry_run),
    )
    s = outcome.strategy
    evidence = s.evidence.summary if s.evidence is not None else "none"
    console.print(
        f"{strategy_id}: {'accepted' if outcome.accepted else 'rejected'} on node {outcome.node_id} ({evidence}); "
        f"now {s.status.value} (library v{outcome.library_version}).",
        markup=False,
        soft_wrap=True,
    )
    if outcome.accepted and s.status is not AuditStatus.APPROVED:
        console.print(
            f"Approve: coachlab library approve {run_dir} {strategy_id} --by NAME --why '...'", soft_wrap=True
        )


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


ExportFormat = Literal["yaml", "prompt", "markdown", "jsonl", "skill"]


def _generic_size(run_dir: Path) -> int:
    """The run's `evaluate.generic_size` (what the `generic` condition showed), else 5."""
    from coachlab.yamlio import load_yaml

    path = run_dir / "experiment.yaml"
    if not path.is_file():
        return 5
    data: object = load_yaml(path, what="experiment file").data
    section = cast(dict[str, object], data).get("evaluate") if isinstance(data, dict) else None
    size = cast(dict[str, object], section).get("generic_size") if isinstance(section, dict) else None
    return size if isinstance(size, int) and size >= 1 else 5


@library_app.command("export")
def library_export(
    run_dir: RunDir,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="yaml (all fields), prompt (a fixed coaching block: the generic condition), markdown (a review "
            "document), jsonl (one strategy a line) or skill (an Agent Skills folder with SKILL.md).",
        ),
    ] = "yaml",
    out: Annotated[
        Path | None, typer.Option(help="Write to this file (default: print); for skill, the folder to write it in.")
    ] = None,
    status: Annotated[
        str, typer.Option(help="Which strategies: approved, proposed, rejected, retired or all.")
    ] = "approved",
    version: Annotated[int | None, typer.Option(help="A past version (default: the latest).")] = None,
    size: Annotated[
        int | None, typer.Option(min=1, help="prompt: strategies in the block (default: the run's generic_size, or 5).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="skill: the skill's name (default: coachlab-<run folder>).")] = None,
) -> None:
    """Export strategies: YAML, a prompt block, a Markdown review, JSONL, or an Agent Skill."""
    import re

    import yaml

    from coachlab.library.export import generic_strategies, jsonl_lines, markdown_document, prompt_block, write_skill

    if status not in ("approved", "proposed", "rejected", "retired", "all"):
        raise UsageError(f"--status {status}: use approved, proposed, rejected, retired or all.")
    if fmt in ("prompt", "skill") and status != "approved":
        raise UsageError(
            f"--format {fmt} is what an agent reads in production: approved strategies only (drop --status)."
        )
    lib = _store(run_dir).load(version)
    items = [s for s in lib.strategies if status == "all" or s.status.value == status]
    if fmt == "skill":
        slug = re.sub(r"[^a-z0-9]+", "-", run_dir.resolve().name.lower()).strip("-")
        path = write_skill(lib, out or Path("."), name=name or f"coachlab-{slug or 'library'}")
        console.print(
            f"Wrote {path} ({len(lib.with_status(AuditStatus.APPROVED))} approved strategies, library v{lib.version})."
        )
        return
    if fmt == "prompt":
        chosen = size or _generic_size(run_dir)
        items = generic_strategies(lib.strategies, chosen)
        text = prompt_block(lib, size=chosen)
        if not text:
            raise UsageError(f"library v{lib.version} has no approved strategy: nothing to put in a prompt.")
        text += "\n"
    elif fmt == "markdown":
        text = markdown_document(lib, items, title=str(run_dir))
    elif fmt == "jsonl":
        text = jsonl_lines(items)
    else:
        data = {"library_version": lib.version, "strategies": [s.model_dump(mode="json") for s in items]}
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"Wrote {len(items)} strategies ({fmt}, library v{lib.version}) to {out}.")
