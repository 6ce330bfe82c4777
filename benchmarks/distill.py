"""Train, then evaluate, an experiment on its models (embedded in the shipped files), and print every figure.

    python benchmarks/distill.py --experiment experiments/benchmark.yaml            # a new run
    python benchmarks/distill.py --experiment experiments/benchmark.yaml --resume   # continue it after a stop
    python benchmarks/distill.py --experiment experiments/benchmark.yaml --fresh    # delete the run, start again

It runs what `coachlab distill EXPERIMENT --out DIR [--resume]` runs: `train` grows the scenario tree
and the strategy library, then `evaluate` runs the held-out scenarios under the experiment's
conditions (by default baseline / generic / library / oracle / placebo / teacher; a resumed run
continues both; an evaluation of a library that training has changed since is redone from the
start). The run folder (default runs/<name>-bench) is an
ordinary coachlab run: `coachlab report DIR`, `coachlab library list DIR` work on it.

At the end it prints, from the saved run folder alone (so a resumed run prints the whole run): the
wall time of each phase summed over every invocation; the tree's nodes by status; every strategy
admitted, rejected, merged or retired with its evidence; then per student the task success and
satisfaction of each condition with 95% CIs, gap closed, every arm minus baseline (paired), the
library's share of the oracle ceiling and the smallest difference the run could detect, the most
retrieved strategies' effects, the retrieval hit rate on the held-out scenarios that have a
`situation`; then simulator faults, judge errors, the judge's calibration (when
`coachlab judge calibrate EXPERIMENT --out DIR` has written calibration.json there) and tokens per
role, sent and processed by the engine where it says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import sys
import time
from collections import Counter
from collections.abc import Coroutine, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from rich.console import Console

from coachlab.cli import stop_on_sigterm
from coachlab.cli.progress import ProgressDisplay
from coachlab.environments import Observer
from coachlab.errors import CoachlabError, UsageError
from coachlab.experiments.config import Experiment, load_experiment
from coachlab.experiments.distill import Phase, distill_experiment
from coachlab.experiments.evaluate_markdown import calibration_line
from coachlab.experiments.evaluation_report import EvaluationReport
from coachlab.experiments.hit_rate import hit_rate_line
from coachlab.experiments.runfolder import RunLayout, load_calibration
from coachlab.experiments.simulate import build_backends, episode_concurrency
from coachlab.explorer.train import TrainSummary
from coachlab.llm import Backend, ModelClient, close_backends
from coachlab.schema import AuditStatus, Strategy
from coachlab.viz.run import NO_EVALUATION, RunData, load_run, role_costs

TIMES = "distill-bench.json"
"""Wall time per phase, summed over every invocation on the run folder (the only figure coachlab does not save)."""
PHASES = ("train", "evaluate")
TOP_EFFECTS = 5
"""Per-strategy effects printed per student (most retrieved first; the rest are in evaluation/results.md)."""

progress = Console(stderr=True)


# -- running ----------------------------------------------------------------------------------------


def _times(root: Path) -> dict[str, float]:
    try:
        data: object = json.loads((root / TIMES).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in cast("dict[object, object]", data).items() if isinstance(v, int | float)}


def _save_times(root: Path, times: Mapping[str, float]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / TIMES).write_text(json.dumps(times, indent=1) + "\n", encoding="utf-8")


def _count_invocation(root: Path) -> None:
    times = _times(root)
    _save_times(root, {**times, "invocations": times.get("invocations", 0) + 1})


@contextlib.contextmanager
def _clock(root: Path, phase: str) -> Generator[None]:
    """Add the wall time of `phase` to the run folder's TIMES file, however the phase ends (Ctrl-C included)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        times = _times(root)
        _save_times(root, {**times, phase: times.get(phase, 0.0) + time.perf_counter() - start})


async def _closing(backends: Mapping[str, Backend], work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    finally:
        await close_backends(backends.values())


async def distill(exp: Experiment, backends: dict[str, Backend], root: Path, *, resume: bool, use_cache: bool) -> None:
    """Train, then evaluate, in `root` (what `coachlab distill --out ROOT [--resume]` runs), timing each phase."""
    _count_invocation(root)
    labels = {"train": "train episodes", "evaluate": "evaluation episodes"}

    @contextlib.contextmanager
    def watch(phase: Phase) -> Generator[Sequence[Observer]]:
        with _clock(root, phase), ProgressDisplay(None, console=progress, label=labels[phase]) as display:
            yield [display]

    def trained(summary: TrainSummary, restarted: tuple[int | None, int] | None) -> None:
        if restarted is not None:
            progress.print("The library changed since the last evaluation: evaluating from the start.")

    await distill_experiment(
        exp,
        backends,
        run_dir=root,
        resume=resume,
        concurrency=episode_concurrency(exp.config.simulate.concurrency, backends.values()),
        use_cache=use_cache,
        watch=watch,
        trained=trained,
    )


# -- printing, from the saved run folder ------------------------------------------------------------------


def _minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f} min"


def _strategy_lines(s: Strategy) -> list[str]:
    lines = [f"  {s.status.value} {s.id}: {s.situation} -> {s.guidance}"]
    if s.evidence is not None:
        lines.append(f"    evidence: {s.evidence.summary}")
    for m in s.merged:
        evidence = m.evidence.summary if m.evidence is not None else "no evidence"
        lines.append(f"    merged {m.candidate_id} (similarity {m.similarity:.2f}): {evidence}")
    if s.status is AuditStatus.RETIRED and s.audit:
        lines.append(f"    retired by {s.audit[-1].by}: {s.audit[-1].why}")
    return lines


def _train_lines(run: RunData) -> list[str]:
    nodes = list(run.tree.nodes())
    statuses = Counter(n.status.value for n in nodes)
    out = [
        f"train: {len(nodes)} nodes ({', '.join(f'{v} {k}' for k, v in sorted(statuses.items())) or 'none'}), "
        f"{sum(n.depth == 0 for n in nodes)} roots, depth {max((n.depth for n in nodes), default=0)}"
    ]
    strategies = run.library.strategies
    counts = Counter(s.status for s in strategies)
    merged = sum(len(s.merged) for s in strategies)
    out.append(
        f"strategies (library v{run.library.version}): admitted {counts[AuditStatus.APPROVED]}, rejected "
        f"{counts[AuditStatus.REJECTED]}, merged into another {merged}, retired {counts[AuditStatus.RETIRED]}, "
        f"proposed {counts[AuditStatus.PROPOSED]}"
    )
    order = [AuditStatus.APPROVED, AuditStatus.RETIRED, AuditStatus.PROPOSED, AuditStatus.REJECTED]
    for s in sorted(strategies, key=lambda s: (order.index(s.status), s.id)):
        out += _strategy_lines(s)
    return out


def _student_lines(report: EvaluationReport) -> list[str]:
    measure = report.primary.replace("_", " ")
    out: list[str] = []
    for s in report.students:
        out.append(f"student {s.student}:")
        rows = [*s.rows, *([report.teacher] if report.teacher is not None else [])]
        for r in rows:
            out.append(
                f"  {r.condition:>8} ({r.agent_model}): task success {r.task_success}, items met {r.items_met}, "
                f"satisfaction {r.satisfaction} "
                f"({r.judged}/{r.episodes} scored; simulator faults {r.simulator_faults}, judge errors "
                f"{r.judge_errors}, infrastructure errors {r.infrastructure_errors})"
            )
        if report.teacher is not None:
            out.append(f"  gap closed ({measure}): {s.gap_closed} over {s.gap_closed.n} paired trials")
            if s.gap_closed_items is not None:
                out.append(f"  gap closed (items met): {s.gap_closed_items}")
            if s.gap_closed_satisfaction is not None:
                out.append(f"  gap closed (satisfaction): {s.gap_closed_satisfaction}")
        out.append(f"  library minus baseline ({measure}, paired by seed, 95% CI): {s.library_minus_baseline}")
        if s.gap_closed_items is not None:
            out.append(
                f"  library minus baseline (items met, paired by seed, 95% CI): {s.library_minus_baseline_items}"
            )
        for c in s.contrasts:
            if c.condition == "library":
                continue
            items = "" if c.minus_baseline_items is None else f"; items met {c.minus_baseline_items}"
            out.append(f"  {c.condition} minus baseline ({measure}, paired by seed, 95% CI): {c.minus_baseline}{items}")
        if s.share_of_ceiling is not None:
            items = "" if s.share_of_ceiling_items is None else f"; items met {s.share_of_ceiling_items}"
            out.append(f"  share of the oracle ceiling ({measure}): {s.share_of_ceiling}{items}")
        effects = s.strategies
        if effects:
            out.append(
                f"  per-strategy effects ({min(TOP_EFFECTS, len(effects))} most retrieved of {len(effects)}; "
                "all in evaluation/results.md):"
            )
            for e in effects[:TOP_EFFECTS]:
                verdict = "harmful" if e.harmful else e.direction
                out.append(
                    f"    {e.strategy_id}, shown in {e.episodes} episodes ({e.turns} turns), {verdict}: {e.evidence()}"
                )
        if any(r.condition == "library" for r in s.rows):
            out.append(f"  {hit_rate_line(s.student, s.retrieval)}")
    if report.min_detectable_difference is not None:
        out.append(
            f"smallest difference in {measure} this run could detect (80% power, 95% confidence, scenarios as "
            f"clusters): {report.min_detectable_difference:.2f}"
        )
    out.append(
        f"simulator faults: {report.simulator_faults}; judge errors: {report.judge_errors}; infrastructure errors: "
        f"{report.infrastructure_errors} (never scored, never taught from)"
    )
    return out


def _token_lines(run: RunData) -> list[str]:
    out = ["tokens per role (cached calls included; processed: prompt tokens the engine did not take from its cache):"]
    for c in sorted(role_costs(run), key=lambda c: (c.phase != "train", c.role, c.model)):
        u = c.usage
        processed = "n/a" if u.prompt_processed is None else f"{u.prompt_processed:,}"
        out.append(
            f"  {c.phase:>8} {c.role:<12} {c.model:<12} calls {u.calls:>6,}  prompt sent {u.prompt_tokens:>10,}  "
            f"processed {processed:>10}  completion {u.completion_tokens:>9,}"
        )
    return out


def summary(root: Path, experiment: Path) -> list[str]:
    """Every figure of the run in `root`, read from its saved files (lines to print)."""
    run = load_run(root)
    out = [f"== {run.name}: {root} =="]
    if run.banner is not None:
        out.append(run.banner)
    times = _times(root)
    phases = [times.get(p) for p in PHASES]
    total = sum(t for t in phases if t is not None) if any(t is not None for t in phases) else None
    out.append(
        "time: "
        + ", ".join(f"{p} {_minutes(t)}" for p, t in zip(PHASES, phases, strict=True))
        + f", total {_minutes(total)} (wall time over {int(times.get('invocations', 0))} invocation(s))"
    )
    out += _train_lines(run)
    report = run.evaluation
    if report is None:
        out.append(NO_EVALUATION.format(root=root))
    else:
        out.append(f"evaluation of library v{report.library_version} on the held-out scenarios:")
        out += _student_lines(report)
    calibration = load_calibration(root)
    if calibration is not None:
        out.append(calibration_line(calibration))
    else:
        out.append(
            f"The judge has not been calibrated for this run: `coachlab judge calibrate {experiment} --out {root}` "
            "writes calibration.json there, and this script prints its figures."
        )
    out += _token_lines(run)
    return out


# -- the command ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, clients: Mapping[str, ModelClient] | None = None) -> int:
    """Run the benchmark; `clients` replace the experiment's models by name (tests). Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", type=Path, default=Path("experiments/quickstart.yaml"))
    parser.add_argument("--out", type=Path, help="The run folder (default runs/<experiment name>-bench).")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="Continue the run in --out (train, then evaluate).")
    again.add_argument("--fresh", action="store_true", help="Delete the run in --out first.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    experiment: Path = args.experiment
    try:
        exp = load_experiment(experiment)
        cfg = exp.config
        if cfg.train is None or cfg.evaluate is None:
            raise UsageError(f"{experiment}: the benchmark needs `train:` and `evaluate:` sections.")
        root: Path = args.out or Path("runs") / f"{cfg.name}-bench"
        if args.fresh:
            shutil.rmtree(root, ignore_errors=True)
        elif not args.resume and RunLayout(root).tree.exists():
            raise UsageError(f"{root} already holds a run: pass --resume to continue it, or --fresh to start again.")
        names = list(
            dict.fromkeys(
                [
                    "customer",
                    "judge",
                    cfg.train.student,
                    cfg.train.teacher,
                    *cfg.evaluate.students,
                    cfg.evaluate.teacher,
                ]
            )
        )
        backends = build_backends(exp, names, clients=clients)
    except CoachlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_closing(backends, distill(exp, backends, root, resume=args.resume, use_cache=clients is None)))
        lines = summary(root, experiment)
    except KeyboardInterrupt:
        print(
            f"Interrupted: the run is saved in {root}. Continue it with: python benchmarks/distill.py "
            f"--experiment {experiment} --out {root} --resume",
            file=sys.stderr,
        )
        return 130
    except CoachlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    stop_on_sigterm()  # `kill PID` saves the run as Ctrl-C does
    sys.exit(main())
