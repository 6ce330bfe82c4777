"""`EpisodeRunner`: fresh agents over shared backends, one episode at a time.

Everything that runs episodes (simulate, verification, the train loop, evaluation) goes through
here, so each episode gets its own role clients (per-role seeds, usage and cache keys) and its
own AssistantAgents, while the backends and their limits are shared by the whole run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from coachlab.agents import build_customer, build_judge, build_service_agent
from coachlab.environments.bus import EventBus
from coachlab.environments.episode import (
    EnvironmentConfig,
    EpisodeAgents,
    GuidanceProvider,
    agent_reply,
    run_episode,
)
from coachlab.llm import Backend, ResponseCache, RoleClient
from coachlab.schema import Episode, RoleUsage, Scenario

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
    ) -> Episode:
        """Run one episode of `scenario` with `agent_model` as the service agent."""
        roles = {
            role: RoleClient(self.backends[name], role=role, seed=seed, trial=trial, cache=self.cache)
            for role, name in (("customer", "customer"), ("agent", agent_model), ("judge", "judge"))
        }

        def usage() -> dict[str, RoleUsage]:
            return {name: client.usage for name, client in roles.items()}

        agents = EpisodeAgents(
            customer=build_customer(model_client=roles["customer"]),
            agent=build_service_agent(model_client=roles["agent"]),
            judge=build_judge(model_client=roles["judge"]),
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
        self, scenario: Scenario, dialogue: list[tuple[str, str]], *, agent_model: str, seed: int
    ) -> tuple[str, RoleUsage]:
        """One reply of `agent_model` as the service agent after `dialogue`, and what it cost."""
        client = RoleClient(self.backends[agent_model], role="agent", seed=seed, trial=0, cache=self.cache)
        text = await agent_reply(build_service_agent(model_client=client), scenario, dialogue)
        return text, client.usage
