"""Per-call overhead of coachlab's episode loop, against AutoGen's own ways of running a dialogue.

Every model is scripted and answers at once, so what is measured is everything around the model
call. The same 10-turn dialogue runs three ways:

- coachlab: `Simulation.run` (the path `coachlab simulate` takes: RoleClients, observed views,
  the turn loop and its rules, transcript writing, episodes.jsonl, the judge; cache off), with
  `ScriptedChatCompletionClient`s: 10 customer lines, 10 agent answers, 1 verdict = 21 calls;
- RoundRobinGroupChat: a team of two AssistantAgents with `ReplayChatCompletionClient`s,
  stopped after the 20 lines (20 calls, no judge);
- direct: the same two AssistantAgents called in turn with `on_messages` (20 calls).

Before that, 1,000 coachlab episodes run in one `Simulation.run` in a fresh subprocess, which
reports its peak RSS (`ru_maxrss`); twice: with the scripted clients as shipped (they keep every
request, as `coachlab simulate --dry-run` runs them) and with clients that keep none.

Run:
    .venv/bin/python benchmarks/overhead.py                  # about 40 s on 2 busy cores
    .venv/bin/python benchmarks/overhead.py --seconds 1 --rss-episodes 0 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken
from autogen_core.models import LLMMessage, UserMessage
from autogen_ext.models.replay import ReplayChatCompletionClient

from coachlab.environments import EnvironmentConfig
from coachlab.experiments.config import Experiment, load_experiment
from coachlab.experiments.simulate import Simulation, build_backends, plan_episodes
from coachlab.schema import Scenario, TerminationReason, Verdict
from coachlab.testing import ScriptedChatCompletionClient, message_text

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments" / "quickstart.yaml"
TURNS = 10
CUSTOMER_LINES = [f"Line {i}: my parcel for order A-{100 + i} is still missing, where is it now?" for i in range(TURNS)]
AGENT_LINES = [
    f"Answer {i}: I have checked order A-{100 + i} and a refund of {i + 1} euros is on its way." for i in range(TURNS)
]
VERDICT = Verdict(
    rationale="Scripted.",
    satisfaction=7,
    resolved=True,
    policy_followed=True,
    failure_turn=None,
    customer_in_role=True,
)


def customer_script(messages: Sequence[LLMMessage]) -> str:
    """The customer's i-th line, i = the agent lines it has seen."""
    return CUSTOMER_LINES[message_text(messages[-1]).count("\nAgent: ")]


def agent_script(messages: Sequence[LLMMessage]) -> str:
    """The agent's i-th answer, i = the customer lines before this one."""
    return AGENT_LINES[sum(isinstance(m, UserMessage) for m in messages) - 1]


def load() -> tuple[Experiment, Scenario]:
    """The quickstart experiment and one of its scenarios, with no fixed opening or prefix."""
    exp = load_experiment(EXPERIMENT)
    scenario = exp.selected_scenarios()[0].model_copy(update={"opening_line": None, "prefix": []})
    return exp, scenario


class CoachlabRunner:
    """Runs episodes through `Simulation` into one run folder (fresh plans each batch).

    Args:
        out_dir: The run folder.
        keep_requests: Let the scripted clients keep every request (they do, for test assertions;
            `coachlab simulate --dry-run` runs with them as they are). Off, they keep none, so a
            memory figure shows coachlab's own footprint.
    """

    def __init__(self, out_dir: Path, *, keep_requests: bool = True) -> None:
        self.exp, self.scenario = load()
        self.clients = {
            "customer": ScriptedChatCompletionClient(customer_script, name="customer"),
            "student": ScriptedChatCompletionClient(agent_script, name="student"),
            "judge": ScriptedChatCompletionClient(lambda m: VERDICT, name="judge"),
        }
        if not keep_requests:
            for client in self.clients.values():
                client.calls = deque(maxlen=0)  # type: ignore[assignment]
                client.create_args = deque(maxlen=0)  # type: ignore[assignment]
        backends = build_backends(self.exp, list(self.clients), clients=self.clients)
        environment = EnvironmentConfig(max_turns=TURNS)
        self.sim = Simulation(self.exp, backends, out_dir=out_dir, use_cache=False, environment=environment)
        self.trials = 0

    async def run(self, episodes: int, *, concurrency: int = 1) -> int:
        """Run `episodes` more episodes; returns the model calls made."""
        plans = plan_episodes([self.scenario], agents=["student"], trials=self.trials + episodes, seed=0)
        plans = plans[self.trials :]
        self.trials += episodes
        done = await self.sim.run(plans, concurrency=concurrency)
        calls = 0
        for ep in done:
            assert ep.termination is TerminationReason.MAX_TURNS, (ep.termination, ep.termination_detail)
            assert ep.verdict is not None, ep.judge_error
            calls += sum(u.calls for u in ep.usage.values())
        assert calls == episodes * (2 * TURNS + 1), calls
        return calls

    def forget_requests(self) -> None:
        """Empty the scripted clients' request logs (between timed batches)."""
        for client in self.clients.values():
            client.calls.clear()
            client.create_args.clear()


def two_agents() -> tuple[AssistantAgent, AssistantAgent]:
    """A customer and an agent AssistantAgent on fresh replay clients."""
    customer = AssistantAgent("customer", model_client=ReplayChatCompletionClient(list(CUSTOMER_LINES)))
    agent = AssistantAgent("agent", model_client=ReplayChatCompletionClient(list(AGENT_LINES)))
    return customer, agent


async def roundrobin_episodes(episodes: int) -> int:
    """Run `episodes` RoundRobinGroupChat dialogues; returns the model calls made."""
    for _ in range(episodes):
        team = RoundRobinGroupChat(list(two_agents()), termination_condition=MaxMessageTermination(2 * TURNS + 1))
        result = await team.run(task="Start the chat.")
        assert [m.source for m in result.messages][1:] == ["customer", "agent"] * TURNS
    return episodes * 2 * TURNS


async def direct_episodes(episodes: int) -> int:
    """Run `episodes` dialogues by calling `on_messages` in turn; returns the model calls made."""
    token = CancellationToken()
    for _ in range(episodes):
        customer, agent = two_agents()
        last: TextMessage = TextMessage(content="Start the chat.", source="user")
        for _ in range(TURNS):
            said = (await customer.on_messages([last], token)).chat_message
            assert isinstance(said, TextMessage)
            answer = (await agent.on_messages([said], token)).chat_message
            assert isinstance(answer, TextMessage)
            last = answer
    return episodes * 2 * TURNS


async def rate(
    batch: Callable[[int], Awaitable[int]],
    *,
    seconds: float,
    episodes_per_batch: int = 20,
    between: Callable[[], None] = lambda: None,
) -> float:
    """Model calls per second, running batches until `seconds` have passed (after one warm-up batch)."""
    await batch(2)
    calls, spent = 0, 0.0
    while spent < seconds or calls == 0:
        started = time.perf_counter()
        calls += await batch(episodes_per_batch)
        spent += time.perf_counter() - started
        between()
    return calls / spent


def rss_child(episodes: int, concurrency: int, out_dir: Path, *, keep_requests: bool) -> None:
    """(In a fresh process) run `episodes` coachlab episodes in one run; print RSS figures as JSON.

    `ru_maxrss` survives `exec`, so the parent starts this before it has grown.
    """
    runner = CoachlabRunner(out_dir, keep_requests=keep_requests)
    asyncio.run(runner.run(5))
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    asyncio.run(runner.run(episodes, concurrency=concurrency))
    took = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_mb": base_kb / 1024, "peak_mb": peak_kb / 1024, "seconds": took}))


def memory_run(episodes: int, concurrency: int, out_dir: Path, *, keep_requests: bool) -> dict[str, float]:
    """Run `rss_child` in a fresh interpreter and return its figures."""
    command = [
        sys.executable,
        __file__,
        "--rss-child",
        str(episodes),
        "--rss-concurrency",
        str(concurrency),
        "--out",
        str(out_dir),
        *([] if keep_requests else ["--drop-requests"]),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="Time each way runs for.")
    parser.add_argument("--rss-episodes", type=int, default=1000, help="Episodes in the memory runs (0: skip).")
    parser.add_argument("--rss-concurrency", type=int, default=4, help="Episodes in flight in the memory runs.")
    parser.add_argument("--profile", action="store_true", help="Profile the coachlab run (cProfile).")
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--drop-requests", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.rss_child is not None:
        rss_child(args.rss_child, args.rss_concurrency, args.out, keep_requests=not args.drop_requests)
        return

    with tempfile.TemporaryDirectory(prefix="coachlab-overhead-") as tmp:
        memory: list[tuple[str, dict[str, float]]] = []
        if args.rss_episodes:  # first, while this process is small (see rss_child)
            for keep, label in [(True, "scripted clients keep every request"), (False, "they keep none")]:
                figures = memory_run(args.rss_episodes, args.rss_concurrency, Path(tmp) / label, keep_requests=keep)
                memory.append((label, figures))

        runner = CoachlabRunner(Path(tmp) / "timed")
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        coachlab = asyncio.run(rate(runner.run, seconds=args.seconds, between=runner.forget_requests))
        if profiler is not None:
            profiler.disable()
        roundrobin = asyncio.run(rate(roundrobin_episodes, seconds=args.seconds))
        direct = asyncio.run(rate(direct_episodes, seconds=args.seconds, episodes_per_batch=100))

    print(f"{TURNS}-turn dialogue, scripted zero-latency models, one episode at a time, {args.seconds:g} s each:")
    print(f"  coachlab Simulation  (21 calls/episode) {coachlab:8,.0f} model calls/s  {1e6 / coachlab:5.0f} us/call")
    print(
        f"  RoundRobinGroupChat  (20 calls/episode) {roundrobin:8,.0f} model calls/s  {1e6 / roundrobin:5.0f} us/call"
    )
    print(f"  direct on_messages   (20 calls/episode) {direct:8,.0f} model calls/s  {1e6 / direct:5.0f} us/call")
    print(f"  coachlab / RoundRobinGroupChat          {coachlab / roundrobin:8.2f}x  (target >= 3x)")
    print(f"  coachlab / direct on_messages           {coachlab / direct:8.2f}x")
    for label, figures in memory:
        print(
            f"{args.rss_episodes} episodes in one Simulation.run, fresh process, {args.rss_concurrency} in flight "
            f"({label}): peak RSS {figures['peak_mb']:.0f} MB, {figures['base_mb']:.0f} MB after imports "
            f"and 5 episodes, {figures['seconds']:.1f} s  (target < 500 MB)"
        )

    if profiler is not None:
        print("\ncoachlab run, by cumulative time:")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        print("by own time:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
