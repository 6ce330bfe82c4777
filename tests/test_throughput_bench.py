"""benchmarks/throughput.py: runs the fixed episodes, reports per role, compares runs, tolerates an older coachlab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from coachlab.testing.openai_stub import OpenAIStub
from test_backend_faults import reply, write_experiment

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "throughput.py"


def bench(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )


def test_the_benchmark_reports_sent_processed_and_generated_per_role_and_compares_runs(tmp_path: Path) -> None:
    with OpenAIStub(reply=reply, prompt_cache="llama.cpp") as stub:
        experiment = write_experiment(tmp_path, stub, timeout_s=30)
        done = bench("--episodes-from", experiment, "--episodes", 3, "--teacher-every", 3, "--out", tmp_path / "tp")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "tp" / experiment.stem / "throughput.json").read_text())
    assert result["episodes"] == 3 and result["episodes_per_hour"] > 0
    assert result["order"] == "interleaved"  # a server: trials interleaved, as planned
    assert result["peak_rss_mb"] > 0 and (result["pss_mb"] is None or 0 < result["pss_mb"] <= result["peak_rss_mb"])
    assert set(result["roles"]) == {"customer", "student", "teacher", "judge"}  # the teacher played episode 3
    for name in ("customer", "student", "judge"):
        role = result["roles"][name]
        assert role["calls"] > 0 and role["generated"] > 0 and role["seconds"] > 0
        assert 0 < role["prompt_processed"] < role["prompt_sent"]  # the stub's prompt cache served a prefix
    assert "episodes per hour" in done.stdout and "prompt tokens processed" in done.stdout

    # A run by a coachlab that did not record the engine's figures yet: n/a, not zero.
    roles = {r: {**v, "prompt_processed": None, "seconds": None} for r, v in result["roles"].items()}
    old = {**result, "pss_mb": None, "roles": roles}
    old_run = tmp_path / "old"
    old_run.mkdir()
    (old_run / "throughput.json").write_text(json.dumps({**old, "episodes_per_hour": result["episodes_per_hour"] / 2}))
    compared = bench("--compare", old_run, tmp_path / "tp" / experiment.stem)
    assert compared.returncode == 0, compared.stderr
    processed = next(line for line in compared.stdout.splitlines() if "prompt tokens processed" in line)
    assert processed.split()[3] == "n/a" and "%" in processed
    assert "(2.00x)" in next(line for line in compared.stdout.splitlines() if line.startswith("episodes per hour"))
