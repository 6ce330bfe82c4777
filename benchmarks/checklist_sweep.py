"""Every (agent line, checklist item) question of a labelled set, asked without the gate: the raw data.

For each labelled transcript the script asks the per-line yes/no question for EVERY agent line and
item (no similarity gate, no stopping at the first yes), in the chosen question style, and records
each answer with the line's best MiniLM cosine to the item's example lines, whether the item's
`pattern` matches it and whether its words fit the item (`coachlab.judging.evidence`). Saved as JSON
(one file per style; a rerun resumes). Then it prints item accuracy, met items called unmet on the
paraphrased good chats, unmet items called met, good task success and good-above-degraded ordering
for a range of gate settings, all computed from the same answers, so one run shows what each rule buys.

    python benchmarks/checklist_sweep.py [--question meaning] [--cases FILE] [--experiment FILE]
        [--examples 3] [--out runs/checklist-sweep] [--only SCENARIOS] [--report-only]

With --examples N the experiment's teacher first writes N more example lines per item (once, into the
run folder, as a run does), and the gate compares each line with all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from coachlab.agents import ask_line, build_line_grader
from coachlab.agents.checklist import QuestionStyle
from coachlab.environments import EnvironmentConfig, EpisodeRunner
from coachlab.experiments.calibrate import calibration_events
from coachlab.experiments.config import load_experiment
from coachlab.experiments.criteria import ensure_examples, with_saved_examples
from coachlab.experiments.simulate import build_backends
from coachlab.judging import GradedLine, LineVotes, decide_criterion, graded_lines, task_success
from coachlab.judging.calibration import CaseResult, load_calibration_set, summarize_calibration
from coachlab.judging.evidence import fits
from coachlab.judging.gate import EmbeddingSimilarity
from coachlab.library.embedding import load_embedder
from coachlab.llm import RoleClient, close_backends
from coachlab.schema import Criterion, CriterionResult, Verdict

ROOT = Path(__file__).resolve().parents[1]


def load(out: Path) -> dict[str, dict[str, Any]]:
    return json.loads(out.read_text()) if out.exists() else {}


def save(out: Path, records: dict[str, dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1))


async def collect(
    experiment: Path,
    cases_file: Path | None,
    out: Path,
    question: QuestionStyle,
    only: set[str] | None,
    examples: int,
) -> None:
    exp = load_experiment(experiment)
    cases = [c for c in load_calibration_set(cases_file).cases if only is None or c.scenario in only]
    teacher = exp.config.train.teacher if exp.config.train else "teacher"
    backends = build_backends(exp, ["judge", teacher] if examples else ["judge"])
    EpisodeRunner(backends, EnvironmentConfig())  # checks the judge entry as a run would
    if examples:  # the teacher's extra example lines, written once into the run folder (as a run does)
        chosen = [exp.scenarios[s] for s in sorted({c.scenario for c in cases})]
        exp.scenarios.update(
            await ensure_examples(chosen, run_dir=exp.output_dir, backends=backends, teacher=teacher, count=examples)
        )
    similarity = EmbeddingSimilarity(load_embedder())
    records = load(out)
    start = time.perf_counter()
    for n, case in enumerate(cases, 1):
        if case.id in records:
            continue
        scenario = exp.scenarios[case.scenario]
        events = calibration_events(scenario, case)
        grader = build_line_grader(
            model_client=RoleClient(backends["judge"], role="judge-checklist", seed=n, create_args={"temperature": 0.0})
        )
        t0 = time.perf_counter()
        answers: list[dict[str, Any]] = []
        for line in graded_lines(events):
            for c in scenario.success_criteria:
                sims = await similarity.similarities([(line.text, e) for e in c.all_examples])
                yes = await ask_line(grader, line.text, c, question=question)
                answers.append(
                    {
                        "turn": line.turn,
                        "item": c.id,
                        "yes": yes,
                        "cosine_one": sims[0] if c.example else None,
                        "cosine": max(sims) if sims else None,
                        "matched": c.matches(line.text),
                        "fits": fits(c, line.text),
                    }
                )
        took = time.perf_counter() - t0
        records[case.id] = {"answers": answers, "seconds_all_questions": took}
        save(out, records)
        print(
            f"{n}/{len(cases)} {case.id}: {len(answers)} questions, {took:.0f} s ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    await close_backends(backends.values())


@dataclass(frozen=True)
class Rule:
    """How the answers are turned into verdicts."""

    floor: float | None
    sure: float | None = None
    use_fits: bool = False
    one_example: bool = False

    def label(self) -> str:
        if self.floor is None:
            text = "no gate"
        else:
            text = f"gate {self.floor:.2f}" + (f" sure {self.sure:.2f}" if self.sure else "")
            text += " 1 example" if self.one_example else " all examples"
        return text + (" +fits" if self.use_fits else "")


def verdict_at(record: dict[str, Any], criteria: list[Criterion], rule: Rule) -> Verdict:
    answers = record["answers"]
    graded = [GradedLine(turn=t, text="") for t in sorted({a["turn"] for a in answers})]
    results: list[CriterionResult] = []
    for c in criteria:
        per_line: dict[int, LineVotes] = {}
        for a in answers:
            if a["item"] != c.id:
                continue
            cosine = a.get("cosine_one", a["cosine"]) if rule.one_example else a["cosine"]
            per_line[a["turn"]] = LineVotes(
                yes=(0,) if a["yes"] else (),
                similarity=None if rule.floor is None else cosine,
                matched=a["matched"],
                fits=a["fits"] or not rule.use_fits,
            )
        floor = rule.floor if rule.floor is not None else -1.0
        results.append(decide_criterion(c, graded, per_line, votes=1, floor=floor, sure=rule.sure))
    return Verdict(
        rationale="-",
        satisfaction=5,
        resolved=False,
        policy_followed=True,
        failure_turn=None,
        customer_in_role=True,
        criteria=results,
        task_success=task_success(criteria, results),
    )


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def report(experiment: Path, cases_file: Path | None, out: Path, examples: int) -> None:
    exp = load_experiment(experiment)
    if examples:
        exp.scenarios.update({k: with_saved_examples(v, exp.output_dir) for k, v in exp.scenarios.items()})
    records = load(out)
    cases = {c.id: c for c in load_calibration_set(cases_file).cases}
    done = [cases[i] for i in records if i in cases]
    questions = sum(len(records[c.id]["answers"]) for c in done)
    seconds = sum(records[c.id]["seconds_all_questions"] for c in done)
    print(f"{out.name}: {len(done)} transcripts, {questions} line questions, {seconds / max(questions, 1):.2f} s each")
    checklists = {sid: s.success_criteria for sid, s in exp.scenarios.items()}
    rules = [Rule(None), Rule(None, use_fits=True)]
    rules += [
        Rule(f, s, e, one)
        for one in (True, False)
        for f in (0.35, 0.4, 0.45)
        for s in (None, 0.75)
        for e in (False, True)
    ]
    for rule in rules:
        results = [
            CaseResult(case=c, verdict=verdict_at(records[c.id], list(checklists[c.scenario]), rule), seconds=0)
            for c in done
        ]
        r = summarize_calibration(results, judge="", votes=1, gate=rule.floor is not None, criteria=checklists)
        print(
            f"{rule.label():>34}: items {pct(r.item_accuracy)} (kappa {r.item_kappa or 0:.2f}); met called unmet "
            f"{pct(r.missed_met_rate)}, on paraphrases {pct(r.missed_met_paraphrase_rate)}; unmet called met "
            f"{pct(r.false_met_rate)}, near-misses {pct(r.near_miss_false_met_rate)}, breaches in other words "
            f"missed {pct(r.missed_breach_paraphrase_rate)}; good task success {pct(r.good_task_success)}; "
            f"good>degraded {pct(r.ordering_checklist)}; failed tasks a success {r.false_success}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--question", choices=get_args(QuestionStyle), default="meaning-examples")
    parser.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "quickstart.yaml")
    parser.add_argument("--cases", type=Path, default=None, help="A labelled set (default: the shipped one).")
    parser.add_argument("--examples", type=int, default=0, help="Extra example lines per item the teacher writes.")
    parser.add_argument("--out", type=Path, default=Path("runs/checklist-sweep"))
    parser.add_argument("--only", default=None, help="Comma-separated scenario ids.")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    target = args.out / f"{args.question}{f'-ex{args.examples}' if args.examples else ''}.json"
    if not args.report_only:
        only = set(args.only.split(",")) if args.only else None
        asyncio.run(collect(args.experiment, args.cases, target, args.question, only, args.examples))
    report(args.experiment, args.cases, target, args.examples)
