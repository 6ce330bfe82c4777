"""Statistics and the run summary on known numbers."""

from __future__ import annotations

import asyncio

from coachlab.environments import run_episode
from coachlab.experiments.results import summarize
from coachlab.schema import Episode
from coachlab.stats import bootstrap_mean, pass_hat_k
from helpers import agents, lines, scenario, verdict


def test_bootstrap_mean_brackets_the_mean_and_is_deterministic() -> None:
    values = [2.0, 4.0, 6.0, 8.0, 10.0]
    est = bootstrap_mean(values, seed=1)
    assert est.mean == 6.0 and est.n == 5
    assert est.low is not None and est.high is not None
    assert 2.0 <= est.low < 6.0 < est.high <= 10.0
    assert bootstrap_mean(values, seed=1) == est
    assert bootstrap_mean([], seed=1).mean is None
    assert str(bootstrap_mean([7.0])) == "7.00"


def test_pass_hat_k_needs_every_trial() -> None:
    assert pass_hat_k([7, 8, 9], threshold=7)
    assert not pass_hat_k([7, 8, 6], threshold=7)
    assert not pass_hat_k([], threshold=7)


def episode(i: int, score: int, customer: list[str]) -> Episode:
    ags, _ = agents(customer=lines(*customer), agent=lines(f"answer {i}"), judge=lambda m: verdict(score))
    return asyncio.run(run_episode(scenario(), ags, episode_id=f"late-parcel/baseline/student/{i}", seed=i, trial=i))


def test_summary_groups_scores_and_counts_role_adherence() -> None:
    eps = [
        episode(0, 8, ["hi", "thanks [DONE]"]),
        episode(1, 4, ["hi", "How can I help you?", "ok [DONE]"]),  # one slip, recovered
        episode(2, 6, ["hi", "fine [DONE]"]),
    ]
    s = summarize(eps, threshold=7)
    (group,) = s.groups
    assert group.satisfaction.mean == 6.0 and group.judged == 3 and group.pass_k is False
    assert group.terminations == {"customer_satisfied": 3}
    assert s.adherence.customer_turns == 6  # model-written customer lines (the slip was re-asked)
    assert s.adherence.first_try_in_role is not None
    assert abs(s.adherence.first_try_in_role - 5 / 6) < 1e-9
    assert s.adherence.final_in_role == 1.0
    assert s.overall["student/baseline"].mean == 6.0
