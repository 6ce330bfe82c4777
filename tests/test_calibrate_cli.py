"""`coachlab judge calibrate`: the labelled set loads, matches the shipped checklists, and the command reports."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from coachlab.cli import app
from coachlab.experiments.config import load_experiment
from coachlab.judging.calibration import load_calibration_set, spearman

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_set_labels_every_item_of_shipped_scenarios() -> None:
    cases = load_calibration_set()
    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml")
    cases.check(exp.scenarios, where="shipped set")  # raises on any mismatch
    variants = {c.variant for c in cases.cases}
    assert len(cases.cases) >= 70 and len(variants) == 10
    goods = [c for c in cases.cases if c.variant in ("good", "good-paraphrase")]
    assert goods and all(set(c.expected.values()) == {"met"} for c in goods)


def test_calibrate_dry_run_prints_and_saves_the_figures(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "judge",
            "calibrate",
            str(ROOT / "experiments" / "quickstart.yaml"),
            "--dry-run",
            "--out",
            str(tmp_path),
            "--only",
            "retail-late-delivery",
            "--gate",
            "off",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "checklist item accuracy" in result.output and "seconds per verdict" in result.output
    saved = json.loads((tmp_path / "calibration.json").read_text())
    assert saved["cases"] == 11 and saved["items"] == 11 * 6 and 0 <= saved["item_accuracy"] <= 1
    assert saved["missed_met_paraphrase_rate"] is not None and saved["near_miss_false_met_rate"] is not None
    assert saved["pairwise_flip_rate"] is not None


def test_calibrate_refuses_unknown_scenarios_and_bad_flags(tmp_path: Path) -> None:
    quickstart = str(ROOT / "experiments" / "quickstart.yaml")
    bad = CliRunner().invoke(app, ["judge", "calibrate", quickstart, "--only", "nope", "--dry-run"])
    assert bad.exit_code != 0 and "no labelled case" in str(bad.exception)
    votes = CliRunner().invoke(app, ["judge", "calibrate", quickstart, "--votes", "0", "--dry-run"])
    assert votes.exit_code != 0 and "--votes" in str(votes.exception)


def test_spearman_on_known_ranks() -> None:
    assert spearman([1, 2, 3], [10, 20, 30]) == 1.0
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0
    assert spearman([1, 1, 1], [1, 2, 3]) is None
