"""train runs episodes concurrently (`train.concurrency`) and still writes what a run one at a time writes.

The dry-run story (coachlab.testing) trains a tiny experiment on models that answer after a random
delay, so episodes finish out of order; the tree, the library versions, the episodes file and the
transcripts must be those of `train.concurrency: 1`, byte for byte once wall-clock fields are blanked.
Then the story of test_train.py, counting calls in flight: up to `train.concurrency` at once, each
backend within its own limit, and one at a time when a model runs in this process.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from autogen_core.models import LLMMessage

from coachlab.environments import EnvironmentConfig, EpisodeRunner
from coachlab.experiments.config import load_experiment
from coachlab.experiments.distill import train_experiment
from coachlab.experiments.simulate import build_backends
from coachlab.explorer._parallel import in_order
from coachlab.explorer.train import TrainConfig, Trainer
from coachlab.explorer.verify import VerifyConfig
from coachlab.llm import Backend, ModelEntry
from coachlab.testing import ScriptedChatCompletionClient, dry_run_clients
from helpers import scenario
from test_train import customer, judge, student, teacher

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["customer", "judge", "student", "teacher"]

# Two roots with checklists (the first fails and grows a child); models on a server, so nothing caps train at one
# at a time.
EXPERIMENT = f"""\
name: tiny-concurrent
personas: [{ROOT / "personas"}]
scenarios: [{ROOT / "scenarios/benchmark/train.yaml"}]
models:
  student: {{provider: openai, config: {{model: small}}}}
  customer: {{provider: openai, config: {{model: small}}}}
  teacher: {{provider: openai, config: {{model: large}}}}
  judge: {{provider: openai, config: {{model: large}}}}
environment: {{max_turns: 4}}
train:
  scenarios: [bm-retail-stalled-parcel, bm-telecom-roaming-bill-shock]
  trials: 3
  children_per_failure: 1
  verify: {{criterion: CRITERION, trials: 6, refine_rounds: 1}}
  max_nodes: 4
  max_depth: 1
  max_iterations: 2
  concurrency: CONCURRENCY
judge: {{votes: 1, checklist: per_line, gate: "off"}}
retrieval: {{kind: lexical, k: 3}}
"""

WALL_CLOCK = [
    (re.compile(rb'"(model_seconds|duration_s)": ?[0-9.e-]+'), rb'"\1": 0'),
    (re.compile(rb'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^"]*"'), b'"T"'),
]


def blank(data: bytes) -> bytes:
    """`data` with the wall-clock fields (seconds in the model, durations, timestamps) blanked."""
    for pattern, replacement in WALL_CLOCK:
        data = pattern.sub(replacement, data)
    return data


def jittered(client: ScriptedChatCompletionClient, rng: random.Random) -> ScriptedChatCompletionClient:
    """`client`, answering after 0-4 ms, so that calls in flight together finish in another order."""
    script = client._fn  # pyright: ignore[reportPrivateUsage]

    async def fn(messages: Sequence[LLMMessage]) -> object:
        await asyncio.sleep(rng.uniform(0, 0.004))
        return script(messages)

    return ScriptedChatCompletionClient(fn, name=client.name, keep=0)  # type: ignore[arg-type]


def train_files(tmp_path: Path, *, criterion: str, concurrency: int, jitter: bool) -> dict[str, bytes]:
    path = tmp_path / f"{criterion}-{concurrency}.yaml"
    path.write_text(EXPERIMENT.replace("CRITERION", criterion).replace("CONCURRENCY", str(concurrency)))
    exp = load_experiment(path)
    rng = random.Random(10)
    clients = dry_run_clients(NAMES, strong=["teacher"])
    if jitter:
        clients = {name: jittered(client, rng) for name, client in clients.items()}
    backends = build_backends(exp, NAMES, clients=clients)
    run_dir = tmp_path / f"run-{criterion}-{concurrency}"
    summary = asyncio.run(train_experiment(exp, backends, run_dir=run_dir, resume=False, use_cache=False))
    assert summary.accepted and summary.rejected and summary.nodes == 3  # the story ran: admitted, rejected, grew
    files = [run_dir / "tree.json", run_dir / "train" / "episodes.jsonl"]
    files += sorted((run_dir / "library").glob("*.json")) + sorted((run_dir / "train" / "transcripts").glob("*"))
    return {str(p.relative_to(run_dir)): blank(p.read_bytes()) for p in files}


@pytest.mark.parametrize("criterion", ["uplift", "checklist", "imitation"])
def test_a_concurrent_run_writes_the_files_of_a_run_one_at_a_time(tmp_path: Path, criterion: str) -> None:
    one_at_a_time = train_files(tmp_path, criterion=criterion, concurrency=1, jitter=False)
    concurrent = train_files(tmp_path, criterion=criterion, concurrency=4, jitter=True)
    assert "library/v0001.json" in one_at_a_time and "train/episodes.jsonl" in one_at_a_time
    assert list(concurrent) == list(one_at_a_time)
    for name, data in one_at_a_time.items():
        assert concurrent[name] == data, f"{name} differs"


class InFlight:
    """Counts each model's calls in flight (every call takes 10 ms) and the most seen at once."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}

    @property
    def most_overall(self) -> int:
        return self.most.get("*", 0)

    def script(self, model: str, fn: Callable[[Sequence[LLMMessage]], object]) -> ScriptedChatCompletionClient:
        async def counted(messages: Sequence[LLMMessage]) -> object:
            for key in (model, "*"):
                self.now[key] = self.now.get(key, 0) + 1
                self.most[key] = max(self.most.get(key, 0), self.now[key])
            try:
                await asyncio.sleep(0.01)
                return fn(messages)
            finally:
                for key in (model, "*"):
                    self.now[key] -= 1

        return ScriptedChatCompletionClient(counted)  # type: ignore[arg-type]


def in_flight(run_dir: Path, concurrency: int, entries: dict[str, ModelEntry] | None = None) -> InFlight:
    """Train the story of test_train.py (one root, uplift verification) and count the calls in flight."""
    seen = InFlight()
    fns = {"customer": customer, "judge": judge, "student": student, "teacher": teacher}
    backends = {
        name: Backend.from_client(name, seen.script(name, fn), entry=(entries or {}).get(name))
        for name, fn in fns.items()
    }
    config = TrainConfig(
        trials=3, verify=VerifyConfig(trials=6, refine_rounds=0), max_iterations=1, max_depth=0, concurrency=concurrency
    )
    runner = EpisodeRunner(backends, EnvironmentConfig(max_turns=3))
    asyncio.run(Trainer(runner, config, [scenario()], run_dir=run_dir).run())
    return seen


def test_calls_overlap_up_to_train_concurrency_and_each_backend_keeps_its_own_limit(tmp_path: Path) -> None:
    seen = in_flight(tmp_path, 4, {"student": ModelEntry(provider="x.Y", concurrency=2)})
    assert seen.most_overall == 4  # the node's 4 rollouts open with 4 customer lines at once
    assert seen.most["student"] == 2  # 3 student rollouts at once, but the student's entry allows 2 calls


def test_train_runs_one_at_a_time_when_told_or_when_a_model_runs_in_this_process(tmp_path: Path) -> None:
    assert in_flight(tmp_path / "told", 1).most_overall == 1
    embedded = ModelEntry(provider="embedded", config={"model": "qwen2.5-coder-0.5b"})
    assert in_flight(tmp_path / "embedded", 4, {"judge": embedded}).most_overall == 1


def test_results_come_in_call_order_and_the_first_failure_in_order_is_raised() -> None:
    finished: list[int] = []

    def call(i: int, delay: float, *, fail: bool = False) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            await asyncio.sleep(delay)
            finished.append(i)
            if fail:
                raise ValueError(f"call {i} failed")
            return i

        return run

    seen: list[int] = []
    results = asyncio.run(in_order([call(0, 0.03), call(1, 0.01), call(2, 0.02)], limit=3, each=seen.append))
    assert finished == [1, 2, 0] and results == seen == [0, 1, 2]
    finished.clear()
    seen.clear()
    calls = [call(0, 0.03), call(1, 0.02, fail=True), call(2, 0.0, fail=True), call(3, 0.05)]
    with pytest.raises(ValueError, match="call 1 failed"):  # not call 2's, though it failed first
        asyncio.run(in_order(calls, limit=4, each=seen.append))
    assert seen == [0]  # what a loop over the calls would have seen
    assert finished == [2, 1, 0]  # call 3 was cancelled: a loop would never have started it
