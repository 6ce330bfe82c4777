"""Can the student follow a strategy at all? An upper bound on what any library can do for it.

For each scenario of an experiment the student writes its first reply to the customer's opening
line, `--seeds` times without guidance and `--seeds` times with an *oracle* strategy written from
the scenario's own checklist (no teacher, no verification, no retrieval involved), on the same
seeds; the judge grades every reply on the scenario's must and forbidden items (+1 per must item
met, -1 per forbidden item broken), the same grading `verify.criterion: checklist` uses. Two
oracles:

- `imperative`: one strategy per must item, its text as an order ("Offer to reship the order by
  free express delivery."), the form the teacher's strategies take;
- `example`: one strategy per must item, the item's example line to say ("Say, in your words: ...").

With `--library RUN_FOLDER`, a third arm, `library`: the strategies a run's teacher wrote on each
scenario (any status: admitted or rejected), shown as they are, so the teacher's words can be set
beside the oracle's on the same seeds.

If even the oracle does not lift the student's replies, no teacher, verification or retrieval can,
and the limit is the student (its capacity, or how the strategy reaches its prompt); if it does,
the limit is upstream. Prints items met per reply by arm with a scenario-clustered 95% CI, the
paired difference (oracle minus none) with its CI, and a few replies.

    python benchmarks/follows_guidance.py [--experiment experiments/benchmark.yaml] [--agent student]
        [--seeds 4] [--scenarios ID ...] [--library runs/benchmark-bench]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from pathlib import Path

from coachlab.environments import EpisodeRunner
from coachlab.experiments.config import load_experiment
from coachlab.experiments.controls import oracle_lines
from coachlab.experiments.simulate import build_backends
from coachlab.explorer.verify import checklist_arm
from coachlab.library.store import LibraryStore
from coachlab.llm import close_backends
from coachlab.schema import Guidance
from coachlab.stats import clustered_bootstrap, paired_differences

ROOT = Path(__file__).resolve().parents[1]


def learned(run: Path | None) -> dict[str, list[Guidance]]:
    """Per scenario id, the strategies the run's teacher wrote on it (latest library version, any status)."""
    if run is None:
        return {}
    out: dict[str, list[Guidance]] = defaultdict(list)
    for s in LibraryStore(run / "library").load().strategies:
        if s.provenance is not None:
            out[s.provenance.scenario_id].append(Guidance(id=s.id, situation=s.situation, guidance=s.guidance))
    return out


async def main(experiment: Path, agent: str, seeds: int, only: list[str], run: Path | None = None) -> None:
    exp = load_experiment(experiment)
    train, evaluate = exp.config.train, exp.config.evaluate
    ids = only or [*((train.scenarios or []) if train else []), *((evaluate.scenarios or []) if evaluate else [])]
    scenarios = [exp.scenarios[i] for i in dict.fromkeys(ids) if exp.scenarios[i].success_criteria]
    written = learned(run)
    if run is not None:
        scenarios = [sc for sc in scenarios if written.get(sc.id)]
    backends = build_backends(exp, ["judge", agent])
    runner = EpisodeRunner(backends, exp.config.environment, judging=exp.config.judge, similarity=exp.judge_gate())
    scores: dict[str, dict[str, list[float]]] = {"none": defaultdict(list)}
    paired: dict[str, dict[tuple[str, int], float]] = defaultdict(dict)
    samples: list[str] = []
    start = time.perf_counter()
    try:
        for sc in scenarios:
            opening = sc.opening_line or sc.issue
            prefix = [("customer", opening)]
            items = [c for c in sc.success_criteria if c.forbidden or c.level == "must"]
            trial_seeds = list(range(1, seeds + 1))
            for arm, guidance in [
                ("none", []),
                ("imperative", oracle_lines(sc, "imperative")),
                ("example", oracle_lines(sc, "example")),
                *([("library", written[sc.id])] if run is not None else []),
            ]:
                result = await checklist_arm(
                    runner, sc, prefix, items, agent_model=agent, seeds=trial_seeds, guidance=guidance
                )
                scores.setdefault(arm, defaultdict(list))[sc.id] += result.scores
                for t, s in enumerate(result.scores):
                    paired[arm][(sc.id, t)] = s
                samples.append(f"  {sc.id} [{arm}] {result.scores[0]:+.0f}: {result.replies[0]}")
            print(f"{sc.id}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        await close_backends(backends.values())
    must = {sc.id: sum(1 for c in sc.success_criteria if c.level == "must" and not c.forbidden) for sc in scenarios}
    print(
        f"\n{agent} ({exp.config.models[agent].config.get('model')}), {len(scenarios)} scenarios x {seeds} seeds, "
        f"first reply to the opening line; score = must items met - forbidden items broken "
        f"(mean must items per scenario {sum(must.values()) / len(must):.1f})"
    )
    for arm, by in scores.items():
        print(f"  {arm:>10}: {clustered_bootstrap(by)} per reply")
    for arm in ("imperative", "example", *(["library"] if run is not None else [])):
        diff = paired_differences(paired["none"], paired[arm], scale=1.0)
        print(f"  {arm} minus none (paired by seed, 95% CI): {clustered_bootstrap(diff)}")
    print("\nfirst reply of each arm:")
    print("\n".join(samples))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "benchmark.yaml")
    parser.add_argument("--agent", default="student", help="The model entry that replies (student or teacher).")
    parser.add_argument("--seeds", type=int, default=4, help="Replies per scenario and arm.")
    parser.add_argument("--scenarios", nargs="*", default=[], help="Scenario ids (default: train and evaluate).")
    parser.add_argument("--library", type=Path, help="A run folder: also show its teacher's strategies per scenario.")
    args = parser.parse_args()
    asyncio.run(main(args.experiment, args.agent, args.seeds, args.scenarios, args.library))
