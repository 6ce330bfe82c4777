"""SIGKILL at 10 random points of a train + evaluate run; each time resume; nothing is lost or changed.

The run is `tests/crash_run.py`: what `coachlab distill --dry-run --resume` runs, with a little
latency per model call. The final tree, every library version, the evaluation results, the
episodes and the transcripts must equal those of an uninterrupted run: byte-equal, except
wall-clock fields (audit and version timestamps, episode durations, seconds in the model) and line
order where the order is free.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import timeless

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "crash_run.py"
EXPERIMENT = ROOT / "experiments" / "quickstart.yaml"
KILLS = 10


def start(run_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir.parent / f"{run_dir.name}.stderr").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), str(EXPERIMENT), str(run_dir)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def stderr(run_dir: Path) -> str:
    return (run_dir.parent / f"{run_dir.name}.stderr").read_text()


def finished_episodes(run_dir: Path) -> int:
    total = 0
    for part in ("train", "evaluation"):
        path = run_dir / part / "episodes.jsonl"
        if path.exists():
            total += path.read_bytes().count(b"\n")
    return total


def records(path: Path) -> list[dict[str, object]]:
    """Episode records sorted by id, wall-clock durations dropped; duplicates would show."""
    rows = [timeless(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        row.pop("duration_s")
    return sorted(rows, key=lambda r: str(r["id"]))


def library(run_dir: Path) -> list[dict[str, object]]:
    versions = []
    for path in sorted((run_dir / "library").glob("v*.json")):
        data = json.loads(path.read_text())
        data.pop("created_at")
        for strategy in data["strategies"]:
            for entry in strategy["audit"]:
                entry.pop("at")
        versions.append(data)
    return versions


def snapshot(run_dir: Path) -> dict[str, object]:
    transcripts = sorted((run_dir / "train" / "transcripts").glob("*.md")) + sorted(
        (run_dir / "evaluation" / "transcripts").glob("*.md")
    )
    return {
        "tree": timeless(json.loads((run_dir / "tree.json").read_bytes())),
        "library": library(run_dir),
        "results": timeless(json.loads((run_dir / "evaluation" / "results.json").read_bytes())),
        "results.md": (run_dir / "evaluation" / "results.md").read_bytes(),
        "train episodes": records(run_dir / "train" / "episodes.jsonl"),
        "evaluation episodes": records(run_dir / "evaluation" / "episodes.jsonl"),
        "transcripts": {p.name: p.read_bytes() for p in transcripts},
    }


def test_sigkill_at_10_random_points_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    ref = start(whole)
    assert ref.wait(timeout=120) == 0, stderr(whole)
    expected = snapshot(whole)
    total = finished_episodes(whole)
    assert total >= 20 and len(expected["library"]) >= 1  # type: ignore[arg-type]

    rng = random.Random(2408)
    points = sorted(rng.sample(range(1, total), KILLS))
    crashed = tmp_path / "crashed"
    kills = 0
    for point in points:
        proc = start(crashed)
        deadline = time.monotonic() + 60
        while finished_episodes(crashed) < point and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))  # land inside an episode, or between writes
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    final = start(crashed)
    assert final.wait(timeout=120) == 0, stderr(crashed)
    assert kills >= KILLS - 1  # a point can be passed before the poll sees it only at the very end
    got = snapshot(crashed)
    for key, value in expected.items():
        assert got[key] == value, f"{key} differs after {kills} kills"
