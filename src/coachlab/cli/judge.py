"""Commands: `coachlab judge calibrate EXPERIMENT`: how far to trust the experiment's judge.

Registered in the main app (`coachlab.cli`) with `app.add_typer(judge_app, name="judge")`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from coachlab.cli.support import run_closing
from coachlab.errors import UsageError

__all__ = ["judge_app"]

judge_app = typer.Typer(help="Check the judge: calibrate it on the labelled transcripts.", no_args_is_help=True)

console = Console(width=None if sys.stdout.isatty() else 160)


@judge_app.command()
def calibrate(
    experiment: Annotated[
        Path, typer.Argument(help="The experiment YAML file (its `judge` model and `judge:` section).")
    ],
    votes: Annotated[
        int | None, typer.Option(help="Judge votes per transcript (default: the file's judge.votes).")
    ] = None,
    gate: Annotated[
        str | None, typer.Option(help="Similarity gate: auto, embedding or off (default: the file's judge.gate).")
    ] = None,
    cases: Annotated[
        Path | None, typer.Option(help="A labelled set in the same format (default: the one shipped with coachlab).")
    ] = None,
    only: Annotated[
        str | None, typer.Option(help="Comma-separated scenario ids: calibrate on these cases only.")
    ] = None,
    compare: Annotated[bool, typer.Option(help="Also measure the pairwise comparer (both orders).")] = True,
    out: Annotated[Path | None, typer.Option(help="Where to write calibration.json (default: runs/<name>/).")] = None,
    dry_run: Annotated[bool, typer.Option(help="A scripted judge: checks the command fast.")] = False,
) -> None:
    """Run the judge on labelled transcripts; print item accuracy, ordering, agreement, position bias, time."""
    from coachlab.experiments.calibrate import run_calibration, to_text
    from coachlab.experiments.config import load_experiment
    from coachlab.experiments.criteria import ensure_examples
    from coachlab.experiments.results import write_json_atomic
    from coachlab.experiments.simulate import build_backends
    from coachlab.judging.calibration import CalibrationReport, CalibrationSet, load_calibration_set
    from coachlab.judging.gate import load_gate
    from coachlab.testing import dry_run_clients

    start = time.perf_counter()
    exp = load_experiment(experiment)
    judging = exp.config.judge
    if votes is not None:
        if not 1 <= votes <= 15:
            raise UsageError("--votes must be between 1 and 15.")
        judging = judging.model_copy(update={"votes": votes})
    kind: Literal["auto", "embedding", "off"] = judging.gate
    if gate is not None:
        if gate not in ("auto", "embedding", "off"):
            raise UsageError(f"--gate must be auto, embedding or off, not {gate!r}.")
        kind = gate
    labelled = load_calibration_set(cases)
    if only:
        wanted = {s.strip() for s in only.split(",") if s.strip()}
        kept = [c for c in labelled.cases if c.scenario in wanted]
        if not kept:
            raise UsageError(f"--only {only}: no labelled case is about these scenarios.")
        labelled = CalibrationSet(cases=kept)
    missing = sorted({c.scenario for c in labelled.cases} - set(exp.scenarios))
    if missing:
        raise UsageError(f"{experiment}: the calibration set needs scenarios the experiment does not load: {missing}")
    roles = ["judge", "customer"] if judging.satisfaction == "customer" else ["judge"]  # the customer: the survey
    # The teacher writes each item's extra example lines once (saved in the run folder, as train and evaluate do).
    teacher = exp.config.train.teacher if exp.config.train else "teacher"
    if judging.examples and teacher in exp.config.models and teacher not in roles:
        roles.append(teacher)
    backends = build_backends(exp, roles, clients=dry_run_clients(roles) if dry_run else None)
    similarity = load_gate(kind)
    rater = f"; satisfaction: the survey of {backends['customer'].identity}" if "customer" in backends else ""
    console.print(f"Calibrating {backends['judge'].identity}{rater} on {len(labelled.cases)} labelled transcripts ...")
    done = 0

    def tick(_: str) -> None:
        nonlocal done
        done += 1
        if done % 7 == 0:
            console.print(f"  {done} judged ({time.perf_counter() - start:.0f} s)")

    async def calibrate_run() -> CalibrationReport:
        if judging.examples:
            scenarios = [exp.scenarios[s] for s in sorted({c.scenario for c in labelled.cases})]
            exp.scenarios.update(
                await ensure_examples(
                    scenarios, run_dir=out or exp.output_dir, backends=backends, teacher=teacher, count=judging.examples
                )
            )
        return await run_calibration(
            exp, backends, labelled, judging=judging, similarity=similarity, compare=compare, progress=tick
        )

    try:
        report = run_closing(backends, calibrate_run())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    console.print(to_text(report), markup=False)
    target = (out or exp.output_dir) / "calibration.json"
    write_json_atomic(target, report)
    console.print(f"Saved: {target}   ({time.perf_counter() - start:.0f} s in all)")
