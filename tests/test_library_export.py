"""coachlab library export --format prompt|markdown|jsonl|skill: what an application, a reviewer, a runtime loads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from coachlab import coaching_block
from coachlab.cli import app
from coachlab.experiments.evaluate import generic_guidance
from coachlab.library import LibraryStore
from coachlab.schema import AuditStatus, Evidence, Strategy
from helpers import scenario

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def strategy(sid: str, gain: float, status: AuditStatus = AuditStatus.APPROVED, *, situation: str = "") -> Strategy:
    evidence = Evidence(trials=4, mean_without=5.0, mean_with=5.0 + gain, uplift_low=0.1, uplift_high=gain + 1)
    made = Strategy(
        id=sid,
        situation=situation or f"When the customer asks about {sid.replace('-', ' ')}",
        guidance=f"Handle the {sid.replace('-', ' ')} by naming the next step and when it happens.",
        evidence=evidence,
    )
    return made.with_status(status, by="ana", at=NOW, why="checked in review")


LIBRARY = [
    strategy("small-gain", 0.5),
    strategy("big-gain", 2.5),
    strategy("middle-gain", 1.5),
    strategy("waiting", 3.0, AuditStatus.PROPOSED, situation="When the customer writes <script>alert(1)</script>"),
    strategy("refused", 4.0, AuditStatus.REJECTED),
]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    folder = tmp_path / "acme-support"
    LibraryStore(folder / "library").commit(LIBRARY, note="after review")
    (folder / "experiment.yaml").write_text("name: acme\nevaluate:\n  scenarios: [x]\n  generic_size: 2\n")
    return folder


def export(*args: str) -> str:
    result = CliRunner().invoke(app, ["library", "export", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_prompt_block_is_exactly_what_the_generic_condition_showed(run: Path) -> None:
    shown = asyncio.run(generic_guidance(LIBRARY, 2)(scenario(), []))
    assert [g.id for g in shown] == ["big-gain", "middle-gain"]
    assert export(str(run), "--format", "prompt") == coaching_block(shown) + "\n"
    assert export(str(run), "--format", "prompt", "--size", "1").count("\n- ") == 1


def test_markdown_is_a_review_document_that_runs_no_markup(run: Path) -> None:
    text = export(str(run), "--format", "markdown", "--status", "all")
    for s in LIBRARY:
        assert f"## {s.id} ({s.status.value})" in text
    assert "uplift +2.50" in text and "approved by ana: checked in review" in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    approved_only = export(str(run), "--format", "markdown")
    assert "## waiting" not in approved_only
    assert "1 proposed, 3 approved, 1 rejected; 3 shown here" in approved_only


def test_jsonl_lines_load_back_as_the_same_strategies(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "strategies.jsonl"
    export(str(run), "--format", "jsonl", "--status", "all", "--out", str(out))
    assert [Strategy.model_validate_json(line) for line in out.read_text().splitlines()] == LIBRARY
    printed = export(str(run), "--format", "jsonl")
    assert [Strategy.model_validate_json(line).id for line in printed.splitlines()] == [
        "small-gain",
        "big-gain",
        "middle-gain",
    ]


def test_the_skill_folder_follows_the_agent_skills_format(run: Path, tmp_path: Path) -> None:
    output = export(str(run), "--format", "skill", "--out", str(tmp_path / "skills"))
    path = tmp_path / "skills" / "coachlab-acme-support" / "SKILL.md"
    assert str(path) in output.replace("\n", "")
    text = path.read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["name"] == path.parent.name == "coachlab-acme-support"
    assert 0 < len(meta["description"]) <= 1024 and "Use when" in meta["description"]
    assert meta["metadata"] == {"library-version": "1", "generator": meta["metadata"]["generator"]}
    for s in LIBRARY:
        assert (s.guidance in body) is (s.status is AuditStatus.APPROVED)
    assert "## When the customer asks about big gain" in body
    export(str(run), "--format", "skill", "--out", str(tmp_path / "skills"), "--name", "acme-coaching")
    assert (tmp_path / "skills" / "acme-coaching" / "SKILL.md").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "skill", "--name", "Acme Coaching"], "lowercase letters"),
        (["--format", "prompt", "--status", "proposed"], "approved strategies only"),
        (["--format", "skill", "--status", "all"], "approved strategies only"),
        (["--format", "pdf"], "pdf"),
        (["--status", "maybe"], "--status maybe"),
    ],
)
def test_bad_exports_are_refused_with_a_reason(run: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["library", "export", str(run), *args])
    assert result.exit_code != 0
    assert message in result.output + str(result.exception)


def test_a_library_without_approved_strategies_has_nothing_to_ship(tmp_path: Path) -> None:
    LibraryStore(tmp_path / "library").commit([LIBRARY[3]], note="nothing approved yet")
    for fmt in ("prompt", "skill"):
        result = CliRunner().invoke(app, ["library", "export", str(tmp_path), "--format", fmt])
        assert result.exit_code != 0 and "no approved strategy" in str(result.exception)
