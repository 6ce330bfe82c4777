"""The `/v1/embeddings` route of `OpenAIStub`: deterministic bag-of-words vectors, offline.

`hashed_embedding` counts the words of a text into `dimensions` buckets (a stable hash), so texts
that share words get similar vectors and texts that share none get orthogonal ones: enough to
check a retriever end to end over HTTP. Vectors are not normalised, as some servers send them.

Example::

    with OpenAIStub(embed=lambda text: [1.0, 0.0] if "refund" in text else [0.0, 1.0]) as stub:
        embedder = OpenAIEmbedder(OpenAIEmbedderConfig(model="stub", base_url=stub.url, api_key_env=None))
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any, cast

__all__ = ["EMBEDDING_DIMENSIONS", "EmbedFn", "embeddings_response", "hashed_embedding"]

EmbedFn = Callable[[str], Sequence[float]]
"""Returns the vector of one input text."""

EMBEDDING_DIMENSIONS = 64
"""The length of `hashed_embedding`'s vectors."""

_WORD = re.compile(r"[a-z0-9]+")


def hashed_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """Word counts hashed into `dimensions` buckets (blake2b of each lower-cased word)."""
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % dimensions
        vector[bucket] += 1.0
    return vector


def embeddings_response(request: dict[str, Any], embed: EmbedFn) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body answering one `POST /v1/embeddings` request."""
    raw = request.get("input")
    inputs = [raw] if isinstance(raw, str) else cast(list[Any], raw) if isinstance(raw, list) else None
    if not inputs or not all(isinstance(text, str) for text in inputs):
        return 400, _error("input must be a string or a non-empty list of strings (token arrays are not supported)")
    texts = cast(list[str], inputs)
    encoding = request.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return 400, _error(f"unknown encoding_format {encoding!r}")
    data: list[dict[str, Any]] = []
    for index, text in enumerate(texts):
        try:
            vector = [float(x) for x in embed(text)]
        except Exception as exc:  # a test's embed function failed: answer like a broken server
            return 500, _error(f"embed function failed: {type(exc).__name__}: {exc}", code=500)
        value: Any = vector
        if encoding == "base64":  # little-endian float32, what the openai SDK decodes
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(len(text.split()) for text in texts)
    body = {
        "object": "list",
        "data": data,
        "model": str(request.get("model", "stub")),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return 200, body


def _error(message: str, *, code: int = 400) -> dict[str, Any]:
    kind = "invalid_request_error" if code == 400 else "server_error"
    return {"error": {"message": message, "type": kind, "code": code}}
