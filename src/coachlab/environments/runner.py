"""`EpisodeRunner`: fresh agents over shared backends, one episode at a time.

Everything that runs episodes (simulate, verification, the train loop, evaluation) goes through
here, so each episode gets its own role clients (per-role seeds, usage and cache keys) and its
own AssistantAgents, while the backends and their limits are shared by the whole run.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from autogen_agentchat.agents import AssistantAgent

from coachlab.agents import (
    ReplyComparison,
    build_comparer,
    build_customer,
    build_judge,
    build_line_grader,
    build_service_agent,
    compare_replies,
)
from coachlab.environments.bus import EventBus
from coachlab.environments.episode import (
    EnvironmentConfig,
    EpisodeAgents,
    ExpertConfig,
    GuidanceProvider,
    ReplySearch,
    agent_reply,
    run_episode,
)
from coachlab.environments.grading import JudgePanel, grade_checklist
from coachlab.errors import ModelResponseError, UsageError
from coachlab.judging import JudgeConfig
from coachlab.judging.gate import Similarity
from coachlab.library.retrieval import Placement
from coachlab.llm import Backend, ResponseCache, RoleClient
from coachlab.schema import Criterion, CriterionResult, Episode, Event, Guidance, Line, RoleUsage, Scenario
from coachlab.stats import seed_for

__all__ = ["CHECKLIST_CONTEXT", "EpisodeRunner"]

CHECKLIST_CONTEXT = "checklist"
"""The engine context of the checklist grader on the judge's backend (`Backend.client_for`).

The grader's prompts (its own system prompt, one agent line, one item) share no prefix with the
satisfaction judge's (system prompt, the case, the transcript). On one in-process llama.cpp context
each would evict the other's KV prefix every episode; in two, both stay warm from episode to episode.
"""
SURVEY_MAX_TOKENS = 200
"""Room for the post-chat survey's JSON answer (`judge.satisfaction: customer`): the customer's own
`max_tokens` is sized for one chat line."""


@dataclass
class EpisodeRunner:
    """Runs episodes with backends named `customer`, `judge` and one per agent model.

    Attributes:
        backends: Built backends by model entry name.
        environment: Turn limits and retries.
        cache: The role-aware response cache, or None.
        bus: Where events are published, or None.
        judging: Votes and checklist grading (the experiment's `judge:` section).
        similarity: The checklist's similarity gate, or None to grade without it.
        expert: How the expert plays the agent (best-of-N search).
        experts: The model entries that are experts (the teacher): they search, no other model does.
        placement: Where strategies sit in the service agent's messages (the experiment's `retrieval.placement`).
    """

    backends: Mapping[str, Backend]
    environment: EnvironmentConfig
    cache: ResponseCache | None = None
    bus: EventBus | None = None
    judging: JudgeConfig = field(default_factory=JudgeConfig)
    similarity: Similarity | None = None
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    experts: frozenset[str] = frozenset()
    placement: Placement = "system"

    def _grader_args(self, *, votes: int) -> dict[str, float] | None:
        """The checklist grader's call arguments: greedy with one vote (`judge.grader_temperature`)."""
        t = self.judging.grader_temperature
        return {"temperature": t} if t is not None and votes == 1 else None

    def search(self, model: str | None, *, seed: int, trial: int) -> tuple[ReplySearch | None, list[RoleClient]]:
        """The best-of-N search for `model` when it is an expert (else None), and its grader's client."""
        if model not in self.experts or self.expert.candidates < 2 or self.judging.checklist != "per_line":
            return None, []
        client = RoleClient(
            self.backends["judge"],
            role="judge-search",
            seed=seed_for(seed, "search"),
            trial=trial,
            cache=self.cache,
            context=CHECKLIST_CONTEXT,
            create_args=self._grader_args(votes=1),
        )
        panel = JudgePanel(
            judges=[],
            graders=[build_line_grader(model_client=client)],
            similarity=self.similarity,
            floor=self.judging.gate_floor,
            sure=self.judging.gate_sure,
            question=self.judging.question,
        )
        search = ReplySearch(candidates=self.expert.candidates, panel=panel, retries=self.environment.judge_retries)
        return search, [client]

    async def grade_lines(
        self, events: Sequence[Event], items: Sequence[Criterion], *, seed: int
    ) -> tuple[list[CriterionResult], RoleUsage]:
        """Grade the agent lines in `events` on `items` with the checklist judge (the experiment's votes and gate).

        Raises:
            BackendError: The judge's backend failed for good.
        """
        panel, clients = self.panel(seed=seed, trial=0, role="judge-reply")
        results = await grade_checklist(panel, items, events, retries=self.environment.judge_retries)
        return results, sum((c.usage for c in clients), RoleUsage())

    def panel(self, *, seed: int, trial: int, role: str = "judge") -> tuple[JudgePanel, list[RoleClient]]:
        """The judges of one episode (one satisfaction judge and one checklist grader per vote) and their clients.

        Vote 0 uses the episode's seed, so a one-vote run asks exactly what it always asked. The graders
        run in the judge backend's checklist context (`CHECKLIST_CONTEXT`). With `judge.satisfaction:
        customer` the satisfaction votes are the customer's post-chat survey, asked of the customer's backend
        in its main context (so the chat the customer read is not processed again), accounted as the judge's.

        Raises:
            UsageError: `judge.satisfaction: customer` without a `customer` backend.
        """
        backend = self.backends["judge"]
        survey = self.judging.satisfaction == "customer"
        # The survey is the customer's: its model, in its main context (where the chat is already processed),
        # with the judge's temperature and room for the JSON answer.
        rater = self.backends.get("customer") if survey else backend
        if rater is None:
            raise UsageError("judge.satisfaction: customer needs the `customer` model entry (it answers the survey)")
        rater_args = {"temperature": backend.temperature, "max_tokens": SURVEY_MAX_TOKENS} if survey else None
        clients: list[RoleClient] = []
        judges: list[AssistantAgent] = []
        graders: list[AssistantAgent] = []
        for vote in range(self.judging.votes):
            vote_seed = seed if vote == 0 else seed_for(seed, "vote", vote)
            judge = RoleClient(rater, role=role, seed=vote_seed, trial=trial, cache=self.cache, create_args=rater_args)
            clients.append(judge)
            judges.append(build_judge(model_client=judge))
            if self.judging.checklist == "per_line":
                grader = RoleClient(
                    backend,
                    role=f"{role}-checklist",
                    seed=vote_seed,
                    trial=trial,
                    cache=self.cache,
                    context=CHECKLIST_CONTEXT,
                    create_args=self._grader_args(votes=self.judging.votes),
                )
                clients.append(grader)
                graders.append(build_line_grader(model_client=grader))
        panel = JudgePanel(
            judges=judges,
            graders=graders,
            similarity=self.similarity,
            floor=self.judging.gate_floor,
            sure=self.judging.gate_sure,
            survey=survey,
            question=self.judging.question,
        )
        return panel, clients

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
        cast = [("customer", "customer"), ("agent", agent_model)]
        mentor_turns = mixed_turns(seed, student_share, self.environment.max_turns + len(scenario.prefix) + 1)
        if mentor_model is not None and mentor_turns:
            cast.append(("mentor", mentor_model))
        roles = {
            role: RoleClient(self.backends[name], role=role, seed=seed, trial=trial, cache=self.cache)
            for role, name in cast
        }

        panel, judge_clients = self.panel(seed=seed, trial=trial)
        agent_search, agent_graders = self.search(agent_model, seed=seed, trial=trial)
        mentor_search, mentor_graders = self.search(mentor_model if "mentor" in roles else None, seed=seed, trial=trial)

        def usage() -> dict[str, RoleUsage]:
            spent = {name: client.usage for name, client in roles.items()}
            # the expert's search asks the judge model too: its tokens are the judge's
            spent["judge"] = sum((c.usage for c in [*judge_clients, *agent_graders, *mentor_graders]), RoleUsage())
            return spent

        agents = EpisodeAgents(
            customer=build_customer(model_client=roles["customer"]),
            agent=build_service_agent(model_client=roles["agent"]),
            panel=panel,
            mentor=build_service_agent(model_client=roles["mentor"], name="mentor") if "mentor" in roles else None,
            mentor_turns=mentor_turns if "mentor" in roles else frozenset(),
            agent_search=agent_search,
            mentor_search=mentor_search,
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
            placement=self.placement,
        )

    async def reply_at(
        self,
        scenario: Scenario,
        dialogue: list[Line],
        *,
        agent_model: str,
        seed: int,
        guidance: Sequence[Guidance] = (),
    ) -> tuple[str, dict[str, RoleUsage]]:
        """One reply of `agent_model` as the service agent after `dialogue`, and what it cost by role.

        The cost is `agent` (the model's own tokens) and, when an expert model (the teacher) gives
        the best of `expert.candidates` replies on the checklist, `judge` (the grader's tokens).

        Raises:
            BackendError: The model's backend failed for good (the caller decides what that costs).
        """
        client = RoleClient(self.backends[agent_model], role="agent", seed=seed, trial=0, cache=self.cache)
        search, graders = self.search(agent_model, seed=seed, trial=0)
        agent = build_service_agent(model_client=client)
        text = await agent_reply(agent, scenario, dialogue, guidance=guidance, search=search, placement=self.placement)
        cost = {"agent": client.usage}
        if graders:
            cost["judge"] = sum((c.usage for c in graders), RoleUsage())
        return text, cost

    async def compare_at(
        self, scenario: Scenario, dialogue: list[Line], first: str, second: str, *, seed: int
    ) -> tuple[ReplyComparison | None, RoleUsage]:
        """The judge's preference between two agent replies after `dialogue` (None if unreadable).

        Unreadable output is None (a judge error, never a preference); a failed backend is not.

        Raises:
            BackendError: The judge's backend failed for good.
        """
        client = RoleClient(self.backends["judge"], role="judge-compare", seed=seed, trial=0, cache=self.cache)
        try:
            comparison = await compare_replies(
                build_comparer(model_client=client),
                scenario,
                dialogue,
                first,
                second,
                retries=self.environment.judge_retries,
            )
        except ModelResponseError:
            comparison = None
        return comparison, client.usage


def mixed_turns(seed: int, student_share: float, limit: int) -> frozenset[int]:
    """The agent turns (below `limit`) that the mentor plays when the student plays `student_share` of them."""
    if student_share >= 1.0:
        return frozenset()
    rng = random.Random(f"mix:{seed}")
    return frozenset(t for t in range(limit) if rng.random() >= student_share)
