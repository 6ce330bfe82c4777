"""The strategy library: versions, audit trail, diff, and retrieval for a paraphrased situation."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coachlab.errors import UsageError
from coachlab.library import LexicalRetriever, LibraryStore, retrieval_guidance
from coachlab.schema import AuditStatus, Evidence, Provenance, Strategy
from helpers import scenario

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def strategy(sid: str, situation: str, guidance: str, status: AuditStatus = AuditStatus.APPROVED) -> Strategy:
    s = Strategy(
        id=sid,
        situation=situation,
        guidance=guidance,
        provenance=Provenance(scenario_id="late-parcel", teacher_model="openai:gpt-4o"),
        evidence=Evidence(trials=4, mean_without=4.0, mean_with=7.5, uplift_low=1.5, uplift_high=5.0),
    )
    return s.with_status(status, by="train", at=NOW)


REPEAT = strategy(
    "name-next-step",
    "When the customer repeats a complaint about a late delivery",
    "Name the exact next step and the date it will happen, and give a reference number.",
)
REFUND = strategy(
    "refund-window",
    "When a refund is requested outside the return window",
    "Say plainly what policy allows, then offer the best permitted alternative such as store credit.",
)
ROAMING = strategy(
    "roaming-bill",
    "When a phone bill is high because of roaming charges",
    "Itemise the roaming charges and offer the travel pass for future trips.",
    status=AuditStatus.PROPOSED,
)


def test_versions_are_written_once_and_read_back(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "lib")
    assert store.load().version == 0 and store.load().strategies == []
    v1 = store.add([REPEAT, ROAMING], note="iteration 1")
    v2 = store.add([REFUND], note="iteration 2")
    assert (v1.version, v2.version) == (1, 2)
    assert store.versions() == [1, 2]
    assert store.load(1) == v1 and store.load() == v2
    assert [s.id for s in v2.strategies] == ["name-next-step", "roaming-bill", "refund-window"]
    assert json.loads(store.path(1).read_text())["note"] == "iteration 1"
    assert not list((tmp_path / "lib").glob("*.tmp"))
    assert store.diff(1, 2).model_dump() == {"added": ["refund-window"], "removed": [], "changed": []}


def test_audit_decisions_make_new_versions_with_who_and_why(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path)
    store.add([ROAMING], note="v1")
    v2 = store.set_status("roaming-bill", AuditStatus.APPROVED, by="ana", why="checked the transcripts")
    s = v2.get("roaming-bill")
    assert s.status is AuditStatus.APPROVED
    assert (s.audit[-1].by, s.audit[-1].why) == ("ana", "checked the transcripts")
    assert store.load(1).get("roaming-bill").status is AuditStatus.PROPOSED  # history is kept
    v3 = store.edit("roaming-bill", by="ana", guidance="Itemise the roaming charges first.")
    assert v3.get("roaming-bill").guidance == "Itemise the roaming charges first."
    assert v3.get("roaming-bill").status is AuditStatus.PROPOSED  # an edit needs review again
    assert store.diff(2, 3).changed == ["roaming-bill"]
    with pytest.raises(UsageError, match="no strategy 'nope'"):
        store.set_status("nope", AuditStatus.REJECTED, by="ana")
    with pytest.raises(UsageError, match="unique"):
        store.commit([REPEAT, REPEAT], note="dupe")


def test_strategy_round_trips() -> None:
    assert Strategy.model_validate(REPEAT.model_dump()) == REPEAT
    assert Strategy.model_validate_json(REPEAT.model_dump_json()) == REPEAT
    assert REPEAT.evidence is not None and REPEAT.evidence.uplift == 3.5


def test_retrieval_finds_the_strategy_for_a_paraphrase_and_none_for_unrelated() -> None:
    retriever = LexicalRetriever([REPEAT, REFUND, ROAMING])
    hits = retriever.search("customer: I already told you twice, my delivery is late!", k=2, floor=0.1)
    assert [s.id for s, _ in hits][:1] == ["name-next-step"]
    refund = retriever.search("customer: I want my money back, I know it's past the return window", k=1, floor=0.1)
    assert [s.id for s, _ in refund] == ["refund-window"]
    assert retriever.search("customer: what is the weather like on mars", k=3, floor=0.1) == []
    # proposed (not approved) strategies are never retrieved
    assert all(s.id != "roaming-bill" for s, _ in retriever.search("roaming charges on my phone bill", k=3, floor=0.0))


def test_retrieval_guidance_plugs_into_the_episode_runner() -> None:
    provide = retrieval_guidance(LexicalRetriever([REPEAT, REFUND]), k=1, floor=0.1)
    shown = asyncio.run(provide(scenario(), [("customer", "My delivery is late and nobody answers, again.")]))
    assert [g.id for g in shown] == ["name-next-step"]
    assert 0 < shown[0].score <= 1
