"""benchmarks/distill.py: train then evaluate on scripted models, every figure printed, and the same after a resume."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest
from autogen_core.models import LLMMessage

from coachlab.experiments.evaluate_markdown import calibration_line
from coachlab.judging.calibration import CalibrationReport
from coachlab.testing import ScriptedChatCompletionClient, dry_run_clients

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "distill.py"
NAMES = ["customer", "judge", "student", "teacher"]

# Two training scenarios and two held-out ones of the benchmark: the first held-out case shares the stalled-tracking
# situation with a training one, the second (wrong item) shares none with them. Lexical retrieval and no similarity
# gate: no embedded model runs.
EXPERIMENT = f"""\
name: tiny-bench
personas: [{ROOT / "personas"}]
scenarios: [{ROOT / "scenarios/benchmark/train.yaml"}, {ROOT / "scenarios/benchmark/heldout.yaml"}]
models:
  student: {{provider: embedded, config: {{model: qwen2.5-coder-0.5b}}}}
  customer: {{provider: embedded, config: {{model: qwen2.5-coder-1.5b}}}}
  teacher: {{provider: embedded, config: {{model: qwen2.5-coder-1.5b}}}}
  judge: {{provider: embedded, config: {{model: qwen2.5-coder-1.5b}}}}
environment: {{max_turns: 4}}
simulate: {{agents: [student], concurrency: 2}}
train:
  scenarios: [bm-retail-stalled-parcel, bm-telecom-roaming-bill-shock]
  trials: 2
  success_rate: 1.0
  children_per_failure: 0
  verify: {{criterion: checklist, trials: 6, refine_rounds: 0}}
  max_nodes: 2
  max_depth: 0
  max_iterations: 1
judge: {{votes: 1, checklist: per_line, gate: "off"}}
retrieval: {{kind: lexical, k: 3}}
evaluate:
  scenarios: [bm-ho-telecom-router-parcel-stalled, bm-ho-retail-wrong-size]
  trials: 2
"""


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("distill_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _clients(stop_after: int | None = None) -> dict[str, ScriptedChatCompletionClient]:
    """The dry-run story; with `stop_after`, Ctrl-C lands in the call after that many model calls."""
    calls = [0]

    def counted(client: ScriptedChatCompletionClient) -> ScriptedChatCompletionClient:
        inner = client._fn  # pyright: ignore[reportPrivateUsage]

        def fn(messages: Sequence[LLMMessage]) -> object:
            calls[0] += 1
            if stop_after is not None and calls[0] > stop_after:
                raise KeyboardInterrupt
            return inner(messages)

        return ScriptedChatCompletionClient(fn, name=client.name, keep=0)  # type: ignore[arg-type]

    return {n: counted(c) for n, c in dry_run_clients(NAMES, strong=["teacher"]).items()}


def _run(bench: ModuleType, capsys: pytest.CaptureFixture[str], *args: str | Path, stop_after: int | None = None):  # type: ignore[no-untyped-def]
    code = bench.main([str(a) for a in args], clients=_clients(stop_after))
    out, err = capsys.readouterr()
    return code, out, err


def _figures(out: str, run: Path) -> list[str]:
    """The printed figures with the run folder's name neutral and the wall-time line left out."""
    return [line.replace(str(run), "RUN") for line in out.splitlines() if not line.startswith("time: ")]


def test_the_benchmark_prints_every_figure_from_the_saved_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _bench()
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(EXPERIMENT)
    run = tmp_path / "run"
    code, out, err = _run(bench, capsys, "--experiment", experiment, "--out", run)
    assert code == 0, err
    assert out.startswith(f"== tiny-bench: {run} ==\nDRY RUN:")
    lines = out.splitlines()
    assert lines[2].startswith("time: train ") and ", total " in lines[2] and "over 1 invocation(s)" in lines[2]
    assert "train: 2 nodes (1 failed, 1 passed), 2 roots, depth 0" in lines
    assert "strategies (library v1): admitted 1, rejected 1, merged into another 0, retired 0, proposed 0" in lines
    assert "    evidence: checklist: 6 better / 0 worse / 0 tied, p=0.016" in lines
    rows = {
        "baseline": ("0.00", "0.40"),
        "generic": ("1.00", "1.00"),
        "library": ("1.00", "1.00"),
        "teacher": ("1.00", "1.00"),
    }
    for condition, (success, items) in rows.items():
        row = next(line for line in lines if line.strip().startswith(f"{condition} ("))
        assert f"task success {success} [" in row and "satisfaction " in row and "simulator faults 0" in row
        assert f", items met {items} [" in row
    assert "  gap closed (task success): 1.00 [1.00, 1.00] over 4 paired trials" in lines
    assert "  library minus baseline (task success, paired by seed, 95% CI): 1.00 [1.00, 1.00]" in lines
    assert "  gap closed (items met): 1.00 [1.00, 1.00]" in lines
    assert "  library minus baseline (items met, paired by seed, 95% CI): 0.60 [0.60, 0.60]" in lines
    assert any(line.startswith("smallest difference in task success this run could detect") for line in lines)
    assert any(line.startswith("    bm-retail-stalled-parcel-0-1, shown in 4 episodes") for line in lines)
    # the strategy was learned on the stalled parcel: a hit on the stalled router, shown but no hit on the wrong size
    hit = next(line for line in lines if "Retrieval hit rate for student" in line)
    assert "a strategy shown in 50% (4); one learned on the same situation in 25% (2)" in hit and "50% (4) (the" in hit
    assert "simulator faults: 0; judge errors: 0; infrastructure errors: 0 (never scored, never taught from)" in lines
    assert f"`coachlab judge calibrate {experiment} --out {run}`" in out
    tokens = lines[lines.index(next(line for line in lines if line.startswith("tokens per role"))) + 1 :]
    assert {line.split()[0] for line in tokens} == {"train", "evaluate"} and all("prompt sent" in t for t in tokens)

    # A second run into the same folder is refused; --fresh starts again.
    code, _, err = _run(bench, capsys, "--experiment", experiment, "--out", run)
    assert code == 2 and "--resume" in err and "--fresh" in err

    # With the judge calibrated (calibration.json in the run folder), its figures replace the hint: a resume that has
    # nothing left to run prints them.
    calibration = CalibrationReport(
        judge="judge-model",
        votes=1,
        gate=False,
        cases=7,
        unreadable=0,
        items=42,
        item_accuracy=0.9,
        item_kappa=0.8,
        false_met_rate=0.1,
        missed_met_rate=0.1,
        accuracy_by_variant={},
        split_item_rate=None,
        ordering_checklist=0.75,
        ordering_satisfaction=0.5,
        handoff_satisfaction_at_least_good=None,
        handoff_task_success=None,
        good_task_success=None,
        spearman_checklist=None,
        spearman_satisfaction=None,
        seconds_per_verdict=1.0,
    )
    (run / "calibration.json").write_text(calibration.model_dump_json())
    code, again, err = _run(bench, capsys, "--experiment", experiment, "--out", run, "--resume")
    assert code == 0, err
    assert calibration_line(calibration) in again.splitlines() and "coachlab judge calibrate" not in again
    assert "checklist items right 90% of 42" in again
    before = [line for line in _figures(out, run) if "judge calibrate" not in line]
    assert [line for line in _figures(again, run) if line != calibration_line(calibration)] == before


@pytest.mark.parametrize("stop_after", [60, 260], ids=["in-train", "in-evaluate"])
def test_resume_after_an_interrupted_run_prints_the_same_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stop_after: int
) -> None:
    bench = _bench()
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(EXPERIMENT)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    code, expected, err = _run(bench, capsys, "--experiment", experiment, "--out", whole)
    assert code == 0, err
    code, out, err = _run(bench, capsys, "--experiment", experiment, "--out", cut, stop_after=stop_after)
    assert code == 130 and out == "" and f"--out {cut} --resume" in err
    phase = "evaluation" if stop_after > 200 else "train"
    assert (cut / phase / "episodes.jsonl").exists() and not (cut / "evaluation" / "results.json").exists()
    code, resumed, err = _run(bench, capsys, "--experiment", experiment, "--out", cut, "--resume")
    assert code == 0, err
    assert _figures(resumed, cut) == _figures(expected, whole)
    assert "over 2 invocation(s)" in resumed
