"""The quickstart's distillation loop on the embedded models: train, then evaluate held-out scenarios.

Prints the time of each phase, the strategies admitted, and baseline / generic / library / teacher
mean satisfaction with 95% bootstrap CIs and the share of the teacher gap the library closes.

    python benchmarks/distill.py [--experiment experiments/quickstart.yaml] [--out runs/distill-bench]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import time
from pathlib import Path

from coachlab.experiments.config import load_experiment
from coachlab.experiments.distill import RunLayout, evaluate_experiment, train_experiment
from coachlab.experiments.simulate import build_backends
from coachlab.library import LibraryStore


async def main(experiment: Path, out: Path) -> None:
    exp = load_experiment(experiment)
    assert exp.config.train is not None and exp.config.evaluate is not None
    shutil.rmtree(out, ignore_errors=True)
    names = ["customer", "judge", exp.config.train.student, exp.config.train.teacher, *exp.config.evaluate.students]
    backends = build_backends(exp, names)
    start = time.perf_counter()
    summary = await train_experiment(exp, backends, run_dir=out, resume=False)
    trained = time.perf_counter() - start
    library = LibraryStore(RunLayout(out).library).load()
    print(
        f"train: {trained / 60:.1f} min, {summary.nodes} nodes, {summary.failed} failed, "
        f"stopped by {summary.stopped_by}"
    )
    for s in library.strategies:
        ev = s.evidence
        print(f"  {s.status.value} {s.id}: {s.situation} -> {s.guidance}")
        if ev is not None:
            print(f"    {ev.summary}")
    print(f"  admitted {len(summary.accepted)}, rejected {summary.rejected}")
    start = time.perf_counter()
    report = await evaluate_experiment(
        exp, backends, run_dir=out, resume=False, concurrency=exp.config.simulate.concurrency
    )
    print(f"evaluate: {(time.perf_counter() - start) / 60:.1f} min")
    for student in report.students:
        for row in student.rows:
            print(f"  {student.student:>10} {row.condition:>8}: satisfaction {row.satisfaction}")
        if report.teacher is not None:
            print(f"  {report.teacher.agent_model:>10} {'teacher':>8}: satisfaction {report.teacher.satisfaction}")
        print(f"  gap closed by the library: {student.gap_closed} over {student.gap_closed.n} paired trials")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", type=Path, default=Path("experiments/quickstart.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/distill-bench"))
    args = parser.parse_args()
    asyncio.run(main(args.experiment, args.out))
