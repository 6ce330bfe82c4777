"""`EpisodeRunner`: fresh agents over shared backends, one episode at a time.

Everything that runs episodes (simulate, verification, the train loop, evaluation) goes through
here, so each episode gets its own role clients (per-role seeds, usage and cache keys) and its
own AssistantAgents, while the backends and their limits are shared by the whole run.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coachlab.agents import (
    ReplyComparison,
    build_comparer,
    build_customer,
    build_judge,
    build_service_agent,
    compare_replies,
)
from coachlab.environments.bus import EventBus
from coachlab.environments.episode import (
    EnvironmentConfig,
    EpisodeAgents,
    GuidanceProvider,
    agent_reply,
    run_episode,
)
from coachlab.errors import ModelResponseError
from coachlab.llm import Backend, ResponseCache, RoleClient
from coachlab.schema import Episode, Guidance, RoleUsage, Scenario

__all__ = ["EpisodeRunner"]


@dataclass
class EpisodeRunner:
    """Runs episodes with backends named `customer`, `judge` and one per agent model.

    Attributes:
        backends: Built backends by model entry name.
        environment: Turn limits and retries.
        cache: The role-aware response cache, or None.
        bus: Where events are published, or None.
    """

    backends: Mapping[str, Backend]
    environment: EnvironmentConfig
    cache: ResponseCache | None = None
    bus: EventBus | None = None

    async def run(
        self,
        scenario: Scenario,
        *,
        agent_model: str,
        trial: int,
        seed: int,
        episode_id: str,
        condition: str = "baseline",
        guidance: GuidanceProvider | None = None,
        mentor_model: str | None = None,
        student_share: float = 1.0,
    ) -> Episode:
        """Run one episode of `scenario` with `agent_model` as the service agent.

        With `mentor_model` and `student_share` below 1, each agent turn is played by `agent_model`
        with probability `student_share` and by the mentor otherwise (a mixed rollout). Which turns
        the mentor plays depends only on `seed`, so paired arms with the same seed mix alike.
        """
        cast = [("customer", "customer"), ("agent", agent_model), ("judge", "judge")]
        mentor_turns = mixed_turns(seed, student_share, self.environment.max_turns + len(scenario.prefix) + 1)
        if mentor_model is not None and mentor_turns:
            cast.append(("mentor", mentor_model))
        roles = {
            role: RoleClient(self.backends[name], role=role, seed=seed, trial=trial, cache=self.cache)
            for role, name in cast
        }

        def usage() -> dict[str, RoleUsage]:
            return {name: client.usage for name, client in roles.items()}

        agents = EpisodeAgents(
            customer=build_customer(model_client=roles["customer"]),
            agent=build_service_agent(model_client=roles["agent"]),
            judge=build_judge(model_client=roles["judge"]),
            mentor=build_service_agent(model_client=roles["mentor"], name="mentor") if "mentor" in roles else None,
            mentor_turns=mentor_turns if "mentor" in roles else frozenset(),
        )
        return await run_episode(
            scenario,
            agents,
            episode_id=episode_id,
            seed=seed,
            trial=trial,
            condition=condition,
            agent_model=agent_model,
            config=self.environment,
            bus=self.bus,
            guidance=guidance,
            usage=usage,
        )

    async def reply_at(
        self,
        scenario: Scenario,
        dialogue: list[tuple[str, str]],
        *,
        agent_model: str,
        seed: int,
        guidance: Sequence[Guidance] = (),
    ) -> tuple[str, RoleUsage]:
        """One reply of `agent_model` as the service agent after `dialogue`, and what it cost.

        Raises:
            BackendError: The model's backend failed for good (the caller decides what that costs).
        """
        client = RoleClient(self.backends[agent_model], role="agent", seed=seed, trial=0, cache=self.cache)
        text = await agent_reply(build_service_agent(model_client=client), scenario, dialogue, guidance=guidance)
        return text, client.usage

    async def compare_at(
        self, scenario: Scenario, dialogue: list[tuple[str, str]], first: str, second: str, *, seed: int
    ) -> tuple[ReplyComparison | None, RoleUsage]:
        """The judge's preference between two agent replies after `dialogue` (None if unreadable).

        Unreadable output is None (a judge error, never a preference); a failed backend is not.

        Raises:
            BackendError: The judge's backend failed for good.
        """
        client = RoleClient(self.backends["judge"], role="judge-compare", seed=seed, trial=0, cache=self.cache)
        try:
            comparison = await compare_replies(
                build_comparer(model_client=client), scenario, dialogue, first, second,
                retries=self.environment.judge_retries,
            )  # fmt: skip
        except ModelResponseError:
            comparison = None
        return comparison, client.usage


def mixed_turns(seed: int, student_share: float, limit: int) -> frozenset[int]:
    """The agent turns (below `limit`) that the mentor plays when the student plays `student_share` of them."""
    if student_share >= 1.0:
        return frozenset()
    rng = random.Random(f"mix:{seed}")
    return frozenset(t for t in range(limit) if rng.random() >= student_share)
