"""`coachlab train`, `evaluate` and `library` as a user runs them (dry runs and a seeded library)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from coachlab.library import LibraryStore
from coachlab.schema import AuditStatus
from test_cli import coachlab
from test_library import REFUND, REPEAT


def test_train_then_evaluate_dry_run_write_tree_and_results(tmp_path: Path) -> None:
    out = tmp_path / "run"
    trained = coachlab("train", "experiments/quickstart.yaml", "--dry-run", "--out", str(out))
    assert trained.returncode == 0, trained.stderr
    assert "Tree: 3 nodes" in trained.stdout and (out / "tree.json").exists()
    again = coachlab("train", "experiments/quickstart.yaml", "--dry-run", "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr
    evaluated = coachlab("evaluate", "experiments/quickstart.yaml", "--dry-run", "--out", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((out / "evaluation" / "results.json").read_text())
    # the quickstart's arms: baseline, library and the oracle ceiling (no teacher row)
    assert [r["condition"] for r in results["students"][0]["rows"]] == ["baseline", "library", "oracle"]
    assert results["teacher"] is None and results["package_version"]
    assert "name: quickstart" in results["experiment"]
    assert "| student | baseline |" in (out / "evaluation" / "results.md").read_text()


def test_library_audit_commands(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "library")
    store.add([REPEAT, REFUND.with_status(AuditStatus.PROPOSED, by="train", at=REFUND.audit[0].at)], note="v1")
    listed = coachlab("library", "list", str(tmp_path))
    assert listed.returncode == 0 and "name-next-step" in listed.stdout and "proposed" in listed.stdout
    shown = coachlab("library", "show", str(tmp_path), "refund-window")
    assert "coachlab library approve" in shown.stdout and "outside the return window" in shown.stdout
    approved = coachlab("library", "approve", str(tmp_path), "refund-window", "--by", "ana", "--why", "checked")
    assert approved.returncode == 0 and "library v2" in approved.stdout
    assert store.load().get("refund-window").status is AuditStatus.APPROVED
    edited = coachlab("library", "edit", str(tmp_path), "name-next-step", "--by", "ana", "--guidance", "Give a date.")
    assert edited.returncode == 0 and store.load().get("name-next-step").status is AuditStatus.PROPOSED
    diff = coachlab("library", "diff", str(tmp_path), "1")
    assert "changed: name-next-step, refund-window" in diff.stdout
    export = tmp_path / "approved.yaml"
    assert coachlab("library", "export", str(tmp_path), "--out", str(export)).returncode == 0
    assert [s["id"] for s in yaml.safe_load(export.read_text())["strategies"]] == ["refund-window"]
    missing = coachlab("library", "reject", str(tmp_path), "nope", "--by", "ana")
    assert missing.returncode == 2 and "no strategy 'nope'" in missing.stderr
    empty = coachlab("library", "list", str(tmp_path / "nowhere"))
    assert empty.returncode == 2 and "no strategy library here" in empty.stderr


def test_distill_runs_train_then_evaluate_and_says_where_everything_is(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = coachlab("distill", "experiments/quickstart.yaml", "--dry-run", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "Tree: 3 nodes" in done.stdout and "| student | library |" in done.stdout
    # the dry-run models play a story: one strategy admitted, one rejected, and the library reaches the ceiling
    assert "strategies admitted: 1" in done.stdout and "rejected: 1" in done.stdout
    assert "Share of the oracle ceiling the library reached for student" in done.stdout
    assert "| student | oracle | 1.00 [1.00, 1.00] |" in done.stdout
    (student,) = json.loads((out / "evaluation" / "results.json").read_text())["students"]
    assert student["share_of_ceiling"]["mean"] == student["share_of_ceiling_items"]["mean"] == 1.0
    for shown in ("scenario tree:", "strategy library:", "results:", "transcripts:"):
        assert shown in done.stdout
    assert (out / "tree.json").exists() and (out / "evaluation" / "results.md").exists()
    resumed = coachlab("distill", "experiments/quickstart.yaml", "--dry-run", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
