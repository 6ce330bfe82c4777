"""Command: `coachlab simulate EXPERIMENT`: every scenario x agent x trial of an experiment, then the table.

Registered in the main app (`coachlab.cli`) with `app.command("simulate")(simulate)`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
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
    from coachlab.experiments.config import Experiment
    from coachlab.experiments.simulate import EpisodePlan, Simulation
    from coachlab.llm import Backend

__all__ = ["simulate"]


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
    from coachlab.cli.progress import ProgressDisplay
    from coachlab.cli.report_table import print_summary
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.guard import record_run
    from coachlab.experiments.runfolder import saved_criteria
    from coachlab.experiments.simulate import (
        Simulation,
        build_backends,
        elapsed,
        episode_concurrency,
        overwrite_run,
        plan_episodes,
    )
    from coachlab.testing import dry_run_clients

    start = time.perf_counter()
    check_retry(resume, retry_failed)
    recording = open_replay(replay, resume=resume, dry_run=dry_run)
    exp = dry(load_experiment(experiment), dry_run)
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
        record_run,
        exp,
        backends,
        root=root,
        command="simulate",
        simulate={"trials": n_trials, "scenarios": [s.id for s in chosen]},
    )
    record(continuing=resume and sim.paths.episodes.exists())
    sim.save_config(keep_existing=resume)
    mode_line(dry_run, recording)
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
                _simulate_with_criteria(
                    exp,
                    sim,
                    todo,
                    backends,
                    root,
                    episode_concurrency(concurrency or cfg.concurrency, backends.values()),
                    record,
                ),
            )
    except KeyboardInterrupt:
        interrupted(
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
    from coachlab.experiments.runfolder import add_criteria

    before = dict(exp.scenarios)
    await add_criteria(exp, [p.scenario for p in todo], dict(backends), root, "teacher")
    if exp.scenarios != before:
        record(continuing=False)
    todo = [dataclasses.replace(p, scenario=exp.scenarios.get(p.scenario.id, p.scenario)) for p in todo]
    await sim.run(todo, concurrency=concurrency)
