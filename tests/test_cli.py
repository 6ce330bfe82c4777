"""The command line as a user meets it: clear messages, no tracebacks, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def coachlab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", "from coachlab.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def test_persona_new_writes_a_valid_skeleton_and_validate_accepts_it(tmp_path: Path) -> None:
    made = coachlab("persona", "new", "night-nurse", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    path = tmp_path / "night-nurse.yaml"
    assert "(private)" in path.read_text()
    checked = coachlab("persona", "validate", str(path))
    assert checked.returncode == 0 and "ok" in checked.stdout
    again = coachlab("persona", "new", "night-nurse", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr and "--force" in again.stderr


def test_persona_validate_reports_each_bad_file_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nname: X\ndescription: d\ngoal: g\nsatisfied_when: s\nmood: ok\npatience: forever\n")
    result = coachlab("persona", "validate", str(bad), str(ROOT / "personas" / "furious-frank.yaml"))
    assert result.returncode == 1
    assert "bad.yaml:7: patience:" in result.stderr
    assert "ok" in result.stdout and "Traceback" not in result.stderr + result.stdout


def test_simulate_with_a_broken_experiment_says_what_to_fix(tmp_path: Path) -> None:
    exp = tmp_path / "e.yaml"
    exp.write_text("name: e\nscenarios: [nowhere.yaml]\nmodels: {}\nsimulat: {}\n")
    result = coachlab("simulate", str(exp))
    assert result.returncode == 2
    assert "error:" in result.stderr and "simulat: unknown field. Did you mean 'simulate'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_dry_run_end_to_end_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ("simulate", "experiments/quickstart.yaml", "--dry-run", "--out", str(out), "--trials", "1")
    first = coachlab(*args)
    assert first.returncode == 0, first.stderr
    assert "Results per scenario" in first.stdout and "Finished in" in first.stdout
    assert "role adherence" in first.stdout
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 4
    second = coachlab(*args)
    assert second.returncode == 2 and "--resume" in second.stderr
    resumed = coachlab(*args, "--resume")
    assert resumed.returncode == 0 and "(4 already done)" in resumed.stdout
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 4


def test_missing_embedded_model_names_the_fetch_command(tmp_path: Path) -> None:
    env_dir = tmp_path / "models"
    env_dir.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from coachlab.cli import main; main()",
            "simulate",
            "experiments/quickstart.yaml",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env={**os.environ, "COACHLAB_MODELS_DIR": str(env_dir), "NO_COLOR": "1", "COLUMNS": "200"},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "coachlab models fetch" in result.stderr and "Traceback" not in result.stderr
