"""Small builders shared by tests: personas, scenarios and scripted roles."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from autogen_core.models import LLMMessage

from coachlab.agents import build_customer, build_judge, build_service_agent
from coachlab.environments import EpisodeAgents
from coachlab.schema import (
    Episode,
    EpisodeEnded,
    Event,
    Persona,
    SatisfactionScore,
    Scenario,
    TerminationReason,
    Verdict,
)
from coachlab.testing import ScriptedChatCompletionClient

SECRET_GOAL = "secretly wants a free upgrade to the platinum plan"
HIDDEN = "is moving abroad next month"


def persona(**over: object) -> Persona:
    data: dict[str, object] = {
        "id": "dana",
        "name": "Dana",
        "description": "a commuter who relies on the service",
        "goal": SECRET_GOAL,
        "hidden_constraints": [HIDDEN],
        "satisfied_when": "a refund is confirmed with a reference number",
    }
    data.update(over)
    return Persona.model_validate(data)


def scenario(**over: object) -> Scenario:
    data: dict[str, object] = {
        "id": "late-parcel",
        "domain": "retail",
        "title": "Late parcel",
        "issue": "The parcel is five days late.",
        "facts": {"order_number": "A-100"},
        "policy": ["Refund shipping when a parcel is 2 or more days late."],
        "persona": persona(),
    }
    data.update(over)
    return Scenario.model_validate(data)


def score_json(score: int = 8, **over: object) -> str:
    """What a judge model writes: the `SatisfactionScore` fields of `verdict(score, **over)` as JSON."""
    return SatisfactionScore.model_validate(
        verdict(score, **over).model_dump(include=set(SatisfactionScore.model_fields))
    ).model_dump_json()


def scored(v: Verdict | None) -> dict[str, object] | None:
    """The judge's own fields of a verdict (what a checklist does not change), for comparisons."""
    return None if v is None else v.model_dump(include=set(SatisfactionScore.model_fields) - {"policy_followed"})


def verdict(score: int = 8, **over: object) -> Verdict:
    data: dict[str, object] = {
        "rationale": "fine",
        "satisfaction": score,
        "resolved": True,
        "policy_followed": True,
        "failure_turn": None,
        "customer_in_role": True,
    }
    data.update(over)
    return Verdict.model_validate(data)


def lines(*replies: str) -> Callable[[Sequence[LLMMessage]], str]:
    """A script that says `replies` in order, then repeats the last one."""
    it: Iterable[str] = iter(replies)
    last = [replies[-1]]

    def fn(messages: Sequence[LLMMessage]) -> str:
        for r in it:
            last[0] = r
            return r
        return last[0]

    return fn


def agents(
    customer: Callable[[Sequence[LLMMessage]], str],
    agent: Callable[[Sequence[LLMMessage]], str],
    judge: Callable[[Sequence[LLMMessage]], object] | None = None,
) -> tuple[EpisodeAgents, dict[str, ScriptedChatCompletionClient]]:
    clients = {
        "customer": ScriptedChatCompletionClient(customer),
        "agent": ScriptedChatCompletionClient(agent),
        "judge": ScriptedChatCompletionClient(judge or (lambda m: verdict())),  # type: ignore[arg-type]
    }
    return (
        EpisodeAgents(
            customer=build_customer(model_client=clients["customer"]),
            agent=build_service_agent(model_client=clients["agent"]),
            judge=build_judge(model_client=clients["judge"]),
        ),
        clients,
    )


def timeless(value: Any) -> Any:
    """`value` (parsed JSON) without the wall-clock seconds of model calls (`model_seconds`)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in cast("dict[str, Any]", value).items() if k != "model_seconds"}
    if isinstance(value, list):
        return [timeless(v) for v in cast("list[Any]", value)]
    return value


def logged_episode(
    sid: str, condition: str, trial: int, events: Sequence[Event], end: tuple[int, TerminationReason], v: Verdict
) -> Episode:
    """A judged student episode of `sid` as the episode log holds it (seed = trial), ending at `end` (turn, why)."""
    turns, reason = end
    return Episode(
        id=f"{sid}/{condition}/student/{trial}",
        scenario_id=sid,
        condition=condition,
        agent_model="student",
        trial=trial,
        seed=trial,
        events=[*events, EpisodeEnded(turn=turns, reason=reason)],
        termination=reason,
        verdict=v,
    )
