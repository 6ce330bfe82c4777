"""Real runs against a faulty backend: they finish, retry what is transient, record what is not, lose nothing.

`coachlab simulate`, `distill` (train then evaluate) and `evaluate` run in this process (typer's
runner) with OpenAI model entries at the loopback stub, which injects every kind of fault by role
and scenario: 500s, 429s with Retry-After, hangs past the timeout, connections dropped before and
in the middle of a response, and broken verdict JSON. Transient faults must be retried (the
Retry-After wait is measured from the stub's request times), persistent ones must end their
episode as an infrastructure error that the summary and the results count and that
`--resume --retry-failed` re-runs, and no episode may be scored that the judge did not score.
"""

from __future__ import annotations

import gc
import json
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from coachlab.cli import app
from coachlab.errors import UsageError
from coachlab.experiments.results import EpisodeLog, RunSummary
from coachlab.explorer import NodeStatus, ScenarioTree
from coachlab.library import LibraryStore
from coachlab.schema import Episode, TerminationReason
from coachlab.testing.faults import (
    BadJson,
    Drop,
    Fault,
    FaultPlan,
    FaultRule,
    Hang,
    HttpError,
    rate_limited,
    server_error,
)
from coachlab.testing.openai_stub import STUB_MODEL_INFO, OpenAIStub, StubRequest, default_reply, request_text
from helpers import score_json, scored, verdict

ROOT = Path(__file__).resolve().parents[1]
RETRY = {"max_retries": 6, "initial_backoff_s": 0.005, "max_backoff_s": 1.0}
INFRA = TerminationReason.INFRASTRUCTURE_ERROR

# Which scenario a request is about: a phrase of its issue (the judge's view) or of its records (the agent's).
CHICAGO = r"flight from Chicago|ORD-BOS"  # travel-cancelled-flight
SUITCASE = r"suitcase did not arrive|SEA-SB-20931"  # travel-lost-baggage
SWEATER = r"size 8"  # retail-wrong-item


def reply(request: dict[str, Any]) -> str:
    """A short story: the customer complains then leaves; the judge scores 3, or 9 when the teacher answered."""
    model = request.get("model")
    text = request_text(request, role="user")
    if model == "customer":
        return "Thanks, I'll wait then. [DONE]" if "Agent:" in text else "My order has a problem, can you help?"
    if model == "student":
        return "Please wait, it will be sorted."
    if model == "teacher" and request.get("response_format") is None:
        return "I've fixed it for you now: reference R-1, done today."
    if model == "judge" and "<reply A>" not in text and "<message>" not in text:
        good = "reference R-1" in text
        return score_json(9 if good else 3, resolved=good, failure_turn=None if good else 0)
    return default_reply(request)  # the teacher's strategies and children, the judge's comparisons


def write_experiment(tmp_path: Path, stub: OpenAIStub, *, timeout_s: float = 0.5) -> Path:
    def entry(name: str) -> dict[str, Any]:
        config = {
            "model": name,
            "base_url": stub.url,
            "api_key": "${FAULTS_KEY:-not-needed}",
            "model_info": dict(STUB_MODEL_INFO),
        }
        return {"provider": "openai", "config": config, "retry": {**RETRY, "timeout_s": timeout_s}}

    experiment = {
        "name": "faults",
        "personas": [str(ROOT / "personas")],
        "scenarios": [str(ROOT / "scenarios" / "retail.yaml"), str(ROOT / "scenarios" / "travel.yaml")],
        "models": {name: entry(name) for name in ("student", "teacher", "customer", "judge")},
        "environment": {"max_turns": 2},
        "simulate": {
            "agents": ["student"],
            "scenarios": [
                "retail-late-delivery",
                "travel-cancelled-flight",
                "travel-lost-baggage",
                "retail-wrong-item",
            ],
            "trials": 2,
            "concurrency": 4,
        },
        "train": {
            "scenarios": ["retail-late-delivery"],
            "trials": 2,
            "strategies_per_failure": 1,
            "children_per_failure": 1,
            "verify": {"trials": 2, "refine_rounds": 0},
            "max_nodes": 2,
            "max_depth": 1,
            "max_iterations": 2,
        },
        "evaluate": {"scenarios": ["travel-cancelled-flight"], "trials": 1},
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    return path


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Every client is closed by the command: no unclosed socket or transport is left to the garbage collector."""
    yield
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []


def coachlab(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def episodes_file(path: Path) -> list[str]:
    """The ids of the episode records in the order they were written (a re-run episode appears again)."""
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def waits_after(requests: list[StubRequest], fault: Fault) -> list[float]:
    """For each request that got `fault`, the time until the same call came again."""
    waits: list[float] = []
    for i, faulted in enumerate(requests):
        if faulted.fault == fault:
            again = next(r for r in requests[i + 1 :] if r.body == faulted.body)
            waits.append(again.at - faulted.at)
    return waits


def test_simulate_survives_every_fault_kind_and_retry_failed_reruns_exactly_the_failed_episodes(
    tmp_path: Path, no_leaks: None
) -> None:
    plan = FaultPlan(
        # persistent: every call of that kind fails, however often it is retried
        FaultRule(server_error("agent backend down"), model="student", pattern=CHICAGO),
        FaultRule(HttpError(503, "judge backend down"), model="judge", pattern=SUITCASE),
        FaultRule(BadJson("wrong_fields"), model="judge", pattern=SWEATER),  # a judge that never answers in form
        # transient: a few of each, anywhere
        FaultRule(server_error(), model="customer", count=2),
        FaultRule(rate_limited(retry_after=0.2), model="student", count=2),
        FaultRule(Hang(seconds=30), model="customer", count=1),
        FaultRule(Drop("before_response"), model="student", count=1),
        FaultRule(Drop("mid_body"), model="customer", count=1),
        FaultRule(BadJson("truncated"), model="judge", count=1),
        FaultRule(BadJson("malformed"), model="judge", count=1),
    )
    with OpenAIStub(reply=reply, behaviour=plan, keep=10_000) as stub:
        experiment = write_experiment(tmp_path, stub)
        first = coachlab("simulate", str(experiment))
        injected = stub.faults_injected
        requests = stub.requests

        assert first.exit_code == 0, first.output
        run = tmp_path / "run"
        summary = RunSummary.model_validate_json((run / "summary.json").read_text())
        episodes = EpisodeLog(run / "episodes.jsonl").read()
        assert len(episodes) == summary.episodes == 8
        failed = sorted(i for i, e in episodes.items() if e.termination is INFRA)
        assert failed == [
            f"{s}/baseline/student/{t}" for s in ("travel-cancelled-flight", "travel-lost-baggage") for t in (0, 1)
        ]
        assert summary.infrastructure_errors == 4 and summary.judge_errors == 2 and summary.judged == 2
        assert "4 infrastructure errors (re-run with --resume --retry-failed); 2 judge errors" in first.output
        assert "(unreadable verdicts: not scored, not re-run)" in first.output
        for e in episodes.values():
            if e.scenario_id == "retail-late-delivery":
                # recovered from every transient fault
                assert scored(e.verdict) == scored(verdict(3, failure_turn=0, resolved=False))
            else:
                assert e.verdict is None  # never scored: no satisfaction recorded for what the judge did not score
        unreadable = [e for e in episodes.values() if e.scenario_id == "retail-wrong-item"]
        assert all(e.termination is not INFRA and e.judge_error and "unreadable" in e.judge_error for e in unreadable)
        assert all(
            "judge backend failed" in (e.judge_error or "")
            for e in episodes.values()
            if e.scenario_id == "travel-lost-baggage"
        )
        assert summary.overall["student/baseline"].n == 2  # only the two judged episodes are averaged
        # every transient fault fired, and the Retry-After wait happened before each retry
        assert {k: injected[k] for k in ("http_429", "hang", "drop_before_response", "drop_mid_body")} == {
            "http_429": 2,
            "hang": 1,
            "drop_before_response": 1,
            "drop_mid_body": 1,
        }
        assert injected["bad_json_truncated"] == injected["bad_json_malformed"] == 1
        waited = waits_after(requests, rate_limited(retry_after=0.2))
        assert len(waited) == 2 and all(0.2 <= w < 1.5 for w in waited), waited  # waited, then went on
        assert len(waits_after(requests, server_error())) == 2  # each transient 500 was followed by its retry

        # The backends are back: --resume --retry-failed runs those four episodes again, nothing else.
        stub.behaviour = None
        before = episodes_file(run / "episodes.jsonl")
        again = coachlab("simulate", str(experiment), "--resume", "--retry-failed")
    assert again.exit_code == 0, again.output
    assert "(4 already done)" in again.output
    assert (
        episodes_file(run / "episodes.jsonl")[len(before) :] != []
        and sorted(episodes_file(run / "episodes.jsonl")[len(before) :]) == failed
    )
    summary = RunSummary.model_validate_json((run / "summary.json").read_text())
    assert summary.infrastructure_errors == 0 and summary.episodes == 8
    assert summary.judge_errors == 2  # unreadable verdicts are the model's answers, not re-run (see the docs)
    print(f"\nsimulate: faults injected {dict(injected)}; 8/8 episodes kept; 4 re-run by --retry-failed")


def test_distill_keeps_going_past_a_dead_teacher_and_a_dead_student_and_retry_failed_redoes_both(
    tmp_path: Path, no_leaks: None
) -> None:
    plan = FaultPlan(
        FaultRule(server_error("teacher down"), model="teacher", json_only=True),  # it can answer, not write
        FaultRule(server_error("student down"), model="student", pattern=CHICAGO),  # held out: evaluation only
        FaultRule(Hang(seconds=30), model="teacher", count=1),
        FaultRule(rate_limited(retry_after=0.2), model="judge", count=1),
        FaultRule(Drop("mid_body"), model="customer", count=1),
    )
    with OpenAIStub(reply=reply, behaviour=plan, keep=10_000) as stub:
        experiment = write_experiment(tmp_path, stub)
        first = coachlab("distill", str(experiment))
        injected = stub.faults_injected
        assert first.exit_code == 0, first.output
        run = tmp_path / "run"
        tree = ScenarioTree.load(run / "tree.json")
        root = tree.node("retail-late-delivery")
        assert root.status is NodeStatus.ERROR and root.error is not None and "teacher down" in root.error
        assert root.strategy_ids == [] and tree.children(root.id) == [] and len(tree) == 1
        assert LibraryStore(run / "library").versions() == []  # nothing learned from the failure
        assert "1 node(s) hit infrastructure errors" in first.output and "--resume --retry-failed" in first.output
        results = json.loads((run / "evaluation" / "results.json").read_text())
        rows = {r["condition"]: r for r in results["students"][0]["rows"]}
        # one per student condition: baseline, generic, library and the control arms oracle and placebo
        assert results["infrastructure_errors"] == 5 == sum(r["infrastructure_errors"] for r in rows.values())
        assert all(r["judged"] == 0 and r["satisfaction"]["mean"] is None for r in rows.values())
        assert results["teacher"]["judged"] == 1 and results["teacher"]["infrastructure_errors"] == 0
        assert (
            "Not scored: 5 episode(s) ended on infrastructure errors" in (run / "evaluation" / "results.md").read_text()
        )
        assert injected["hang"] == injected["http_429"] == injected["drop_mid_body"] == 1

        # The backends are back: distill --resume --retry-failed redoes the node, then evaluates the new library.
        stub.behaviour = None
        again = coachlab("distill", str(experiment), "--resume", "--retry-failed")
    assert again.exit_code == 0, again.output
    assert "Redone after infrastructure errors: retail-late-delivery" in again.output
    assert "evaluating from the start" in again.output  # the library changed, so the old numbers are stale
    tree = ScenarioTree.load(run / "tree.json")
    root = tree.node("retail-late-delivery")
    assert root.status is NodeStatus.EXPANDED and root.strategy_ids and root.error is None
    assert all(n.status is not NodeStatus.ERROR for n in tree.nodes()) and len(tree) == 2
    train_ids = episodes_file(run / "train" / "episodes.jsonl")
    assert len(train_ids) == len(set(train_ids))  # the failed attempt's episodes were dropped, not duplicated
    evaluation = EpisodeLog(run / "evaluation" / "episodes.jsonl").read()
    assert len(evaluation) == 6 and all(e.verdict is not None for e in evaluation.values())
    results = json.loads((run / "evaluation" / "results.json").read_text())
    assert results["infrastructure_errors"] == 0
    print(f"\ndistill: faults injected {dict(injected)}; node redone, 6/6 evaluation episodes judged")


def test_evaluate_retry_failed_reruns_exactly_the_infrastructure_errors(tmp_path: Path, no_leaks: None) -> None:
    plan = FaultPlan(FaultRule(Drop("before_response"), model="student", pattern=CHICAGO))
    with OpenAIStub(reply=reply, behaviour=plan, keep=10) as stub:
        experiment = write_experiment(tmp_path, stub)
        first = coachlab("evaluate", str(experiment))
        assert first.exit_code == 0, first.output
        assert "| 1 / 0 / 0 |" in first.output and "Not scored: 5 episode(s)" in first.output
        log = tmp_path / "run" / "evaluation" / "episodes.jsonl"
        failed = sorted(i for i, e in EpisodeLog(log).read().items() if e.termination is INFRA)
        injected = stub.faults_injected
        assert injected == {"drop_before_response": 5 * 7}  # 5 episodes, each call tried 1 + 6 times
        before = episodes_file(log)
        stub.behaviour = None
        alone = CliRunner().invoke(app, ["evaluate", str(experiment), "--retry-failed"])
        assert isinstance(alone.exception, UsageError) and "use it with --resume" in str(alone.exception)
        again = coachlab("evaluate", str(experiment), "--resume", "--retry-failed")
    assert again.exit_code == 0, again.output
    assert sorted(episodes_file(log)[len(before) :]) == failed and len(failed) == 5
    assert "Every episode was scored" in again.output
    episodes: dict[str, Episode] = EpisodeLog(log).read()
    assert Counter(e.condition for e in episodes.values()) == {
        "baseline": 1,
        "generic": 1,
        "library": 1,
        "oracle": 1,
        "placebo": 1,
        "teacher": 1,
    }
    print(f"\nevaluate: faults injected {dict(injected)}; 3 re-run by --retry-failed, 4/4 judged")
