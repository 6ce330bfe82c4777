"""Can this student be coached at all? The oracle ceiling and the placebo for each student, in whole episodes.

For each student model, every held-out scenario of the experiment is played as `evaluate` plays it
(simulated customer, the student as the service agent, the judge's checklist verdict), on the same
seeds, under the arms `baseline` (no guidance), `oracle` (the scenario's own must items as words to
say, every turn: what a perfect, case-specific coach could do) and `placebo` (as many lines of the
same form that fit none of the scenario's items); see `coachlab.experiments.controls`. No teacher,
no library and no retrieval are involved.

Oracle minus baseline is the most any library can lift this student with this prompt layout; if it
is near zero, no teacher, verification or retrieval can show an effect, and a more coachable student
is the fix. Oracle minus placebo separates the content from the extra text. Prints per student and
arm: task success and items met with scenario-clustered 95% CIs, each arm minus the baseline paired
by seed, and on items met the pairs better / worse / tied with an exact sign test.

    python benchmarks/ceiling.py [--experiment experiments/benchmark.yaml] [--students student teacher]
        [--add NAME=MODEL ...] [--arms baseline oracle placebo] [--trials 1] [--scenarios ID ...]
        [--placement system|before_last|reminder] [--out runs/<name>-ceiling] [--resume]

`--add student-1.5b=qwen2.5-coder-1.5b` adds a student entry: a copy of the experiment's `student`
entry with another embedded model, so two sizes are compared on the same settings.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast, get_args

from rich.console import Console

from coachlab.cli import stop_on_sigterm
from coachlab.cli.progress import ProgressDisplay
from coachlab.errors import CoachlabError, UsageError
from coachlab.experiments.config import Condition, EvaluateConfig, Experiment, load_experiment
from coachlab.experiments.evaluate import evaluate_experiment
from coachlab.experiments.evaluation_report import EvaluationReport
from coachlab.experiments.results import EpisodeLog
from coachlab.experiments.simulate import build_backends, episode_concurrency
from coachlab.library.retrieval import Placement
from coachlab.llm import close_backends
from coachlab.stats import sign_test

progress = Console(stderr=True)


def with_students(exp: Experiment, added: Sequence[str]) -> Experiment:
    """The experiment with a model entry per `NAME=MODEL`: the `student` entry with `model` replaced.

    Raises:
        UsageError: An item is not NAME=MODEL, or the experiment has no `student` entry to copy.
    """
    models = dict(exp.config.models)
    for item in added:
        name, sep, model = item.partition("=")
        if not sep or not name or not model:
            raise UsageError(f"--add {item!r}: write NAME=MODEL, e.g. student-1.5b=qwen2.5-coder-1.5b")
        if "student" not in models:
            raise UsageError(f"{exp.path}: --add copies the `student` model entry, and the file has none.")
        base = models["student"]
        models[name] = base.model_copy(update={"config": {**base.config, "model": model}})
    exp.config = exp.config.model_copy(update={"models": models})
    return exp


def pair_lines(report: EvaluationReport, log: EpisodeLog) -> list[str]:
    """Per student and arm: items met better / worse / tied against the baseline, pair by pair, with the sign test."""
    items: dict[tuple[str, str], dict[tuple[str, int], float]] = {}
    for e in log.read().values():
        if e.scored and e.verdict is not None and e.verdict.items_met is not None:
            items.setdefault((e.agent_model, e.condition), {})[(e.scenario_id, e.trial)] = e.verdict.items_met
    out: list[str] = []
    for s in report.students:
        base = items.get((s.student, "baseline"), {})
        for c in s.contrasts:
            arm = items.get((s.student, c.condition), {})
            keys = sorted(set(base) & set(arm))
            test = sign_test([base[k] for k in keys], [arm[k] for k in keys])
            out.append(f"  {s.student} {c.condition} vs baseline, items met pair by pair: {test}")
    return out


def summary(report: EvaluationReport, log: EpisodeLog, models: dict[str, str]) -> list[str]:
    """What the benchmark prints: rows, contrasts with CIs, pair counts."""
    out: list[str] = []
    for s in report.students:
        out.append(f"student {s.student} ({models.get(s.student, '?')}):")
        for r in s.rows:
            out.append(
                f"  {r.condition:>8}: task success {r.task_success}, items met {r.items_met} "
                f"({r.judged}/{r.episodes} scored; simulator faults {r.simulator_faults}, judge errors "
                f"{r.judge_errors}, infrastructure errors {r.infrastructure_errors})"
            )
        for c in s.contrasts:
            out.append(
                f"  {c.condition} minus baseline (paired by seed, 95% CI): task success {c.minus_baseline}; "
                f"items met {c.minus_baseline_items}"
            )
    return [*out, *pair_lines(report, log)]


async def run(exp: Experiment, root: Path, *, resume: bool) -> EvaluationReport:
    """Evaluate the arms with an empty library in `root` and return the report."""
    config = exp.config.evaluate
    assert config is not None
    backends = build_backends(exp, list(dict.fromkeys(["customer", "judge", config.teacher, *config.students])))
    try:
        with ProgressDisplay(None, console=progress, label="episodes") as display:
            return await evaluate_experiment(
                exp,
                backends,
                run_dir=root,
                resume=resume,
                concurrency=episode_concurrency(exp.config.simulate.concurrency, backends.values()),
                observers=[display],
            )
    finally:
        await close_backends(backends.values())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", type=Path, default=Path("experiments/benchmark.yaml"))
    parser.add_argument(
        "--students",
        nargs="+",
        default=None,
        help="Model entries to play the agent (default: the experiment's evaluate.students and every --add).",
    )
    parser.add_argument("--add", nargs="*", default=[], help="NAME=MODEL: a copy of the student entry, another model.")
    parser.add_argument("--arms", nargs="+", default=["baseline", "oracle", "placebo"], choices=get_args(Condition))
    parser.add_argument("--trials", type=int, default=1, help="Trials per scenario and arm (same seeds in every arm).")
    parser.add_argument("--scenarios", nargs="*", default=[], help="Scenario ids (default: evaluate.scenarios).")
    parser.add_argument("--out", type=Path, help="The run folder (default runs/<experiment name>-ceiling).")
    parser.add_argument("--resume", action="store_true", help="Continue the run in --out.")
    parser.add_argument(
        "--placement",
        choices=get_args(Placement),
        default=None,
        help="Where the strategies sit in the agent's messages (default: the file's retrieval.placement).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        exp = with_students(load_experiment(args.experiment), args.add)
        evaluate = exp.config.evaluate
        if evaluate is None:
            raise UsageError(
                f"{args.experiment}: the benchmark plays the `evaluate:` scenarios, and the file has none."
            )
        students = args.students or list(dict.fromkeys([*evaluate.students, *(a.split("=")[0] for a in args.add)]))
        missing = [s for s in students if s not in exp.config.models]
        if missing:
            raise UsageError(f"--students: no model entry {', '.join(missing)} in {args.experiment}")
        retrieval = exp.config.retrieval
        if args.placement is not None:
            retrieval = retrieval.model_copy(update={"placement": args.placement})
        exp.config = exp.config.model_copy(
            update={
                "retrieval": retrieval,
                "evaluate": EvaluateConfig(
                    scenarios=args.scenarios or evaluate.scenarios,
                    students=students,
                    teacher=evaluate.teacher,
                    conditions=cast(list[Condition], args.arms),
                    trials=args.trials,
                    seed=evaluate.seed,
                    retire=False,
                ),
            }
        )
        root: Path = args.out or Path("runs") / f"{exp.config.name}-ceiling"
        if not args.resume and (root / "evaluation" / "episodes.jsonl").exists():
            raise UsageError(f"{root} already holds a run: pass --resume to continue it, or another --out.")
        start = time.perf_counter()
        report = asyncio.run(run(exp, root, resume=args.resume))
    except CoachlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stopped; continue with --resume --out {args.out or root}", file=sys.stderr)
        return 130
    models = {name: str(exp.config.models[name].config.get("model", "?")) for name in students}
    print("\n".join(summary(report, EpisodeLog(root / "evaluation" / "episodes.jsonl"), models)))
    print(f"\n{time.perf_counter() - start:.0f} s this invocation; run folder {root}")
    return 0


if __name__ == "__main__":
    stop_on_sigterm()
    sys.exit(main())
