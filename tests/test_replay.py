"""Reproducing runs: `--replay` from a recorded cache alone, and cache keys that never cross servers.

The recorded runs talk to the loopback OpenAI stub (scripted replies) through the real CLI; the
replays run after the stub is gone and with the key variable unset, so a model call or a key lookup
would fail.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from coachlab.cli import app
from coachlab.errors import CoachlabError
from coachlab.experiments.resolved import load_record
from coachlab.judging.calibration import CalibrationReport
from coachlab.llm import Backend, ModelEntry
from coachlab.testing.openai_stub import STUB_MODEL_INFO, OpenAIStub
from test_backend_faults import reply, write_experiment

KEY = "COACHLAB_REPLAY_TEST_KEY"
CALIBRATION = CalibrationReport.model_validate(
    {"judge": "judge-under-test", "votes": 1, "gate": False, "cases": 49, "unreadable": 0, "items": 200}
    | dict.fromkeys(
        [
            "item_accuracy",
            "item_kappa",
            "false_met_rate",
            "missed_met_rate",
            "split_item_rate",
            "ordering_checklist",
            "ordering_satisfaction",
            "handoff_satisfaction_at_least_good",
            "handoff_task_success",
            "good_task_success",
            "spearman_checklist",
            "spearman_satisfaction",
        ],
    )
    | {"accuracy_by_variant": {}, "seconds_per_verdict": 1.0}
)
SERVER = "COACHLAB_REPLAY_TEST_SERVER"


@dataclass(frozen=True)
class Ran:
    code: int
    output: str


def coachlab(*args: str) -> Ran:
    """A command in this process, ended as `coachlab` ends it (exit 2 and the message for a coachlab error)."""
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, CoachlabError):
        return Ran(2, str(result.exception))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return Ran(result.exit_code, result.output)


def recorded_experiment(tmp_path: Path, stub: OpenAIStub) -> Path:
    """The fault tests' experiment at `stub`, with a key that must come from the environment."""
    path = write_experiment(tmp_path, stub)
    path.write_text(path.read_text().replace("${FAULTS_KEY:-not-needed}", "${" + KEY + "}"))
    return path


def test_replay_of_a_finished_run_reproduces_results_json_byte_for_byte_with_no_model_and_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY, "sk-replay-test-key-0123456789")
    run = tmp_path / "run"
    run.mkdir()
    (run / "calibration.json").write_text(CALIBRATION.model_dump_json())  # `coachlab judge calibrate` saved one
    with OpenAIStub(reply=reply, keep=10_000) as stub:
        experiment = recorded_experiment(tmp_path, stub)
        assert coachlab("distill", str(experiment)).code == 0
        assert coachlab("simulate", str(experiment)).code == 0  # into the same run folder
        assert stub.request_count > 0
    monkeypatch.delenv(KEY)  # no key, and (the stub stopped) no model

    replayed = coachlab("distill", str(experiment), "--replay", str(run))
    assert replayed.code == 0, replayed.output
    assert f"REPLAY of {run}" in replayed.output
    results = (run / "evaluation" / "results.json").read_bytes()
    assert (tmp_path / "run-replay" / "evaluation" / "results.json").read_bytes() == results
    assert json.loads(results)["fingerprint"] and json.loads(results)["calibration"]["judge"] == "judge-under-test"
    assert (tmp_path / "run-replay" / "evaluation" / "results.md").read_bytes() == (
        run / "evaluation" / "results.md"
    ).read_bytes()

    simulated = coachlab("simulate", str(experiment), "--replay", str(run), "--out", str(tmp_path / "sim-replay"))
    assert simulated.code == 0, simulated.output
    assert (tmp_path / "sim-replay" / "summary.json").read_bytes() == (run / "summary.json").read_bytes()
    # The replay's records name the same runs: same fingerprints.
    original, again = load_record(run), load_record(tmp_path / "run-replay")
    assert original is not None and again is not None and original.evaluate is not None and again.evaluate is not None
    assert again.evaluate.fingerprint == original.evaluate.fingerprint

    # The recording is left as it was, and a replay never writes into it.
    assert coachlab("distill", str(experiment), "--replay", str(run), "--out", str(run)).code == 2
    assert coachlab("distill", str(experiment), "--replay", str(run)).code == 2  # run-replay exists: --overwrite


def test_replay_stops_cleanly_at_the_first_call_the_recording_lacks_naming_the_role_and_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY, "sk-replay-test-key-0123456789")
    with OpenAIStub(reply=reply) as stub:
        experiment = recorded_experiment(tmp_path, stub)
        assert coachlab("simulate", str(experiment)).code == 0
    cache = tmp_path / "run" / "cache.sqlite"
    with sqlite3.connect(cache) as db:  # the recording lost its later answers (a run cut short, say)
        db.execute("DELETE FROM responses WHERE rowid > (SELECT MAX(rowid) / 2 FROM responses)")
    db.close()
    monkeypatch.delenv(KEY)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from coachlab.cli import main; main()",
            "simulate",
            str(experiment),
            "--replay",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert re.match(
        r"error: --replay: the recorded run holds no answer for the (customer|agent|judge) "
        r"\(model '(customer|student|judge)'\), call \d+ of that role in trial [01] with seed \d+; "
        r"its last message begins: ['\"].+",
        lines[0],
    ), lines[0]
    assert not (tmp_path / "run-replay" / "summary.json").exists()


def test_replay_refuses_an_experiment_that_differs_from_the_recording(tmp_path: Path) -> None:
    with OpenAIStub(reply=reply) as stub:
        experiment = write_experiment(tmp_path, stub)
        assert coachlab("simulate", str(experiment)).code == 0
    experiment.write_text(experiment.read_text().replace("max_turns: 2", "max_turns: 3"))
    replayed = coachlab("simulate", str(experiment), "--replay", str(tmp_path / "run"))
    assert replayed.code == 2
    assert "--replay: the experiment differs from the recorded simulate run" in replayed.output
    assert "environment.max_turns: 2 -> 3" in replayed.output


def test_replay_needs_a_recorded_run_folder(tmp_path: Path) -> None:
    experiment = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
    missing = coachlab("simulate", str(experiment), "--replay", str(tmp_path))
    assert missing.code == 2 and "holds no resolved.json" in missing.output
    both = coachlab("simulate", str(experiment), "--replay", str(tmp_path), "--dry-run")
    assert both.code == 2 and "choose one" in both.output


# -- cache keys -----------------------------------------------------------------------------------------------


def tagged(server: str) -> Any:
    """The fault tests' story, with the agent saying which server answered."""

    def answer(request: dict[str, Any]) -> str:
        text = reply(request)
        return f"{text} (server {server})" if request.get("model") == "student" else text

    return answer


def test_one_cache_for_two_servers_behind_one_variable_never_crosses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OpenAIStub(reply=tagged("A")) as a, OpenAIStub(reply=tagged("B")) as b:
        experiment = write_experiment(tmp_path, a)
        data = yaml.safe_load(experiment.read_text())
        for entry in data["models"].values():
            entry["config"]["base_url"] = "${" + SERVER + "}"
        data["cache"] = {"path": str(tmp_path / "shared" / "cache.sqlite")}
        data["simulate"]["scenarios"] = ["retail-late-delivery"]
        experiment.write_text(yaml.safe_dump(data, sort_keys=False))

        monkeypatch.setenv(SERVER, a.url)
        assert coachlab("simulate", str(experiment), "--out", str(tmp_path / "on-a")).code == 0
        monkeypatch.setenv(SERVER, b.url)
        assert coachlab("simulate", str(experiment), "--out", str(tmp_path / "on-b")).code == 0
        assert b.request_count == a.request_count > 0  # B answered every call itself: nothing of A's was replayed
        on_b = (tmp_path / "on-b" / "episodes.jsonl").read_text()
        assert "(server B)" in on_b and "(server A)" not in on_b

        monkeypatch.setenv(SERVER, a.url)
        calls = a.request_count
        assert coachlab("simulate", str(experiment), "--out", str(tmp_path / "on-a-again")).code == 0
        assert a.request_count == calls  # the same server again: every answer from the cache


def entry(**config: Any) -> ModelEntry:
    base: dict[str, Any] = {"model": "m", "base_url": "http://127.0.0.1:9/v1", "model_info": dict(STUB_MODEL_INFO)}
    return ModelEntry(provider="openai", config={**base, "api_key": "${" + KEY + "}", **config})


def test_cache_keys_cover_every_sampling_setting_and_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY, "sk-first-key-0123456789abcdef")

    def key(e: ModelEntry) -> str:
        return Backend.from_entry("student", e, where="test").model_key

    plain = key(entry(temperature=0.7))
    for setting in ({"max_tokens": 50}, {"top_p": 0.5}, {"temperature": 0.2}, {"seed": 3}, {"stop": ["x"]}):
        assert key(entry(**{"temperature": 0.7, **setting})) != plain, setting
    assert key(entry(temperature=0.7, timeout=5, max_retries=3)) == plain  # transport, not answers
    monkeypatch.setenv(KEY, "sk-second-key-9876543210fedcba")
    assert key(entry(temperature=0.7)) == plain and "sk-" not in plain
