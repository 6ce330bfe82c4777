"""Does task success separate the teacher from the student, and fail the hand-off loop? Prints both.

Runs the quickstart's real path on the embedded models: the student (0.5B) and the teacher (1.5B)
each serve the training scenarios for N trials (paired seeds), the 1.5B judge grades every episode's
checklist and satisfaction, and the table gives task success and satisfaction per agent with
scenario-clustered 95% CIs. Then the calibration set's hand-off-loop transcript of
retail-late-delivery (the agent sends the customer to "customer service" three times) is judged:
its satisfaction score beside its task success.

    python benchmarks/verdicts.py [--trials 4] [--out runs/bench-verdicts] [--resume]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from pathlib import Path

from coachlab.environments import EpisodeRunner, judge_episode
from coachlab.experiments.calibrate import calibration_events, spoken
from coachlab.experiments.config import load_experiment
from coachlab.experiments.simulate import Simulation, build_backends, plan_episodes
from coachlab.judging.calibration import load_calibration_set
from coachlab.llm import close_backends
from coachlab.stats import clustered_bootstrap

ROOT = Path(__file__).resolve().parents[1]


async def main(trials: int, out: Path, resume: bool) -> None:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    assert exp.config.train is not None and exp.config.train.scenarios
    scenarios = [exp.scenarios[s] for s in exp.config.train.scenarios]
    names = ["customer", "judge", "student", "teacher"]
    backends = build_backends(exp, names)
    sim = Simulation(exp, backends, out_dir=out)
    plans = plan_episodes(scenarios, agents=["student", "teacher"], trials=trials, seed=0)
    todo = sim.pending(plans, resume=resume)
    start = time.perf_counter()
    await sim.run(todo, concurrency=1)
    print(f"{len(todo)} episodes run in {time.perf_counter() - start:.0f} s ({len(plans) - len(todo)} resumed)")
    episodes = list(sim.log.read().values())
    for agent in ("student", "teacher"):
        success: dict[str, list[float]] = defaultdict(list)
        satisfaction: dict[str, list[float]] = defaultdict(list)
        faults = 0
        for e in episodes:
            if e.agent_model != agent:
                continue
            faults += e.simulator_fault is not None
            if e.scored and e.verdict is not None:
                satisfaction[e.scenario_id].append(float(e.verdict.satisfaction))
                if e.verdict.task_success is not None:
                    success[e.scenario_id].append(float(e.verdict.task_success))
        ts, sat = clustered_bootstrap(success), clustered_bootstrap(satisfaction)
        print(f"{agent:>8}: task success {ts} | satisfaction {sat} | simulator faults {faults}")
        for sid in sorted(success):
            print(f"          {sid}: task success {sum(success[sid]):.0f}/{len(success[sid])}")
    case = next(c for c in load_calibration_set().cases if c.id == "retail-late-delivery/handoff-loop")
    scenario = exp.scenarios[case.scenario]
    events = calibration_events(scenario, case)
    dialogue = spoken(events)
    runner = EpisodeRunner(backends, exp.config.environment, judging=exp.config.judge, similarity=exp.judge_gate())
    panel, _ = runner.panel(seed=1, trial=0)
    result = await judge_episode(panel, scenario, dialogue, events)
    v = result.verdict
    if v is None:
        print(f"hand-off loop: no verdict ({result.error})")
    else:
        missed = [r.id for r in v.criteria if r.status != "met"]
        print(
            f"hand-off loop: satisfaction {v.satisfaction}/10, resolved {v.resolved}; task success {v.task_success} "
            f"(not met: {', '.join(missed)})"
        )
    sim.close()
    await close_backends(backends.values())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-verdicts"))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.trials, args.out, args.resume))
