"""Does the judge tell a good transcript from a bad one? Prints mean satisfaction for each.

Runs coachlab's real judge path (build_judge + judge_dialogue through a RoleClient) on one
scenario with a hand-written good and bad dialogue, N calls each with different seeds.

    python benchmarks/judge_separation.py [--model qwen2.5-coder-1.5b] [--n 5] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from coachlab.agents import build_judge
from coachlab.environments import judge_dialogue
from coachlab.experiments.config import load_experiment
from coachlab.llm import Backend, ModelEntry, RetryPolicy, RoleClient

ROOT = Path(__file__).resolve().parents[1]

GOOD = [
    ("agent", "I'm sorry about the wait, Anna. Could you confirm the email on the order?"),
    ("customer", "It's anna.kowalski@mailbox.com. I really need it by Saturday."),
    (
        "agent",
        "Thanks. Tracking hasn't moved for 3 days, so I've reshipped your set by free express: it arrives "
        "Friday. I've also refunded your $5.99 shipping. Your reference is RS-20417.",
    ),
    ("customer", "Oh, thank you so much, that's perfect!"),
]
BAD = [
    ("agent", "Parcels are sometimes late. Please wait."),
    ("customer", "But I need it by Saturday. Can you do anything?"),
    ("agent", "No. Contact the carrier. It will arrive when it arrives."),
    ("customer", "That's useless. I'm done with this."),
]


async def main(model: str, n: int, threads: int | None) -> None:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    scenario = exp.scenarios["retail-late-delivery"]
    assert scenario.opening_line is not None
    entry = ModelEntry(
        provider="embedded",
        config={"model": model, "temperature": 0.2, "max_tokens": 200, "n_threads": threads},
        retry=RetryPolicy(timeout_s=None),  # an in-process call cannot be cut short; a slow CPU is no fault
    )
    backend = Backend.from_entry("judge", entry, where="benchmark")
    for label, lines in (("good", GOOD), ("bad", BAD)):
        dialogue = [("customer", scenario.opening_line), *lines]
        scores: list[int] = []
        resolved = 0
        in_role = 0
        errors = 0
        start = time.perf_counter()
        for seed in range(n):
            judge = build_judge(model_client=RoleClient(backend, role="judge", seed=seed, trial=seed))
            result = await judge_dialogue(judge, scenario, dialogue)
            if result.verdict is None:
                errors += 1
                continue
            scores.append(result.verdict.satisfaction)
            resolved += result.verdict.resolved
            in_role += result.verdict.customer_in_role
        mean = statistics.mean(scores) if scores else float("nan")
        per_call = (time.perf_counter() - start) / n
        print(
            f"{label:>4}: mean satisfaction {mean:.1f} over {len(scores)} verdicts {scores}, "
            f"resolved {resolved}/{len(scores)}, customer in role {in_role}/{len(scores)} (it is, in both), "
            f"unreadable {errors}, {per_call:.1f} s per verdict"
        )
    await backend.client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores).")
    args = parser.parse_args()
    asyncio.run(main(args.model, args.n, args.threads))
