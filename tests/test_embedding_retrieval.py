"""Retrieval by embeddings: the retriever, the factory's choice, an OpenAI-compatible endpoint, the real MiniLM."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.machinery import ModuleSpec
from pathlib import Path

import numpy as np
import openai
import pytest
from numpy.typing import NDArray

from coachlab.errors import ConfigError, UsageError
from coachlab.library import (
    EmbeddingEndpointError,
    EmbeddingRetriever,
    LexicalRetriever,
    OpenAIEmbedder,
    OpenAIEmbedderConfig,
    make_retriever,
    resolve_retriever_kind,
    retrieval_guidance,
)
from coachlab.llm.weights import MODELS_DIR_ENV
from coachlab.schema import AuditStatus, Strategy
from coachlab.testing.embeddings_stub import hashed_embedding
from coachlab.testing.openai_stub import OpenAIStub
from conftest import require_embedded
from helpers import scenario
from test_embedding_model import tiny_bert

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def strategy(sid: str, situation: str, guidance: str, status: AuditStatus = AuditStatus.APPROVED) -> Strategy:
    return Strategy(id=sid, situation=situation, guidance=guidance).with_status(status, by="train", at=NOW)


LIBRARY = [
    strategy(
        "late-delivery",
        "When the customer complains that a delivery is late and asks for a refund",
        "Apologise once, give the tracking status and a delivery date, and refund the shipping fee.",
    ),
    strategy(
        "double-charge",
        "When the customer was charged twice for the same order or subscription",
        "Confirm the duplicate charge from the billing record, reverse it and say when the money returns.",
    ),
    strategy(
        "password",
        "When the customer cannot log in or reset their password",
        "Send a reset link, check the email address on file and explain how to unlock the account.",
    ),
    strategy(
        "broken-item",
        "When an item arrived damaged or broken",
        "Ask for a photo, offer a free replacement or a full refund, and arrange the return pickup.",
    ),
    strategy(
        "rejected-late",
        "When the customer complains that a delivery is late",
        "Blame the courier.",
        status=AuditStatus.REJECTED,
    ),
]


class TopicEmbedder:
    """Vectors over a few topic words: cosine = shared topics. Records what it embeds and how."""

    TOPICS = ("late", "delivery", "refund", "charged", "twice", "password", "log", "broken")

    def __init__(self) -> None:
        self.key = f"topics:{uuid.uuid4()}"  # its own cache space: tests do not share vectors
        self.embedded: list[str] = []
        self.async_calls = 0

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.embedded.extend(texts)
        rows = np.array([[float(t in text.lower()) for t in self.TOPICS] for text in texts], dtype=np.float32)
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.async_calls += 1
        return self.embed(texts)


# -- the retriever ---------------------------------------------------------------------------------


def test_embedding_retriever_ranks_approved_strategies_by_cosine_above_the_floor() -> None:
    embedder = TopicEmbedder()
    retriever = EmbeddingRetriever(LIBRARY, embedder)
    assert "Blame the courier." not in " ".join(embedder.embedded), "rejected strategies are never embedded"
    assert all(s.situation in embedder.embedded for s in LIBRARY[:4]), "strategies are embedded by situation"

    hits = retriever.search("my delivery is late, I want a refund; also charged twice", k=3, floor=0.1)
    assert [s.id for s, _ in hits] == ["late-delivery", "double-charge"]
    assert hits[0][1] > hits[1][1] > 0.1
    assert [s.id for s, _ in retriever.search("late delivery refund", k=1, floor=0.1)] == ["late-delivery"]
    assert retriever.search("late delivery refund", k=3, floor=0.99) == [(LIBRARY[0], pytest.approx(1.0))]
    assert retriever.search("what are your opening hours", k=3, floor=0.0) == [], "no shared topic, no hit"
    assert retriever.search("late delivery", k=0, floor=0.0) == []


def test_an_empty_library_never_calls_the_embedder() -> None:
    embedder = TopicEmbedder()
    retriever = EmbeddingRetriever([LIBRARY[-1]], embedder)  # only a rejected one
    assert retriever.search("late delivery", k=3, floor=0.0) == []
    assert embedder.embedded == []


def test_rebuilding_a_retriever_for_a_grown_library_embeds_only_the_new_strategies() -> None:
    embedder = TopicEmbedder()
    EmbeddingRetriever(LIBRARY[:2], embedder)
    embedder.embedded.clear()
    grown = EmbeddingRetriever(LIBRARY[:3], embedder)
    assert embedder.embedded == [LIBRARY[2].situation]
    assert [s.id for s, _ in grown.search("cannot log in, password", k=1, floor=0.1)] == ["password"]


def test_retrieval_guidance_awaits_an_async_retriever_per_turn() -> None:
    embedder = TopicEmbedder()
    provide = retrieval_guidance(EmbeddingRetriever(LIBRARY, embedder), k=2, floor=0.3)
    dialogue = [("customer", "My parcel delivery is late and I want a refund.")]
    shown = asyncio.run(provide(scenario(), dialogue))
    assert [g.id for g in shown] == ["late-delivery"]
    assert shown[0].score > 0.3
    assert embedder.async_calls == 1, "the situation is embedded with aembed, not in the event loop"


def test_a_situation_met_again_is_not_embedded_again_and_ranks_the_same() -> None:
    embedder = TopicEmbedder()
    retriever = EmbeddingRetriever(LIBRARY, embedder)
    situation = "customer: my delivery is late, I want a refund"
    embedder.embedded.clear()
    first = retriever.search(situation, k=3, floor=0.1)
    assert asyncio.run(retriever.asearch(situation, k=3, floor=0.1)) == first
    assert EmbeddingRetriever(LIBRARY, embedder).search(situation, k=3, floor=0.1) == first, "a reloaded library too"
    assert embedder.embedded == [situation] and embedder.async_calls == 0
    assert [s.id for s, _ in retriever.search("customer: charged twice", k=1, floor=0.1)] == ["double-charge"]
    assert embedder.embedded == [situation, "customer: charged twice"]


# -- the factory -----------------------------------------------------------------------------------


def test_auto_falls_back_to_lexical_without_the_weights_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    with caplog.at_level(logging.INFO, logger="coachlab.library.retrieval"):
        retriever = make_retriever("auto", LIBRARY)
    assert isinstance(retriever, LexicalRetriever)
    assert "lexical" in caplog.text and "coachlab models fetch all-minilm-l6-v2" in caplog.text
    assert resolve_retriever_kind("auto") == "lexical"
    assert resolve_retriever_kind("openai") == "openai"
    with pytest.raises(UsageError, match=r"Run: coachlab models fetch all-minilm-l6-v2"):
        make_retriever("embedding", LIBRARY)


def test_auto_falls_back_to_lexical_without_the_tokenizers_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tiny_bert(tmp_path / "tiny")
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "tokenizers" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with caplog.at_level(logging.INFO, logger="coachlab.library.retrieval"):
        assert isinstance(make_retriever("auto", LIBRARY, model=folder), LexicalRetriever)
    assert "tokenizers" in caplog.text
    with pytest.raises(UsageError, match="pip install"):
        make_retriever("embedding", LIBRARY, model=folder)


def test_auto_chooses_the_embedding_model_when_it_can_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tiny_bert(tmp_path / "tiny")
    with caplog.at_level(logging.INFO, logger="coachlab.library.retrieval"):
        retriever = make_retriever("auto", LIBRARY, model=folder)
    assert isinstance(retriever, EmbeddingRetriever)
    assert "Retrieval: embedding" in caplog.text
    assert resolve_retriever_kind("auto", model=folder) == "embedding"
    assert isinstance(make_retriever("embedding", LIBRARY, model=str(folder)), EmbeddingRetriever)
    assert isinstance(make_retriever("lexical", LIBRARY), LexicalRetriever)


def test_the_factory_refuses_unknown_kinds_and_an_openai_kind_without_endpoint() -> None:
    with pytest.raises(UsageError, match="auto, embedding, lexical, openai"):
        make_retriever("semantic", LIBRARY)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="needs an endpoint"):
        make_retriever("openai", LIBRARY)


# -- an OpenAI-compatible endpoint (the loopback stub) ---------------------------------------------------------


def unit(vector: Sequence[float]) -> NDArray[np.float64]:
    array = np.asarray(vector, dtype=np.float64)
    return array / np.linalg.norm(array)


def test_openai_embedder_gets_normalised_vectors_in_order_with_the_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMBED_KEY", "sk-test-123")
    texts = ["late delivery", "charged twice", "reset password", "broken kettle", "late refund"]
    with OpenAIStub() as stub:
        config = OpenAIEmbedderConfig(model="embed-small", base_url=stub.url, api_key_env="EMBED_KEY", batch_size=2)
        embedder = OpenAIEmbedder(config)
        vectors = embedder.embed(texts)
        again = asyncio.run(embedder.aembed(texts[:1]))
    np.testing.assert_allclose(vectors, np.stack([unit(hashed_embedding(t)) for t in texts]), atol=1e-6)
    np.testing.assert_allclose(again[0], vectors[0], atol=1e-7)
    calls = [r for r in stub.requests if r.path.endswith("/embeddings")]
    assert [r.body["input"] for r in calls if r.body] == [texts[:2], texts[2:4], texts[4:], texts[:1]]
    assert all(r.body and r.body["model"] == "embed-small" and r.body["encoding_format"] == "float" for r in calls)
    assert calls[0].headers["authorization"] == "Bearer sk-test-123"
    assert "sk-test-123" not in embedder.key


def test_openai_retriever_retrieves_per_turn_over_http(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIStub() as stub:
        endpoint = OpenAIEmbedderConfig(model="embed-small", base_url=stub.url, api_key_env=None)
        retriever = make_retriever("openai", LIBRARY, endpoint=endpoint)
        provide = retrieval_guidance(retriever, k=1, floor=0.3)
        dialogue = [("customer", "I was charged twice for the same order!")]
        shown = asyncio.run(provide(scenario(title="Billing"), dialogue))
    assert [g.id for g in shown] == ["double-charge"]
    assert len([r for r in stub.requests if r.path.endswith("/embeddings")]) == 2, "strategies once, then the turn"


def test_openai_embedder_needs_its_key_and_names_the_endpoint_when_it_fails_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EMBED_KEY", raising=False)
    with pytest.raises(UsageError, match="Set the environment variable EMBED_KEY"):
        OpenAIEmbedder(OpenAIEmbedderConfig(model="m", base_url="http://127.0.0.1:9/v1", api_key_env="EMBED_KEY"))

    calls: list[str] = []

    def failing(text: str) -> list[float]:
        calls.append(text)
        raise RuntimeError("model not loaded")

    with OpenAIStub(embed=failing) as stub:
        config = OpenAIEmbedderConfig(
            model="m", base_url=stub.url, api_key_env=None, max_retries=2, initial_backoff_s=0, max_backoff_s=0
        )
        with pytest.raises(EmbeddingEndpointError) as info:
            OpenAIEmbedder(config).embed(["late delivery"])
    assert str(info.value).startswith(f"embeddings endpoint {stub.url} (m) failed: InternalServerError:")
    assert "model not loaded" in str(info.value) and str(info.value).endswith("(after 3 attempt(s))")
    assert len(calls) == 3  # the first try and two retries, as a chat backend retries a 500
    assert isinstance(info.value.cause, openai.InternalServerError)


def test_openai_embedder_retries_transient_failures_and_expands_its_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    failures = {"left": 2}

    def flaky(text: str) -> list[float]:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("warming up")
        return hashed_embedding(text)

    with OpenAIStub(embed=flaky) as stub:
        monkeypatch.setenv("COACHLAB_TEST_EMBED_URL", stub.url)
        config = OpenAIEmbedderConfig(
            model="m", base_url="${COACHLAB_TEST_EMBED_URL}", api_key_env=None, initial_backoff_s=0, max_backoff_s=0
        )
        embedder = OpenAIEmbedder(config)
        vectors = embedder.embed(["late delivery"])
    assert failures["left"] == 0 and vectors.shape == (1, len(hashed_embedding("x")))
    assert embedder.base_url == stub.url and stub.url in embedder.key and "${" not in embedder.key
    monkeypatch.delenv("COACHLAB_TEST_EMBED_URL")
    with pytest.raises(
        ConfigError, match=r"retrieval\.endpoint\.base_url: environment variable COACHLAB_TEST_EMBED_URL"
    ):
        OpenAIEmbedder(config)


# -- the real model (marked) ------------------------------------------------------------------------------


@pytest.mark.embedded
def test_minilm_retrieves_the_right_strategy_for_a_paraphrase_and_none_for_an_unrelated_situation() -> None:
    require_embedded("all-minilm-l6-v2")
    retriever = make_retriever("embedding", LIBRARY)
    paraphrase = (
        "retail: Parcel not here\ncustomer: My package was due last week and it still has not arrived.\n"
        "agent: I am sorry, let me check.\ncustomer: I just want my money back."
    )
    hits = retriever.search(paraphrase, k=3, floor=0.4)
    assert hits and hits[0][0].id == "late-delivery", hits
    unrelated = "travel: Seat upgrade\ncustomer: Can I choose a window seat on my flight to Lisbon?"
    assert retriever.search(unrelated, k=3, floor=0.4) == []

    # The numpy forward pass reproduces sentence-transformers' published similarities for this model.
    assert isinstance(retriever, EmbeddingRetriever)
    v = retriever.embedder.embed(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    published = [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]]
    np.testing.assert_allclose(v @ v.T, published, atol=1e-3)


# -- the endpoint in a run: a failure ends in one clear line, never a traceback ------------------------------------


def endpoint_experiment(tmp_path: Path) -> Path:
    """The quickstart (dry-run models) retrieving through an embeddings endpoint named by a variable."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "experiments" / "quickstart.yaml").read_text().replace("../", f"{root}/")
    endpoint = (
        'retrieval: {kind: openai, k: 3, floor: 0.1, endpoint: {model: e, base_url: "${COACHLAB_TEST_EMBED_URL}", '
        "api_key_env: null, max_retries: 1, initial_backoff_s: 0, max_backoff_s: 0}}"
    )
    path = tmp_path / "experiment.yaml"
    path.write_text(text.replace("retrieval: {kind: auto, k: 3}", endpoint))
    return path


def test_an_embeddings_endpoint_that_is_down_ends_train_nodes_and_evaluate_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from coachlab.cli import app
    from coachlab.explorer import NodeStatus, ScenarioTree

    experiment, run = endpoint_experiment(tmp_path), tmp_path / "run"
    endpoint = {"down": True}

    def embed(text: str) -> list[float]:
        if endpoint["down"]:
            raise RuntimeError("embedding model crashed")
        return hashed_embedding(text)

    with OpenAIStub(embed=embed) as stub:
        monkeypatch.setenv("COACHLAB_TEST_EMBED_URL", stub.url)
        trained = CliRunner().invoke(app, ["train", str(experiment), "--dry-run", "--out", str(run)])
        # The first node admits a strategy; the next need it embedded: they end as infrastructure errors, named.
        assert trained.exception is None, trained.output
        assert "infrastructure errors" in trained.output and "--resume --retry-failed" in trained.output
        errors = [n for n in ScenarioTree.load(run / "tree.json").nodes() if n.status is NodeStatus.ERROR]
        assert errors and all(f"embeddings endpoint {stub.url} (e) failed" in (n.error or "") for n in errors)

        endpoint["down"] = False  # the endpoint is back: the redone nodes embed the library
        redone = CliRunner().invoke(
            app, ["train", str(experiment), "--dry-run", "--out", str(run), "--resume", "--retry-failed"]
        )
        assert redone.exception is None, redone.output
        assert not [n for n in ScenarioTree.load(run / "tree.json").nodes() if n.status is NodeStatus.ERROR]

        endpoint["down"] = True  # evaluate embeds the library first, before any episode (a fresh process)
        evaluated = subprocess.run(
            [
                sys.executable,
                "-c",
                "from coachlab.cli import main; main()",
                "evaluate",
                str(experiment),
                "--dry-run",
                "--out",
                str(run),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "300"},
            timeout=300,
            check=False,
        )
    assert evaluated.returncode == 2 and "Traceback" not in evaluated.stderr + evaluated.stdout
    (line,) = [line for line in evaluated.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: embeddings endpoint {stub.url} (e) failed: InternalServerError")
    assert "(after 2 attempt(s))" in line and "nothing was evaluated" in line
    assert not (run / "evaluation" / "results.json").exists()
