"""Sentence embeddings on the CPU with numpy: a sentence-transformers BERT model without torch.

The default model is all-MiniLM-L6-v2 (`coachlab models fetch all-minilm-l6-v2`): a 6-layer BERT
whose mean-pooled, L2-normalised token states are sentence vectors (384 numbers). `BertEmbedder`
reads the sentence-transformers folder itself: `model.safetensors` (parsed by
`coachlab.library.safetensors_file`), `config.json`, `tokenizer.json` (run by the `tokenizers` package),
`sentence_bert_config.json` (the token limit) and `1_Pooling/config.json` (must be mean pooling).
It needs `numpy` and `tokenizers`, nothing else, and never touches the network.

Example:
    >>> embedder = load_embedder()  # doctest: +SKIP
    >>> vectors = embedder.embed(["my parcel is late", "where is my package?"])  # doctest: +SKIP
    >>> vectors.shape, round(float(vectors[0] @ vectors[1]), 2)  # cosine similarity  # doctest: +SKIP
    ((2, 384), 0.43)
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coachlab.errors import UsageError
from coachlab.library.batching import MicroBatcher
from coachlab.library.blas import set_blas_threads
from coachlab.library.safetensors_file import read_safetensors

__all__ = ["DEFAULT_EMBEDDING_MODEL", "BertConfig", "BertEmbedder", "load_embedder"]

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
"""The catalog name of the offline embedding model (`coachlab models fetch all-minilm-l6-v2`)."""

_MASKED = np.float32(-1e9)  # added to the attention scores of padding: exp() makes it exactly 0


class BertConfig(BaseModel):
    """The fields of a Hugging Face BERT `config.json` that the forward pass needs."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model_type: str = "bert"
    hidden_size: int = Field(gt=0)
    num_hidden_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: NDArray[np.float32]  # (hidden, 3 * hidden), queries pre-scaled by 1/sqrt(head size)
    qkv_b: NDArray[np.float32]
    out_w: NDArray[np.float32]
    out_b: NDArray[np.float32]
    norm1: tuple[NDArray[np.float32], NDArray[np.float32]]
    up_w: NDArray[np.float32]
    up_b: NDArray[np.float32]
    down_w: NDArray[np.float32]
    down_b: NDArray[np.float32]
    norm2: tuple[NDArray[np.float32], NDArray[np.float32]]


def _layer_norm_(x: NDArray[np.float32], norm: tuple[NDArray[np.float32], NDArray[np.float32]], eps: float) -> Any:
    """Layer norm of the rows of a 2-D array, in place (one pass fewer than the textbook form)."""
    x -= x.mean(axis=-1, keepdims=True)
    scale = np.einsum("ij,ij->i", x, x)[:, None]  # sum of squares per row, without a squared copy
    scale *= np.float32(1 / x.shape[1])
    scale += np.float32(eps)
    np.sqrt(scale, out=scale)
    np.reciprocal(scale, out=scale)
    x *= scale
    x *= norm[0]
    x += norm[1]
    return x


# Abramowitz & Stegun 7.1.26 (error below 1.5e-7, i.e. float32 rounding), halved: Phi(-a) = poly(t) exp(-a^2 / 2)
_PHI = tuple(np.float32(c / 2) for c in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592))
_PHI_T = np.float32(0.3275911 / math.sqrt(2))
_GELU_ROWS = 256  # rows per slice: the temporaries stay small and are reused (3x faster than whole arrays)


def _gelu_(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Exact (erf) GELU of a 2-D array, in place.

    gelu(x) = x Phi(x) = max(x, 0) - |x| Phi(-|x|), with Phi(-a) = poly(t) exp(-a^2/2) and
    t = 1 / (1 + p a / sqrt 2) from Abramowitz & Stegun 7.1.26 (erf to 1.5e-7, float32 rounding).
    """
    rows = min(_GELU_ROWS, x.shape[0])
    a, t, q = (np.empty((rows, x.shape[1]), dtype=np.float32) for _ in range(3))
    for start in range(0, x.shape[0], _GELU_ROWS):
        v = x[start : start + _GELU_ROWS]
        n = v.shape[0]
        aa, tt, qq = a[:n], t[:n], q[:n]
        np.abs(v, out=aa)
        np.multiply(aa, _PHI_T, out=tt)
        tt += 1
        np.reciprocal(tt, out=tt)
        np.multiply(tt, _PHI[0], out=qq)
        for c in _PHI[1:]:
            qq += c
            qq *= tt
        np.multiply(v, v, out=tt)
        tt *= np.float32(-0.5)
        np.exp(tt, out=tt)
        qq *= tt
        qq *= aa  # |v| Phi(-|v|)
        np.maximum(v, 0, out=v)
        v -= qq
    return x


class BertEmbedder:
    """A sentence-transformers BERT model (mean pooling, L2-normalised) run in numpy, float32.

    Texts are tokenized with the model's `tokenizer.json`, cut at `max_tokens`, sorted by length
    and run in padded batches; the vectors come back in the input order, one unit row per text,
    so a dot product is the cosine similarity. Thread-safe. `embed` runs in the calling thread;
    `aembed` (what retrieval uses, in simulation and in production alike) queues its texts for the
    embedder's worker threads, one per core, and a worker embeds the texts of every request
    waiting in one forward pass (`coachlab.library.batching.MicroBatcher`), so concurrent
    conversations share passes instead of queueing one each.

    Cost: a forward pass is about 21 MFLOP per token, 1.2 GFLOP for a 57-token, three-line
    situation; OpenBLAS reaches about 100 GFLOP/s on one core for these shapes, so the matrix
    products alone take 12 ms. Measured (thread CPU time, shared 2-core AMD EPYC): 20 ms for one
    situation alone, 16 ms each in passes of 16. OpenBLAS's own threads only get in the way: with
    two of them, while other processes held the cores, one situation took 130-300 ms; so the
    embedder sets OpenBLAS to `blas_threads` (1) for the process when it loads, and runs its own
    workers instead.

    Args:
        folder: A sentence-transformers model folder (see the module docstring).
        batch_size: Texts per forward pass (also the most texts `aembed` joins into one pass).
        max_tokens: Token limit per text; `sentence_bert_config.json`'s `max_seq_length` when omitted.
        workers: Worker threads of `aembed`, at most (default: the cores this process may use).
        blas_threads: Threads OpenBLAS runs each matrix product on, set for the whole process when
            the model loads (`coachlab.library.blas`); None leaves the setting alone.

    Raises:
        UsageError: A file is missing or damaged, the model is not a BERT this code can run, or the
            `tokenizers` package is not installed.
    """

    def __init__(
        self,
        folder: Path,
        *,
        batch_size: int = 32,
        max_tokens: int | None = None,
        workers: int | None = None,
        blas_threads: int | None = 1,
    ) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise UsageError("The embedding model needs the `tokenizers` package: pip install tokenizers") from None
        self.folder = Path(folder)
        self.batch_size = batch_size
        config, st_config, pooling = (self._json(name) for name in _CONFIG_FILES)
        try:
            self.config = BertConfig.model_validate(config)
        except ValidationError as exc:
            raise UsageError(f"{self.folder / 'config.json'} is not a BERT config: {exc}") from None
        cfg = self.config
        modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
        if (
            cfg.model_type != "bert"
            or cfg.position_embedding_type != "absolute"
            or cfg.hidden_act != "gelu"
            or cfg.hidden_size % cfg.num_attention_heads
            or (pooling and list(modes) != ["pooling_mode_mean_tokens"])
        ):
            raise UsageError(
                f"{self.folder}: only BERT models with absolute positions, erf GELU and mean pooling are "
                f"supported (this one: {cfg.model_type}, {cfg.position_embedding_type}, {cfg.hidden_act}, {modes})."
            )
        limit = max_tokens or int(st_config.get("max_seq_length", cfg.max_position_embeddings))
        self.max_tokens = min(limit, cfg.max_position_embeddings)
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_padding()  # tokenizer.json may pin a fixed padding; batches pad to their longest text
        self.tokenizer.enable_truncation(max_length=self.max_tokens)  # pyright: ignore[reportUnknownMemberType]
        self._load_weights(read_safetensors(self.folder / "model.safetensors"))
        if blas_threads is not None:
            set_blas_threads(blas_threads)
        self.batcher = MicroBatcher(
            self.embed, workers=workers or _cores(), max_texts=batch_size, name="coachlab-embed"
        )

    @property
    def dimensions(self) -> int:
        """The length of each vector."""
        return self.config.hidden_size

    @property
    def key(self) -> str:
        """Identifies the vector space: vectors with equal keys are comparable."""
        return f"bert:{self.folder.resolve()}:{self.max_tokens}"

    def _json(self, name: str) -> Mapping[str, Any]:
        path = self.folder / name
        if not path.is_file():
            if name == "config.json":
                raise UsageError(f"{path} is missing: is {self.folder} a sentence-transformers model folder?")
            return {}
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc}") from None
        return cast(dict[str, Any], value) if isinstance(value, dict) else {}

    def _load_weights(self, tensors: Mapping[str, NDArray[Any]]) -> None:
        prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
        cfg, file = self.config, self.folder / "model.safetensors"

        def get(name: str, shape: tuple[int, ...], *, transpose: bool = False) -> NDArray[np.float32]:
            array = tensors.get(prefix + name)
            if array is None:
                raise UsageError(f"{file} has no tensor {prefix + name!r}: not a BERT checkpoint.")
            if array.shape != shape:
                raise UsageError(f"{file}: {prefix + name} has shape {array.shape}, config.json implies {shape}.")
            return np.ascontiguousarray(array.T if transpose else array, dtype=np.float32)

        h, inner = cfg.hidden_size, cfg.intermediate_size
        scale = np.float32(1 / math.sqrt(h // cfg.num_attention_heads))
        word = tensors.get(prefix + "embeddings.word_embeddings.weight")
        if word is None or word.ndim != 2 or word.shape[1] != h:
            raise UsageError(f"{file} has no word embeddings of width {h}.")
        self.word: NDArray[np.float32] = word.astype(np.float32, copy=False)  # float32 files: the memory map
        self.position = get("embeddings.position_embeddings.weight", (cfg.max_position_embeddings, h))
        self.token_type = get("embeddings.token_type_embeddings.weight", (cfg.type_vocab_size, h))[0]
        self.norm = (get("embeddings.LayerNorm.weight", (h,)), get("embeddings.LayerNorm.bias", (h,)))
        self.layers: list[_Layer] = []
        for i in range(cfg.num_hidden_layers):
            p = f"encoder.layer.{i}."
            q, k, v = (get(f"{p}attention.self.{n}.weight", (h, h), transpose=True) for n in ("query", "key", "value"))
            qb, kb, vb = (get(f"{p}attention.self.{n}.bias", (h,)) for n in ("query", "key", "value"))
            self.layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(np.concatenate([q * scale, k, v], axis=1)),
                    qkv_b=np.concatenate([qb * scale, kb, vb]),
                    out_w=get(f"{p}attention.output.dense.weight", (h, h), transpose=True),
                    out_b=get(f"{p}attention.output.dense.bias", (h,)),
                    norm1=(
                        get(f"{p}attention.output.LayerNorm.weight", (h,)),
                        get(f"{p}attention.output.LayerNorm.bias", (h,)),
                    ),
                    up_w=get(f"{p}intermediate.dense.weight", (inner, h), transpose=True),
                    up_b=get(f"{p}intermediate.dense.bias", (inner,)),
                    down_w=get(f"{p}output.dense.weight", (h, inner), transpose=True),
                    down_b=get(f"{p}output.dense.bias", (h,)),
                    norm2=(get(f"{p}output.LayerNorm.weight", (h,)), get(f"{p}output.LayerNorm.bias", (h,))),
                )
            )

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit vectors for `texts`, shape `(len(texts), dimensions)`, in the input order."""
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in rows)
            batch = np.full((len(rows), width), self.config.pad_token_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.float32)
            for r, i in enumerate(rows):
                batch[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            out[rows] = self._forward(batch, mask)
        return out

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """`embed` in the embedder's worker threads, batched with concurrent requests; the event loop keeps running."""
        return await self.batcher.run(texts)

    def _forward(self, ids: NDArray[np.int64], mask: NDArray[np.float32]) -> NDArray[np.float32]:
        b, t = ids.shape
        h, heads, eps = self.dimensions, self.config.num_attention_heads, self.config.layer_norm_eps
        x = (self.word[ids] + self.position[:t] + self.token_type).reshape(b * t, h)
        x = _layer_norm_(x, self.norm, eps)
        padding = ((1 - mask) * _MASKED)[:, None, None, :]
        for layer in self.layers:
            qkv = x @ layer.qkv_w
            qkv += layer.qkv_b
            qkv = qkv.reshape(b, t, 3, heads, h // heads).transpose(2, 0, 3, 1, 4)
            scores = qkv[0] @ qkv[1].transpose(0, 1, 3, 2)  # (b, heads, t, t)
            scores += padding
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(b * t, h)
            y = context @ layer.out_w
            y += layer.out_b
            y += x
            x = _layer_norm_(y, layer.norm1, eps)
            inner = x @ layer.up_w
            inner += layer.up_b
            y = _gelu_(inner) @ layer.down_w
            y += layer.down_b
            y += x
            x = _layer_norm_(y, layer.norm2, eps)
        pooled = (mask[:, None, :] @ x.reshape(b, t, h))[:, 0, :] / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_CONFIG_FILES = ("config.json", "sentence_bert_config.json", "1_Pooling/config.json")
_LOADED: dict[str, BertEmbedder] = {}
_LOCK = threading.Lock()


def load_embedder(model: str | os.PathLike[str] = DEFAULT_EMBEDDING_MODEL) -> BertEmbedder:
    """The embedder of a catalog model (fetched) or a model folder, loaded once per process.

    Args:
        model: A catalog name (`all-minilm-l6-v2`) or the path of a sentence-transformers folder.

    Raises:
        UsageError: The model is not fetched (the message gives `coachlab models fetch ...`), or
            it cannot be loaded (see `BertEmbedder`).
    """
    from coachlab.llm.weights import catalog, model_path

    text = os.fspath(model)
    folder = model_path(text) if text in catalog() else Path(text).expanduser()
    if not folder.is_dir():
        raise UsageError(
            f"{folder} is not a model folder. Give a catalog name ({DEFAULT_EMBEDDING_MODEL}) or a folder."
        )
    key = str(folder.resolve())
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = BertEmbedder(folder)
            logger.info("Loaded the embedding model %s", folder)
        return _LOADED[key]
