"""Ctrl-C: every long command stops with one line saying how to resume, exit 130, no traceback; resume completes.

Each command runs in a child process against the loopback stub with 0.25 s of model latency, so
that the run is slow enough to interrupt. SIGINT is sent right after a request reaches the stub,
so it lands while a model call is awaited. Then the latency goes and `--resume` (in this process)
finishes the run: every planned episode is there, once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coachlab.cli import app
from coachlab.experiments.results import EpisodeLog
from coachlab.explorer import NodeStatus, ScenarioTree
from coachlab.testing.openai_stub import OpenAIStub
from test_backend_faults import reply, write_experiment

LATENCY_S = 0.25

CHILD = (
    # A process started with SIGINT ignored keeps ignoring it (Python installs its Ctrl-C handler only where the
    # signal was at its default), so under `nohup pytest` or `pytest &` in a script the child would finish with
    # exit 0. The child restores the default, as a user's terminal has it.
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from coachlab.cli import main; main()"
)
IGNORING_SIGINT = ["sh", "-c", 'trap "" INT; exec "$0" "$@"']
"""Starts the child with SIGINT ignored whatever this process does, so the tests check the worst case everywhere."""


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def interrupt(
    stub: OpenAIStub, args: list[str], ready: Callable[[], bool], signum: int = signal.SIGINT
) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Start `coachlab ARGS`, wait until `ready()`, send `signum` just after a model request arrives."""
    with subprocess.Popen(
        [*IGNORING_SIGINT, sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    ) as proc:
        try:
            deadline = time.monotonic() + 60
            while not ready() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            seen = stub.request_count
            while stub.request_count == seen and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            in_call = time.monotonic() - stub.requests[-1].at < LATENCY_S  # its answer is still held back
            assert proc.poll() is None, "the run ended before it could be interrupted"
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), in_call


@pytest.mark.parametrize("command", ["simulate", "train", "evaluate", "distill"])
def test_ctrl_c_prints_one_line_exits_130_and_resume_finishes_with_every_episode_once(
    tmp_path: Path, command: str
) -> None:
    run = tmp_path / "run"
    log = run / ("episodes.jsonl" if command == "simulate" else "evaluation/episodes.jsonl")
    if command in ("train", "distill"):
        log = run / "train" / "episodes.jsonl"
    with OpenAIStub(reply=reply, latency_s=LATENCY_S, keep=10) as stub:
        experiment = write_experiment(tmp_path, stub, timeout_s=30)
        sequential = ["--concurrency", "1"] if command == "evaluate" else []  # else all 4 episodes end together
        stopped, in_call = interrupt(stub, [command, str(experiment), *sequential], ready=lambda: len(ids(log)) >= 1)

        assert stopped.returncode == 130, stopped.stderr
        lines = [line for line in stopped.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, stopped.stderr  # one line: no traceback, no log noise
        assert lines[0].startswith("Interrupted:") and f"coachlab {command} {experiment}" in lines[0]
        assert lines[0].endswith("--resume") and "Traceback" not in stopped.stdout
        assert in_call, "SIGINT landed while a model call was awaited"
        kept = ids(log)
        assert kept and len(kept) == len(set(kept))

        stub.latency_s = 0.0
        resumed = CliRunner().invoke(app, [command, str(experiment), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    if command == "simulate":
        assert f"({len(kept)} already done)" in resumed.output
        assert len(set(ids(log))) == len(ids(log)) == 8  # 4 scenarios x 2 trials, each once
    if command in ("train", "distill"):
        tree = ScenarioTree.load(run / "tree.json")
        assert all(n.status is not NodeStatus.FRONTIER for n in tree.nodes()) and len(tree) == 2
        written = ids(log)
        assert len(written) == len(set(written))  # the node that was cut short was redone, not doubled
        assert {e for n in tree.nodes() for e in n.episode_ids} <= set(written)
    if command in ("evaluate", "distill"):
        evaluation = run / "evaluation" / "episodes.jsonl"
        assert len(set(ids(evaluation))) == len(ids(evaluation)) == 6  # 5 student conditions + the teacher
        assert len(EpisodeLog(evaluation).read()) == 6 and (run / "evaluation" / "results.json").exists()


def test_sigterm_stops_a_run_like_ctrl_c_and_resume_finishes(tmp_path: Path) -> None:
    """`kill PID`, `docker stop` and schedulers send SIGTERM: the run is saved and says how to resume, as on Ctrl-C."""
    run = tmp_path / "run"
    log = run / "train" / "episodes.jsonl"
    with OpenAIStub(reply=reply, latency_s=LATENCY_S, keep=10) as stub:
        experiment = write_experiment(tmp_path, stub, timeout_s=30)
        stopped, _ = interrupt(
            stub, ["train", str(experiment)], ready=lambda: len(ids(log)) >= 1, signum=signal.SIGTERM
        )
        assert stopped.returncode == 130, stopped.stderr
        lines = [line for line in stopped.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Interrupted:") and lines[0].endswith("--resume"), lines
        kept = ids(log)
        stub.latency_s = 0.0
        resumed = CliRunner().invoke(app, ["train", str(experiment), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    written = ids(log)
    assert set(kept) <= set(written) and len(written) == len(set(written))
