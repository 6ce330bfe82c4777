"""Near-duplicates merge: two failures teach the same advice; the library keeps one strategy and both origins.

Two root scenarios fail the same way (the student never names the next step). The teacher writes
the advice for the first, then, for the second, the same advice in other words. The second is
verified and admitted, then merged into the first: one strategy, the first's text, both origins.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from autogen_core.models import LLMMessage
from typer.testing import CliRunner

from coachlab.agents.teacher import TEACHER_SYSTEM_PROMPT
from coachlab.cli import app
from coachlab.environments import EnvironmentConfig, EpisodeRunner
from coachlab.explorer.train import TrainConfig, Trainer, TrainSummary
from coachlab.explorer.verify import VerifyConfig
from coachlab.library import RetrievalConfig
from coachlab.library.duplicates import find_duplicate, jaccard
from coachlab.library.export import markdown_document
from coachlab.llm import Backend
from coachlab.schema import AuditStatus, Strategy
from coachlab.testing import ScriptedChatCompletionClient, message_text
from helpers import scenario, verdict

GOOD_REPLY = "I've reshipped it by express: it arrives Friday, reference R-1."
FIRST = {"situation": "When the customer says a parcel is late again", "guidance": "Name the next step and its date."}
AGAIN = {
    "situation": "When a customer reports the parcel is late again",
    "guidance": "Name the next step and the date.",
}


def customer(messages: Sequence[LLMMessage]) -> str:
    if "reference R-1" in message_text(messages[-1]):
        return "Perfect, thank you! [DONE]"
    if "Please wait." in message_text(messages[-1]):
        return "Forget it. [LEAVE]"
    if "ORDER-B" in message_text(messages[0]):
        return "Where is my order? It still has not come."
    return "My parcel is late again! What happens now?"


def student(messages: Sequence[LLMMessage]) -> str:
    return GOOD_REPLY if "Name the next step" in message_text(messages[0]) else "Please wait."


def teacher(messages: Sequence[LLMMessage]) -> str:
    if message_text(messages[0]) != TEACHER_SYSTEM_PROMPT:
        return GOOD_REPLY  # playing the service agent
    ask = message_text(messages[-1])
    if '"strategies"' in ask:
        return json.dumps({"strategies": [AGAIN if "Where is my order" in ask else FIRST]})
    return json.dumps({"children": []})


def judge(messages: Sequence[LLMMessage]) -> object:
    good = "reference R-1" in message_text(messages[-1])
    return verdict(9 if good else 2, resolved=good, failure_turn=None if good else 0)


def train(run_dir: Path, **over: object) -> tuple[Trainer, TrainSummary]:
    fns = {"customer": customer, "judge": judge, "student": student, "teacher": teacher}
    backends = {name: Backend.from_client(name, ScriptedChatCompletionClient(fn)) for name, fn in fns.items()}
    config = TrainConfig(
        trials=2,
        verify=VerifyConfig(trials=6, refine_rounds=0),
        max_depth=0,
        max_iterations=1,
        strategies_per_failure=1,
        children_per_failure=0,
    ).model_copy(update=over)
    roots = [scenario(id="first-parcel"), scenario(id="second-order", issue="Order ORDER-B is five days late.")]
    trainer = Trainer(
        EpisodeRunner(backends, EnvironmentConfig(max_turns=3)),
        config,
        roots,
        run_dir=run_dir,
        retrieval=RetrievalConfig(kind="lexical"),
    )
    return trainer, asyncio.run(trainer.run())


def test_a_near_duplicate_is_merged_keeping_both_origins(tmp_path: Path) -> None:
    assert abs(jaccard(" ".join(FIRST.values()), " ".join(AGAIN.values())) - 7 / 9) < 1e-9
    trainer, summary = train(tmp_path)
    library = trainer.library.load()
    (kept,) = library.strategies  # one strategy, not two
    assert kept.id == "first-parcel-0-1" and kept.status is AuditStatus.APPROVED
    assert (kept.situation, kept.guidance) == (FIRST["situation"], FIRST["guidance"])  # the existing text
    assert kept.provenance is not None and kept.provenance.node_id == "first-parcel"
    (origin,) = kept.merged
    assert origin.candidate_id == "second-order-0-1" and origin.guidance == AGAIN["guidance"]
    assert origin.similarity == round(7 / 9, 4)
    assert origin.provenance is not None and origin.provenance.node_id == "second-order"
    assert origin.provenance.scenario_id == "second-order" and origin.provenance.episode_id is not None
    assert origin.evidence is not None and origin.evidence.wins == 6 and origin.evidence.losses == 0
    assert kept.evidence is not None and kept.evidence.wins == 6  # its own evidence, from its own node
    assert summary.accepted == ["first-parcel-0-1"] and summary.merged == {"second-order-0-1": "first-parcel-0-1"}
    assert trainer.tree.node("second-order").strategy_ids == ["first-parcel-0-1"]
    assert "merged second-order-0-1 into first-parcel-0-1" in library.note

    review = markdown_document(library, library.strategies)
    assert "Found again for scenario `second-order`, node `second-order`: merged as a near-duplicate" in review
    shown = CliRunner().invoke(app, ["library", "show", str(tmp_path), "first-parcel-0-1"])
    assert shown.exit_code == 0, shown.output
    assert "Origins: first-parcel (this text); merged: second-order-0-1 from second-order" in shown.output


def test_below_the_threshold_or_switched_off_both_stay(tmp_path: Path) -> None:
    for name, over in (("strict", {"merge_similarity": 0.8}), ("off", {"merge_duplicates": False})):
        trainer, summary = train(tmp_path / name, **over)
        ids = [s.id for s in trainer.library.load().strategies]
        assert ids == ["first-parcel-0-1", "second-order-0-1"] and summary.merged == {}


class Topics:
    """Vectors over topic words: cosine similarity = shared topics (an `Embedder` for tests)."""

    key = "topics"
    TOPICS = ("late", "parcel", "next", "step", "refund")

    def embed(self, texts: Sequence[str]) -> object:
        import numpy as np

        rows = np.array([[float(t in x.lower()) for t in self.TOPICS] for x in texts], dtype=np.float32)
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    async def aembed(self, texts: Sequence[str]) -> object:
        return self.embed(texts)


def test_with_an_embedder_the_cosine_decides() -> None:
    first = Strategy(id="a", **FIRST)
    refund = Strategy(id="r", situation="When a refund is late", guidance="Give the refund date.")
    again = Strategy(id="b", **AGAIN)
    match = asyncio.run(find_duplicate(again, [refund, first], embedder=Topics()))  # type: ignore[arg-type]
    assert match is not None and match[0].id == "a" and abs(match[1] - 1.0) < 1e-6
    other = asyncio.run(find_duplicate(refund, [first], embedder=Topics()))  # type: ignore[arg-type]
    assert other is None  # cosine 1/sqrt(8) = 0.35, below 0.9
