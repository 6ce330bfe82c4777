"""coachlab library verify: an edited strategy loses its old evidence and earns fresh evidence, or is rejected.

A dry run trains one scenario (scripted models: the student names the next step only when coached
to): the teacher's strategy is admitted. A reviewer edits it; the edit drops the evidence of the old
text. `library verify` re-runs the run's checklist verification on the source node and records the
new numbers; an edit that loses the advice is rejected by the same test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from coachlab.cli import app
from coachlab.errors import UsageError
from coachlab.experiments.results import EpisodeLog
from coachlab.library import LibraryStore
from coachlab.schema import AuditStatus, Strategy

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def run(tmp_path: Path) -> Path:
    experiment = tmp_path / "verify.yaml"
    experiment.write_text(
        f"""name: verify-story
personas: [{ROOT / "personas"}]
scenarios: [{ROOT / "scenarios" / "retail.yaml"}]
models:
  student: {{provider: embedded, config: {{model: qwen2.5-coder-0.5b}}}}
  customer: {{provider: embedded, config: {{model: qwen2.5-coder-1.5b}}}}
  teacher: {{provider: embedded, config: {{model: qwen2.5-coder-1.5b}}}}
  judge: {{provider: embedded, config: {{model: qwen2.5-coder-1.5b}}}}
environment: {{max_turns: 3}}
train:
  scenarios: [retail-late-delivery]
  trials: 2
  strategies_per_failure: 2
  children_per_failure: 0
  verify: {{criterion: checklist, trials: 6, refine_rounds: 0}}
  max_depth: 0
  max_iterations: 1
retrieval: {{kind: lexical}}
""",
        encoding="utf-8",
    )
    folder = tmp_path / "run"
    cli("train", str(experiment), "--dry-run", "--out", str(folder))
    return folder


def test_an_edit_drops_the_old_evidence_and_verify_records_fresh_evidence(run: Path) -> None:
    store = LibraryStore(run / "library")
    trained = store.load().get("retail-late-delivery-0-1")
    assert trained.status is AuditStatus.APPROVED and trained.evidence is not None
    assert trained.evidence.criterion == "checklist" and trained.evidence.wins == 6

    edited_text = "Name the next step and its time. Then give the reference number."
    out = cli("library", "edit", str(run), trained.id, "--by", "ana", "--guidance", edited_text)
    assert f"coachlab library verify {run} {trained.id}" in out
    edited = store.load().get(trained.id)
    assert edited.status is AuditStatus.PROPOSED and edited.evidence is None  # the old text's evidence is gone
    assert edited.attempts[-1].guidance == trained.guidance and edited.attempts[-1].evidence == trained.evidence

    out = cli("library", "verify", str(run), trained.id, "--by", "ana", "--dry-run")
    assert f"{trained.id}: accepted on node retail-late-delivery" in out and "now proposed" in out
    assert "coachlab library approve" in out
    verified = store.load().get(trained.id)
    assert verified.guidance == edited_text and verified.status is AuditStatus.PROPOSED
    e = verified.evidence
    assert e is not None and e.criterion == "checklist" and e.trials == 6
    # the four checklist items the failed rollout missed, met by every reply with it and none without
    assert (e.wins, e.losses, e.mean_without, e.mean_with) == (6, 0, 0.0, 4.0) and e.p_value == 0.5**6
    last = verified.audit[-1]
    assert last.by == "ana" and last.why.startswith("verified again on node retail-late-delivery: accepted")
    assert store.load().note == f"verify {trained.id} by ana: accepted"

    # An edit that drops the advice: the same verification rejects it, with its numbers.
    cli("library", "edit", str(run), trained.id, "--by", "ana", "--guidance", "Thank them warmly for waiting.")
    out = cli("library", "verify", str(run), trained.id, "--by", "ana", "--dry-run")
    assert f"{trained.id}: rejected" in out and "now rejected" in out
    rejected = store.load().get(trained.id)
    assert rejected.status is AuditStatus.REJECTED and rejected.evidence is not None
    assert (rejected.evidence.wins, rejected.evidence.losses, rejected.evidence.mean_with) == (0, 0, 0.0)
    assert [a.guidance for a in rejected.attempts] == [trained.guidance, edited_text]


def test_verify_needs_the_run_s_own_experiment_and_a_source_node(run: Path, tmp_path: Path) -> None:
    changed = tmp_path / "changed.yaml"
    changed.write_text((tmp_path / "verify.yaml").read_text().replace("trials: 6", "trials: 8"), encoding="utf-8")
    with pytest.raises(UsageError, match=r"(?s)trained with another experiment.*train\.verify\.trials: 6 -> 8"):
        cli(
            "library",
            "verify",
            str(run),
            "retail-late-delivery-0-1",
            "--by",
            "ana",
            "--dry-run",
            "--experiment",
            str(changed),
        )
    with pytest.raises(UsageError, match="no strategy 'nope'"):
        cli("library", "verify", str(run), "nope", "--by", "ana", "--dry-run")
    hand_written = Strategy(id="hand-written", situation="When asked", guidance="Answer.")
    LibraryStore(run / "library").add([hand_written], note="by hand")
    with pytest.raises(UsageError, match="hand-written: records no source node"):
        cli("library", "verify", str(run), "hand-written", "--by", "ana", "--dry-run")
    assert not any("/reverify/" in i for i in EpisodeLog(run / "train" / "episodes.jsonl").read())
