"""Every (agent line, checklist item) question of the calibration set, asked without the gate: the raw data.

For each labelled transcript: the judge's satisfaction score (one vote), then the per-line yes/no
answer for EVERY agent line and item (no similarity gate, no stopping at the first yes), with the
MiniLM cosine of the line to the item's example. Saved as JSON; then the script prints item accuracy
and ordering for a range of gate floors, computed from the same answers, so one run shows what the
gate buys and where to set it.

    python benchmarks/checklist_sweep.py [--out runs/checklist-sweep.json] [--only SCENARIOS] [--report-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from coachlab.agents import ask_line, build_line_grader
from coachlab.environments import EnvironmentConfig, EpisodeRunner
from coachlab.environments.episode import satisfaction_scores
from coachlab.experiments.calibrate import calibration_events, spoken
from coachlab.experiments.config import load_experiment
from coachlab.experiments.simulate import build_backends
from coachlab.judging import GradedLine, LineVotes, decide_criterion, graded_lines, task_success
from coachlab.judging.calibration import CalibrationCase, CaseResult, load_calibration_set, summarize_calibration
from coachlab.judging.gate import EmbeddingSimilarity
from coachlab.library.embedding import load_embedder
from coachlab.llm import RoleClient, close_backends
from coachlab.schema import Criterion, Verdict

ROOT = Path(__file__).resolve().parents[1]


def load(out: Path) -> dict[str, dict[str, Any]]:
    return json.loads(out.read_text()) if out.exists() else {}


def save(out: Path, records: dict[str, dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1))


async def collect(out: Path, only: set[str] | None) -> None:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    backends = build_backends(exp, ["judge"])
    runner = EpisodeRunner(backends, EnvironmentConfig())
    similarity = EmbeddingSimilarity(load_embedder())
    records = load(out)
    cases = [c for c in load_calibration_set().cases if only is None or c.scenario in only]
    start = time.perf_counter()
    for n, case in enumerate(cases, 1):
        if case.id in records:
            continue
        scenario = exp.scenarios[case.scenario]
        events = calibration_events(scenario, case)
        panel, _ = runner.panel(seed=n, trial=0)
        t0 = time.perf_counter()
        scores, _ = await satisfaction_scores(panel.judges, scenario, spoken(events))
        t1 = time.perf_counter()
        grader = build_line_grader(
            model_client=RoleClient(backends["judge"], role="judge-checklist", seed=n, create_args={"temperature": 0.0})
        )
        answers = []
        for line in graded_lines(events):
            sims = await similarity.similarities(
                [(line.text, c.example or line.text) for c in scenario.success_criteria]
            )
            for c, sim in zip(scenario.success_criteria, sims, strict=True):
                yes = await ask_line(grader, line.text, c)
                answers.append({"turn": line.turn, "item": c.id, "yes": yes, "cosine": sim if c.example else None})
        t2 = time.perf_counter()
        records[case.id] = {
            "satisfaction": scores[0].model_dump() if scores else None,
            "answers": answers,
            "seconds_satisfaction": t1 - t0,
            "seconds_all_questions": t2 - t1,
        }
        save(out, records)
        took = time.perf_counter() - start
        print(f"{n}/{len(cases)} {case.id}: {len(answers)} questions, {t2 - t0:.0f} s ({took:.0f} s)", flush=True)
    await close_backends(backends.values())


def verdict_at(
    case: CalibrationCase,
    record: dict[str, Any],
    criteria: list[Criterion],
    floor: float | None,
    sure: float | None = None,
) -> Verdict | None:
    sat = record["satisfaction"]
    if sat is None:
        return None
    answers = record["answers"]
    lines = sorted({a["turn"] for a in answers})
    graded = [GradedLine(turn=t, text="") for t in lines]
    results = []
    for c in criteria:
        per_line = {}
        for a in answers:
            if a["item"] != c.id:
                continue
            sim = a["cosine"] if floor is not None else None
            per_line[a["turn"]] = LineVotes(yes=(0,) if a["yes"] else (), similarity=sim)
        results.append(
            decide_criterion(c, graded, per_line, votes=1, floor=floor if floor is not None else -1.0, sure=sure)
        )
    base = Verdict.model_validate(sat)
    return base.model_copy(update={"criteria": results, "task_success": task_success(criteria, results)})


def report(out: Path) -> None:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    records = load(out)
    cases = {c.id: c for c in load_calibration_set().cases}

    def criteria(case: CalibrationCase) -> list[Criterion]:
        return list(exp.scenarios[case.scenario].success_criteria)

    done = [cases[i] for i in records if i in cases]
    questions = sum(len(r["answers"]) for r in records.values())
    print(f"{len(done)} transcripts, {questions} line questions")
    settings: list[tuple[float | None, float | None]] = [(f, None) for f in (None, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55)]
    settings += [(f, s) for f in (0.4, 0.45) for s in (0.6, 0.65, 0.7, 0.75)]
    for floor, sure in settings:
        results = [
            CaseResult(case=c, verdict=verdict_at(c, records[c.id], criteria(c), floor, sure), seconds=0) for c in done
        ]
        r = summarize_calibration(results, judge="", votes=1, gate=floor is not None)
        label = "no gate" if floor is None else f"gate {floor:.2f}" + (f", sure {sure:.2f}" if sure else "")
        variants = ", ".join(f"{k} {v:.0%}" for k, v in r.accuracy_by_variant.items())
        print(
            f"{label:>21}: items {r.item_accuracy:.0%} (kappa {r.item_kappa:.2f}, "
            f"unmet called met {r.false_met_rate:.0%}, met called unmet {r.missed_met_rate:.0%}); "
            f"good>degraded by checklist {r.ordering_checklist:.0%}, by "
            f"satisfaction {r.ordering_satisfaction:.0%}; hand-off >= good by satisfaction "
            f"{r.handoff_satisfaction_at_least_good:.0%}; task success: good {r.good_task_success:.0%}, hand-off "
            f"{r.handoff_task_success:.0%}; by variant {variants}"
        )
    sat = [r["seconds_satisfaction"] for r in records.values()]
    print(f"seconds per transcript: satisfaction {sum(sat) / len(sat):.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/checklist-sweep.json"))
    parser.add_argument("--only", default=None, help="Comma-separated scenario ids.")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        asyncio.run(collect(args.out, set(args.only.split(",")) if args.only else None))
    report(args.out)
