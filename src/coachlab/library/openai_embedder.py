"""`OpenAIEmbedder`: vectors from any OpenAI-compatible `/v1/embeddings` endpoint.

OpenAI itself, vLLM, Ollama, llama.cpp server or text-embeddings-inference: anything that speaks
`POST /v1/embeddings`. The API key comes from an environment variable (named in the config), never
from the config itself, and never reaches logs. Vectors are L2-normalised here, because not every
server normalises them.

Errors from the server (connection refused, timeout, HTTP 5xx after the SDK's retries) propagate
as the openai SDK raises them, so that an episode that hits one ends on an infrastructure error
rather than stopping the whole run; a missing key or an answer of the wrong shape is a
`CoachlabError`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import openai
from openai.types import CreateEmbeddingResponse
from pydantic import BaseModel, ConfigDict, Field

from coachlab.errors import ModelResponseError, UsageError

if TYPE_CHECKING:  # numpy is imported where vectors are made: the config loads without it
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["OpenAIEmbedder", "OpenAIEmbedderConfig"]


class OpenAIEmbedderConfig(BaseModel):
    """Where and how `OpenAIEmbedder` asks for embeddings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="The embedding model's name at the endpoint.")
    base_url: str | None = Field(
        default=None, description="The endpoint, e.g. http://localhost:8000/v1 (OpenAI's when omitted)."
    )
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY",
        description="The environment variable that holds the API key; null for servers that need none.",
    )
    dimensions: int | None = Field(default=None, gt=0, description="Ask for shorter vectors (text-embedding-3).")
    timeout_s: float = Field(default=10.0, gt=0, description="Seconds per request.")
    max_retries: int = Field(default=2, ge=0, description="The openai SDK's retries (connection errors, 429, 5xx).")
    batch_size: int = Field(default=256, ge=1, description="Texts per request.")


class OpenAIEmbedder:
    """An `Embedder` over an OpenAI-compatible embeddings endpoint (the openai SDK).

    `embed` is synchronous (one blocking HTTP request per batch, bounded by `timeout_s` and the
    SDK's retries); `aembed` runs it in a worker thread, so per-turn retrieval does not block the
    event loop. One HTTP client (a keep-alive connection pool) serves every thread.

    Args:
        config: The endpoint, model and key variable.

    Raises:
        UsageError: The key's environment variable is not set.
    """

    def __init__(self, config: OpenAIEmbedderConfig) -> None:
        self.config = config
        if config.api_key_env is None:
            self._api_key = "not-needed"  # local servers ignore it; the SDK wants a value
        else:
            key = os.environ.get(config.api_key_env)
            if not key:
                where = config.base_url or "the OpenAI API"
                raise UsageError(f"Set the environment variable {config.api_key_env} to the API key of {where}.")
            self._api_key = key
        self._client: openai.OpenAI | None = None
        self._lock = threading.Lock()

    @property
    def key(self) -> str:
        """Identifies the vector space: endpoint, model and dimensions."""
        return f"openai:{self.config.base_url or 'api.openai.com'}:{self.config.model}:{self.config.dimensions}"

    def _options(self) -> dict[str, Any]:
        return {
            "api_key": self._api_key,
            "base_url": self.config.base_url,
            "timeout": self.config.timeout_s,
            "max_retries": self.config.max_retries,
        }

    def _request(self, texts: Sequence[str]) -> dict[str, Any]:
        # "float", not the SDK's default base64: every compatible server speaks it.
        request: dict[str, Any] = {"model": self.config.model, "input": list(texts), "encoding_format": "float"}
        if self.config.dimensions is not None:
            request["dimensions"] = self.config.dimensions
        return request

    def _batches(self, texts: Sequence[str]) -> list[Sequence[str]]:
        size = self.config.batch_size
        return [texts[i : i + size] for i in range(0, len(texts), size)]

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit vectors for `texts`, in the input order (one request per `batch_size` texts)."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.config.dimensions or 0), dtype=np.float32)
        with self._lock:
            if self._client is None:
                self._client = openai.OpenAI(**self._options())
            client = self._client
        parts = [
            self._vectors(client.embeddings.create(**self._request(batch)), len(batch))
            for batch in self._batches(texts)
        ]
        return np.concatenate(parts)

    async def aembed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """`embed` in a worker thread, so the event loop keeps serving other episodes.

        A thread rather than the SDK's async client: the sync client's connections are not tied
        to one event loop, so they are reused across `asyncio.run` calls and never left open on a
        closed loop.
        """
        return await asyncio.to_thread(self.embed, texts)

    def close(self) -> None:
        """Close the HTTP connections (a later call opens new ones)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _vectors(self, response: CreateEmbeddingResponse, count: int) -> NDArray[np.float32]:
        import numpy as np

        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != count or [item.index for item in data] != list(range(count)):
            raise ModelResponseError(
                f"{self.config.model} at {self.config.base_url or 'the OpenAI API'} returned {len(data)} "
                f"embeddings for {count} texts."
            )
        matrix = np.asarray([item.embedding for item in data], dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] == 0:
            raise ModelResponseError(f"{self.config.model} returned embeddings of shape {matrix.shape}.")
        return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
