"""A real two-turn episode on the embedded llama.cpp model (marked: slow, needs the weights)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coachlab.environments import EnvironmentConfig
from coachlab.experiments.config import load_experiment
from coachlab.experiments.simulate import Simulation, build_backends, plan_episodes
from coachlab.llm import ModelEntry
from coachlab.schema import TerminationReason
from conftest import require_embedded

ROOT = Path(__file__).resolve().parents[1]
MODEL = "qwen2.5-coder-0.5b"


@pytest.mark.embedded
def test_real_two_turn_episode_on_the_embedded_model(tmp_path: Path) -> None:
    require_embedded(MODEL)
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    small = ModelEntry(
        provider="embedded", config={"model": MODEL, "max_tokens": 48, "n_ctx": 2048, "temperature": 0.7}
    )
    judge = ModelEntry(
        provider="embedded", config={"model": MODEL, "max_tokens": 160, "n_ctx": 2048, "temperature": 0.2}
    )
    exp.config = exp.config.model_copy(update={"models": {"student": small, "customer": small, "judge": judge}})
    backends = build_backends(exp, ["customer", "judge", "student"])
    sim = Simulation(exp, backends, out_dir=tmp_path, environment=EnvironmentConfig(max_turns=2, max_reasks=1))
    plans = plan_episodes([exp.scenarios["retail-late-delivery"]], agents=["student"], trials=1, seed=0)
    (episode,) = asyncio.run(sim.run(plans, concurrency=1))
    assert episode.termination is not TerminationReason.INFRASTRUCTURE_ERROR, episode.termination_detail
    assert 1 <= episode.turns <= 2
    agent_lines = [e for e in episode.events if e.type == "agent_message"]
    assert agent_lines and all(e.text.strip() for e in agent_lines)
    assert episode.usage["agent"].completion_tokens > 0
    if episode.simulator_fault is not None:  # the customer model spoiled it: never judged
        assert episode.verdict is None and episode.usage["judge"].calls == 0
    else:
        # the judge's JSON-schema output parsed into a Verdict (or was retried and recorded, never a crash)
        assert episode.verdict is not None or episode.judge_error is not None
        assert episode.usage["judge"].calls >= 1
        if episode.verdict is not None:  # the scenario's checklist was graded item by item, with quotes checked
            ids = [c.id for c in exp.scenarios["retail-late-delivery"].success_criteria]
            assert [r.id for r in episode.verdict.criteria] == ids
            lines = {e.text for e in agent_lines}
            assert all(r.quote is None or r.quote in lines for r in episode.verdict.criteria)
    assert (tmp_path / "transcripts").is_dir() and sim.log.read()[episode.id] == episode
