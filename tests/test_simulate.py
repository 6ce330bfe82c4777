"""simulate: every shipped experiment dry-runs; results are written as they finish; resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from autogen_core.models import LLMMessage

from coachlab.errors import UsageError
from coachlab.experiments.config import load_experiment
from coachlab.experiments.simulate import Simulation, build_backends, order_episodes, plan_episodes
from coachlab.schema import TerminationReason
from coachlab.testing import ScriptedChatCompletionClient, dry_run_clients, message_text

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_validates_and_dry_runs(path: Path, tmp_path: Path) -> None:
    exp = load_experiment(path)
    cfg = exp.config.simulate
    names = ["customer", "judge", *cfg.agents]
    sim = Simulation(exp, build_backends(exp, names, clients=dry_run_clients(names)), out_dir=tmp_path, use_cache=False)
    plans = plan_episodes(exp.selected_scenarios(), agents=cfg.agents, trials=1, seed=0)
    episodes = asyncio.run(sim.run(plans, concurrency=4))
    assert len(episodes) == len(plans) > 0
    assert all(e.verdict is not None for e in episodes)
    assert len(list((tmp_path / "transcripts").glob("*.md"))) == len(plans)
    summary = sim.summary()
    assert summary.episodes == len(plans) and json.loads((tmp_path / "summary.json").read_text())["episodes"] == len(
        plans
    )


def quickstart(tmp_path: Path, clients: dict[str, ScriptedChatCompletionClient]) -> Simulation:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    return Simulation(exp, build_backends(exp, list(clients), clients=clients), out_dir=tmp_path, use_cache=True)


def test_resume_after_interruption_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    names = ["customer", "judge", "student"]
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    plans = plan_episodes(exp.selected_scenarios(), agents=["student"], trials=3, seed=0)
    assert len(plans) == 12
    judged: list[str] = []
    budget = {"left": 5}

    def judge(messages: Sequence[LLMMessage]) -> object:
        if budget["left"] == 0:
            raise KeyboardInterrupt  # the user pressed Ctrl-C in the middle of the run
        budget["left"] -= 1
        judged.append(message_text(messages[-1]))
        return dry_run_clients(["judge"])["judge"]._fn(messages)

    clients = dry_run_clients(names)
    clients["judge"] = ScriptedChatCompletionClient(judge)  # type: ignore[arg-type]
    sim = quickstart(tmp_path, clients)
    with pytest.raises((KeyboardInterrupt, BaseExceptionGroup)):
        asyncio.run(sim.run(plans, concurrency=1))
    kept = sim.log.read()
    assert len(kept) == 5

    with pytest.raises(UsageError, match="--resume"):
        sim.pending(plans, resume=False)
    todo = sim.pending(plans, resume=True)
    assert len(todo) == 7 and not {p.id for p in todo} & set(kept)

    budget["left"] = 100
    fresh = dry_run_clients(names)
    fresh["judge"] = ScriptedChatCompletionClient(judge)  # type: ignore[arg-type]
    sim2 = quickstart(tmp_path, fresh)
    asyncio.run(sim2.run(todo, concurrency=3))
    final = sim2.log.read()
    assert set(final) == {p.id for p in plans}
    assert len(judged) == 12  # every episode judged exactly once across both runs
    lines = (tmp_path / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 12


def test_torn_last_line_is_dropped_and_repaired(tmp_path: Path) -> None:
    names = ["customer", "judge", "student"]
    sim = quickstart(tmp_path, dry_run_clients(names))
    exp = sim.experiment
    plans = plan_episodes(exp.selected_scenarios()[:2], agents=["student"], trials=1, seed=0)
    asyncio.run(sim.run(plans[:1], concurrency=1))
    with (tmp_path / "episodes.jsonl").open("a") as fh:
        fh.write('{"id": "torn", "scen')
    assert set(sim.log.read()) == {plans[0].id}
    todo = sim.pending(plans, resume=True)
    asyncio.run(sim.run(todo, concurrency=1))
    assert set(sim.log.read()) == {p.id for p in plans}


def test_retry_failed_reruns_infrastructure_errors_only(tmp_path: Path) -> None:
    names = ["customer", "judge", "student"]
    down = {"on": True}

    def agent(messages: Sequence[LLMMessage]) -> str:
        if down["on"]:
            raise ValueError("backend exploded")
        return "Here is your refund."

    clients = dry_run_clients(names)
    clients["student"] = ScriptedChatCompletionClient(agent)
    sim = quickstart(tmp_path, clients)
    plans = plan_episodes(sim.experiment.selected_scenarios()[:2], agents=["student"], trials=1, seed=0)
    first = asyncio.run(sim.run(plans, concurrency=2))
    assert all(e.termination is TerminationReason.INFRASTRUCTURE_ERROR and e.verdict is None for e in first)
    assert sim.pending(plans, resume=True) == []
    down["on"] = False
    again = sim.pending(plans, resume=True, retry_failed=True)
    assert len(again) == 2
    asyncio.run(sim.run(again, concurrency=2))
    # each is judged now, or (when the scripted customer repeats itself) counted as a simulator fault
    assert all((e.verdict is None) == (e.simulator_fault is not None) for e in sim.log.read().values())
    assert sim.summary().infrastructure_errors == 0


def test_trials_get_distinct_seeds_and_fresh_answers(tmp_path: Path) -> None:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    plans = plan_episodes(exp.selected_scenarios(), agents=["student"], trials=4, seed=0)
    assert len({p.seed for p in plans}) == len(plans)
    assert plan_episodes(exp.selected_scenarios(), agents=["student"], trials=4, seed=0) == plans


def timeless_records(path: Path) -> list[dict[str, object]]:
    """The episode records in file order, without wall-clock fields."""
    rows: list[dict[str, object]] = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        row.pop("duration_s")
        for usage in row["usage"].values():
            usage.pop("model_seconds")
        rows.append(row)
    return rows


def test_on_in_process_models_each_scenarios_episodes_run_back_to_back_and_are_the_same_episodes(
    tmp_path: Path,
) -> None:
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")  # embedded models
    names = ["customer", "judge", "student"]
    plans = plan_episodes(exp.selected_scenarios(), agents=["student"], trials=3, seed=0)
    assert [p.scenario.id for p in plans[:2]] != [plans[0].scenario.id] * 2  # planned: trials interleaved
    runs: dict[str, list[dict[str, object]]] = {}
    for order in ("grouped", "interleaved"):
        backends = build_backends(exp, names, clients=dry_run_clients(names))
        sim = Simulation(
            exp, backends, out_dir=tmp_path / order, use_cache=False, order=None if order == "grouped" else order
        )
        assert sim.order == order  # grouped is what embedded models get by default
        asyncio.run(sim.run(plans, concurrency=1))
        runs[order] = timeless_records(tmp_path / order / "episodes.jsonl")
    grouped = [(r["scenario_id"], r["trial"]) for r in runs["grouped"]]
    scenarios = list(dict.fromkeys(p.scenario.id for p in plans))
    assert grouped == [(s, t) for s in scenarios for t in range(3)]
    assert [r["id"] for r in runs["interleaved"]] == [p.id for p in plans]
    # Only the order differs: every episode (seed, transcript, verdict, usage) is the same.
    assert sorted(runs["grouped"], key=lambda r: str(r["id"])) == sorted(
        runs["interleaved"], key=lambda r: str(r["id"])
    )


def test_on_servers_trials_stay_interleaved_and_grouping_keeps_the_planned_order_within_a_scenario(
    tmp_path: Path,
) -> None:
    exp = load_experiment(ROOT / "experiments" / "openai.yaml")
    names = ["customer", "judge", "student"]
    sim = Simulation(exp, build_backends(exp, names, clients=dry_run_clients(names)), out_dir=tmp_path, use_cache=False)
    assert sim.order == "interleaved"
    plans = plan_episodes(exp.selected_scenarios()[:2], agents=["student", "teacher"], trials=2, seed=0)
    assert order_episodes(plans, "interleaved") == plans
    first, second = plans[0].scenario.id, plans[2].scenario.id
    assert [(p.scenario.id, p.agent_model, p.trial) for p in order_episodes(plans, "grouped")] == [
        (first, "student", 0),
        (first, "teacher", 0),
        (first, "student", 1),
        (first, "teacher", 1),
        (second, "student", 0),
        (second, "teacher", 0),
        (second, "student", 1),
        (second, "teacher", 1),
    ]


def test_episodes_in_flight_default_to_one_with_an_in_process_model_and_follow_the_file_when_set() -> None:
    """In-process models take turns on the CPU: more episodes in flight would only evict KV prefixes."""
    from dataclasses import replace

    from coachlab.experiments.simulate import episode_concurrency
    from coachlab.llm import Backend

    server = Backend.from_client("judge", ScriptedChatCompletionClient(lambda m: "ok"))
    local = replace(server, name="student", in_process=True)
    assert episode_concurrency(None, [server]) == 4
    assert episode_concurrency(None, [server, local]) == 1
    assert episode_concurrency(3, [server, local]) == 3  # what the file says wins
