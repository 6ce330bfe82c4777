"""The event-driven episode runner: turn order, observation, termination, judging.

Why not an AgentChat team or AutoGen Core's runtime underneath? Both deliver every message to
every participant and let the agents accumulate what they hear. Here observation is the point:
the customer must see the dialogue from its own side with its private goal, the service agent
must never see that goal and gets fresh strategies each turn, and the judge sees the whole
transcript as quoted data only at the end. So the environment owns one event log and renders
each role's view from it (`ObservedContext.observe`) before calling that role's AssistantAgent
directly with `on_messages`. Turn order is a plain loop that the termination rules can read,
and each event is published on an `EventBus`. Measured in `benchmarks/overhead.py`, this costs
far less per model call than a `RoundRobinGroupChat` (whose runtime queues, topic routing and
per-message broadcast cost about 0.7 ms a call); the loop stays a small, readable function.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import Response
from autogen_agentchat.messages import StructuredMessage, TextMessage
from autogen_core import CancellationToken
from autogen_core.models import LLMMessage
from pydantic import BaseModel, ConfigDict, Field

from coachlab.agents import (
    CustomerEnding,
    ObservedContext,
    customer_view,
    judge_view,
    parse_agent_line,
    parse_customer_line,
    role_slip,
    service_view,
)
from coachlab.agents._structured import ask_structured
from coachlab.agents._text import normalize
from coachlab.environments.bus import EventBus
from coachlab.environments.grading import (
    JudgePanel,
    ReplyScore,
    SatisfactionView,
    combine_scores,
    grade_checklist,
    score_reply,
)
from coachlab.errors import CoachlabError, ModelResponseError
from coachlab.judging import simulator_fault
from coachlab.library.retrieval import Placement
from coachlab.schema import (
    AgentMessage,
    CustomerMessage,
    Episode,
    EpisodeEnded,
    Event,
    Guidance,
    GuidanceProvider,
    Line,
    RoleSlip,
    RoleUsage,
    SatisfactionScore,
    Scenario,
    Speaker,
    StrategyShown,
    TerminationReason,
    Verdict,
)

__all__ = [
    "EnvironmentConfig",
    "EpisodeAgents",
    "ExpertConfig",
    "JudgeResult",
    "ReplySearch",
    "agent_reply",
    "judge_dialogue",
    "judge_episode",
    "run_episode",
    "satisfaction_scores",
]

logger = logging.getLogger(__name__)


class EnvironmentConfig(BaseModel):
    """How episodes run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_turns: int = Field(default=8, ge=1, le=100, description="Customer lines before the episode stops.")
    max_reasks: int = Field(default=2, ge=0, le=10, description="Re-asks when a customer line reads like the agent's.")
    loop_repeats: int = Field(default=2, ge=1, le=10, description="Repeated lines in a row that count as a loop.")
    judge_retries: int = Field(default=2, ge=0, le=10, description="Re-asks when the judge's JSON is unreadable.")


class ExpertConfig(BaseModel):
    """How the teacher plays the service agent: evaluate's ceiling, train's expert replies and mentor turns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: int = Field(
        default=1,
        ge=1,
        le=16,
        # Privileged, like the hindsight teacher: it makes a small embedded teacher a ceiling worth
        # distilling. The student never searches.
        description="Replies the teacher samples per agent turn; the checklist grader keeps the one that shows the "
        "most items not yet shown and breaks none (1: no search).",
    )


@dataclass(frozen=True)
class ReplySearch:
    """Best of N replies for the expert (the teacher), chosen by the checklist grader.

    Privileged, like the hindsight teacher: the expert's replies are picked by how many checklist
    items not yet shown they show (must items first) and whether they break a forbidden one. The
    student never searches; this makes the embedded teacher a ceiling worth distilling.
    """

    candidates: int
    panel: JudgePanel
    """The grader (one vote) and gate that score the candidates."""
    retries: int = 2


@dataclass
class EpisodeAgents:
    """The agents of one episode (built fresh per episode by the factories)."""

    customer: AssistantAgent
    agent: AssistantAgent
    judge: AssistantAgent | None = None
    """A single satisfaction judge (no checklist, one vote); `panel` replaces it."""
    panel: JudgePanel | None = None
    """The judges: satisfaction votes and checklist graders (built by `EpisodeRunner`)."""
    mentor: AssistantAgent | None = None
    """Plays the agent turns in `mentor_turns` (the teacher, in the train loop's mixed rollouts)."""
    mentor_turns: frozenset[int] = frozenset()
    """Agent turn indices (counting prefix lines) that the mentor plays instead of the agent."""
    agent_search: ReplySearch | None = None
    """Best-of-N for the agent (set when the agent is the expert)."""
    mentor_search: ReplySearch | None = None
    """Best-of-N for the mentor's turns."""


@dataclass(frozen=True)
class JudgeResult:
    """The judge's verdict, or why there is none."""

    verdict: Verdict | None
    error: str | None = None
    backend_failed: bool = False
    """True when the judge's backend failed (an infrastructure error), False for unreadable output."""


async def _ask(
    agent: AssistantAgent, view: list[LLMMessage], token: CancellationToken
) -> TextMessage | StructuredMessage[BaseModel]:
    context = agent.model_context
    if not isinstance(context, ObservedContext):
        raise TypeError(f"agent {agent.name!r} must be built with an ObservedContext (use the coachlab factories)")
    context.observe(view)
    response: Response | None = None
    async with aclosing(agent.on_messages_stream([], token)) as stream:
        async for item in stream:
            if isinstance(item, Response):
                response = item
    if response is None:
        raise TypeError(f"agent {agent.name!r} gave no response")
    message = response.chat_message
    if isinstance(message, TextMessage | StructuredMessage):
        return message  # pyright: ignore[reportUnknownVariableType]
    raise TypeError(f"agent {agent.name!r} answered with {type(message).__name__}, expected text")


async def _reply(
    agent: AssistantAgent,
    scenario: Scenario,
    view: list[LLMMessage],
    token: CancellationToken,
    search: ReplySearch | None = None,
    shown: set[str] | None = None,
) -> str:
    """One agent line; with `search`, the best of its candidates on the items not in `shown` (updated)."""
    name = scenario.persona.name
    todo = [c for c in scenario.success_criteria if c.forbidden or c.id not in (shown or set())]
    if search is None or search.candidates < 2 or not todo:
        return parse_agent_line(str((await _ask(agent, view, token)).content), customer_name=name)
    best: tuple[str, ReplyScore] | None = None
    wanted = {c.id for c in todo if not c.forbidden}
    for _ in range(search.candidates):
        text = parse_agent_line(str((await _ask(agent, view, token)).content), customer_name=name)
        if not text:
            continue
        score = await score_reply(search.panel, todo, text, retries=search.retries, cancellation_token=token)
        if best is None or score.value > best[1].value:
            best = (text, score)
        if score.shows >= wanted and not score.breaks:
            break  # nothing left to gain
    if best is None:
        return ""
    if shown is not None:
        shown |= best[1].shows
    logger.debug("expert reply: best of %d shows %s", search.candidates, sorted(best[1].shows))
    return best[0]


async def agent_reply(
    agent: AssistantAgent,
    scenario: Scenario,
    dialogue: list[Line],
    *,
    guidance: Sequence[Guidance] = (),
    search: ReplySearch | None = None,
    cancellation_token: CancellationToken | None = None,
    placement: Placement = "system",
) -> str:
    """The service agent's next line after `dialogue` (the teacher's reply at a failure point).

    With `search` (the expert), the best of several candidates on the scenario's checklist.
    `placement` is where `guidance` sits in its messages (`RetrievalConfig.placement`).
    """
    view = service_view(scenario, dialogue, guidance, placement)
    return await _reply(agent, scenario, view, cancellation_token or CancellationToken(), search)


async def judge_dialogue(
    judge: AssistantAgent,
    scenario: Scenario,
    dialogue: list[Line],
    *,
    retries: int = 2,
    cancellation_token: CancellationToken | None = None,
) -> JudgeResult:
    """Ask one judge for a satisfaction score (a one-vote `Verdict`, no checklist); never raises for bad output.

    Backend failures (after the models layer's own retries) are returned as an error too, with
    `backend_failed` set: they say nothing about the dialogue.
    """
    return await judge_episode(
        JudgePanel(judges=[judge]), scenario, dialogue, [], retries=retries, cancellation_token=cancellation_token
    )


async def satisfaction_scores(
    judges: Sequence[AssistantAgent],
    scenario: Scenario,
    dialogue: list[Line],
    *,
    view: SatisfactionView = judge_view,
    retries: int = 2,
    cancellation_token: CancellationToken | None = None,
) -> tuple[list[SatisfactionScore], list[str]]:
    """Each judge's satisfaction score of the transcript, and the problems of the votes left unreadable.

    `view` builds what each is shown (`JudgePanel.satisfaction_view`: the judge's view or the customer's survey).

    Raises:
        Exception: A backend failure (after the models layer's retries) propagates.
    """
    scores: list[SatisfactionScore] = []
    problems: list[str] = []
    for judge in judges:
        try:
            scores.append(
                await ask_structured(
                    judge,
                    lambda problem: view(scenario, dialogue, correction=problem),
                    SatisfactionScore,
                    retries=retries,
                    who="the judge",
                    cancellation_token=cancellation_token,
                )
            )
        except ModelResponseError as exc:
            problems.append(str(exc))
    return scores, problems


async def judge_episode(
    panel: JudgePanel,
    scenario: Scenario,
    dialogue: list[Line],
    events: Sequence[Event],
    *,
    retries: int = 2,
    cancellation_token: CancellationToken | None = None,
) -> JudgeResult:
    """The episode's verdict: every satisfaction vote, then the checklist; never raises for bad output.

    Votes whose output stays unreadable are left out; with none readable there is no verdict (a
    judge error). A backend that fails for good gives no verdict and `backend_failed`.
    """
    try:
        scores, problems = await satisfaction_scores(
            panel.judges,
            scenario,
            dialogue,
            view=panel.satisfaction_view(),
            retries=retries,
            cancellation_token=cancellation_token,
        )
        if not scores:
            return JudgeResult(verdict=None, error=f"judge output unreadable: {problems[0]}")
        criteria = scenario.success_criteria if panel.graders else []
        results = (
            await grade_checklist(panel, criteria, events, retries=retries, cancellation_token=cancellation_token)
            if criteria
            else []
        )
    except CoachlabError:
        raise  # a user error (missing model, bad config) stops the run
    except Exception as exc:
        return JudgeResult(verdict=None, error=f"judge backend failed: {exc}", backend_failed=True)
    if problems:
        logger.warning("%d of %d judge votes unreadable: %s", len(problems), len(panel.judges), problems[0])
    return JudgeResult(verdict=combine_scores(scores, criteria, results))


async def run_episode(
    scenario: Scenario,
    agents: EpisodeAgents,
    *,
    episode_id: str,
    seed: int,
    trial: int,
    condition: str = "baseline",
    agent_model: str = "student",
    config: EnvironmentConfig | None = None,
    bus: EventBus | None = None,
    guidance: GuidanceProvider | None = None,
    usage: Callable[[], Mapping[str, RoleUsage]] | None = None,
    cancellation_token: CancellationToken | None = None,
    placement: Placement = "system",
) -> Episode:
    """Run one episode to its end and judge it.

    Never raises for model trouble: a backend that fails for good (the judge's included) ends the
    episode with `TerminationReason.INFRASTRUCTURE_ERROR` and no verdict, so that it is counted
    apart and re-run by `--resume --retry-failed`; an unreadable judge leaves `judge_error` set and
    no verdict. Neither is ever scored.

    Args:
        scenario: What to simulate.
        agents: Fresh customer, service agent and (optional) judge.
        episode_id: Unique id within the run.
        seed: The episode's seed (recorded; the models layer sends it).
        trial: Trial index.
        condition: Evaluation condition label.
        agent_model: Name of the model playing the service agent (recorded).
        config: Turn limits and retries.
        bus: Where events are published.
        guidance: Per-turn strategy retrieval for the service agent.
        usage: Reads the tokens each role spent, once the episode is judged (recorded on it).
        cancellation_token: Cancels the model calls in flight.
        placement: Where the strategies sit in the agent's messages (`RetrievalConfig.placement`).
    """
    cfg = config or EnvironmentConfig()
    token = cancellation_token or CancellationToken()
    started = time.perf_counter()
    events: list[Event] = []
    dialogue: list[Line] = []
    said: dict[str, list[str]] = {"customer": [], "agent": []}
    repeats = {"customer": 0, "agent": 0}
    counts = {"customer": 0, "agent": 0}
    name = scenario.persona.name
    shown_items: set[str] = set()  # checklist items the expert's searched lines showed

    def emit(event: Event) -> None:
        events.append(event)
        if bus is not None:
            bus.emit(episode_id, event)

    def say(who: Speaker, text: str, *, origin: Literal["model", "prefix", "opening", "mentor"] = "model") -> bool:
        """Record a line; True when it completes a loop."""
        turn = counts[who]
        counts[who] += 1
        if who == "customer":
            emit(CustomerMessage(turn=turn, text=text, origin="model" if origin == "mentor" else origin))
        else:
            emit(AgentMessage(turn=turn, text=text, origin="model" if origin == "opening" else origin))
        dialogue.append((who, text))
        norm = normalize(text)
        repeats[who] = repeats[who] + 1 if norm and norm in said[who] else 0
        said[who].append(norm)
        return repeats[who] >= cfg.loop_repeats

    for line in scenario.prefix:
        say(line.role, line.text, origin="prefix")
    next_speaker = "agent" if scenario.prefix and scenario.prefix[-1].role == "customer" else "customer"
    spoken = 0
    reason: TerminationReason | None = None
    detail = ""
    try:
        while reason is None:
            if next_speaker == "customer":
                if spoken >= cfg.max_turns:
                    reason, detail = TerminationReason.MAX_TURNS, f"{cfg.max_turns} customer turns"
                    break
                origin: Literal["model", "opening"] = "model"
                if spoken == 0 and not dialogue and scenario.opening_line:
                    text, ending, origin = scenario.opening_line, CustomerEnding.NONE, "opening"
                else:
                    text, ending, rules = await _customer_turn(
                        agents.customer, scenario, dialogue, cfg, counts["customer"], emit, token
                    )
                    if text is None:
                        reason = TerminationReason.CUSTOMER_OUT_OF_ROLE
                        detail = f"{len(rules)} customer replies in a row rejected ({', '.join(rules)})"
                        break
                spoken += 1
                looped = say("customer", text or f"({name} ends the chat)", origin=origin)
                if ending is CustomerEnding.SATISFIED:
                    reason = TerminationReason.CUSTOMER_SATISFIED
                elif ending is CustomerEnding.GAVE_UP:
                    reason = TerminationReason.CUSTOMER_GAVE_UP
                elif looped:
                    reason, detail = TerminationReason.LOOP_DETECTED, "the customer repeated itself"
                next_speaker = "agent"
            elif agents.mentor is not None and counts["agent"] in agents.mentor_turns:
                view = service_view(scenario, dialogue, ())
                text = await _reply(agents.mentor, scenario, view, token, agents.mentor_search, shown_items)
                if say("agent", text or "...", origin="mentor"):
                    reason, detail = TerminationReason.LOOP_DETECTED, "the agent repeated itself"
                next_speaker = "customer"
            else:
                shown: Sequence[Guidance] = ()
                if guidance is not None:
                    shown = await guidance(scenario, list(dialogue))
                    if shown:
                        emit(
                            StrategyShown(
                                turn=counts["agent"],
                                strategy_ids=[g.id for g in shown],
                                scores=[g.score for g in shown],
                            )
                        )
                view = service_view(scenario, dialogue, shown, placement)
                text = await _reply(agents.agent, scenario, view, token, agents.agent_search, shown_items)
                if say("agent", text or "..."):
                    reason, detail = TerminationReason.LOOP_DETECTED, "the agent repeated itself"
                next_speaker = "customer"
    except CoachlabError:
        raise  # a user error stops the run; it is no fault of the episode
    except Exception as exc:
        logger.warning("episode %s: infrastructure error: %s", episode_id, exc)
        reason, detail = TerminationReason.INFRASTRUCTURE_ERROR, f"{type(exc).__name__}: {exc}"
    emit(EpisodeEnded(turn=counts["customer"], reason=reason, detail=detail))

    result = JudgeResult(verdict=None, error=None)
    fault = simulator_fault(scenario, events, reason, detail) if reason.is_dialogue_outcome else None
    panel = agents.panel or (JudgePanel(judges=[agents.judge]) if agents.judge is not None else None)
    if panel is not None:
        if fault is not None:
            logger.info("episode %s: simulator fault, not judged: %s", episode_id, fault)
        elif reason.is_dialogue_outcome:
            result = await judge_episode(
                panel, scenario, dialogue, events, retries=cfg.judge_retries, cancellation_token=token
            )
        else:
            result = JudgeResult(verdict=None, error="not judged: the episode ended on an infrastructure error")
        if result.backend_failed:
            logger.warning("episode %s: infrastructure error: %s", episode_id, result.error)
            detail = f"{result.error} (after the dialogue ended: {reason.value})"
            reason = TerminationReason.INFRASTRUCTURE_ERROR
    episode = Episode(
        id=episode_id,
        scenario_id=scenario.id,
        condition=condition,
        agent_model=agent_model,
        trial=trial,
        seed=seed,
        events=events,
        termination=reason,
        termination_detail=detail,
        verdict=result.verdict,
        judge_error=result.error,
        simulator_fault=fault,
        usage=dict(usage()) if usage is not None else {},
        duration_s=round(time.perf_counter() - started, 3),
    )
    if bus is not None:
        bus.finish(episode)
    return episode


async def _customer_turn(
    customer: AssistantAgent,
    scenario: Scenario,
    dialogue: list[Line],
    cfg: EnvironmentConfig,
    turn: int,
    emit: Callable[[Event], None],
    token: CancellationToken,
) -> tuple[str | None, CustomerEnding, list[str]]:
    """Ask the customer for its line; re-ask while the line reads like the agent's.

    Returns the line (None when every attempt was rejected), its ending and the rules broken.
    """
    last_agent = next((text for who, text in reversed(dialogue) if who == "agent"), None)
    earlier = [text for who, text in dialogue if who == "customer"]
    rules: list[str] = []
    for _ in range(cfg.max_reasks + 1):
        view = customer_view(scenario, dialogue, slip_rule=rules[-1] if rules else None)
        message = await _ask(customer, view, token)
        text, ending = parse_customer_line(str(message.content), name=scenario.persona.name)
        if not text and ending is not CustomerEnding.NONE:
            return text, ending, rules
        rule = role_slip(text, last_agent_line=last_agent, earlier_lines=earlier, name=scenario.persona.name)
        if rule is None:
            return text, ending, rules
        emit(RoleSlip(turn=turn, text=text, rule=rule))
        rules.append(rule)
    return None, CustomerEnding.NONE, rules
