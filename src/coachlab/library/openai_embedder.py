"""`OpenAIEmbedder`: vectors from any OpenAI-compatible `/v1/embeddings` endpoint.

OpenAI itself, vLLM, Ollama, llama.cpp server or text-embeddings-inference: anything that speaks
`POST /v1/embeddings`. The API key comes from an environment variable (named in the config), never
from the config itself, and never reaches logs; `base_url` may reference variables (`${EMBED_URL}`).
Vectors are L2-normalised here, because not every server normalises them.

Transient failures (connection refused, timeouts, 429, 5xx) are retried as chat backends retry them
(`coachlab.retry`: exponential backoff, `Retry-After` honoured). A failure that stays is an
`EmbeddingEndpointError` naming the endpoint: inside an episode it ends that episode on an
infrastructure error, as a chat backend's failure does; when the library's strategies are embedded
before any episode, the runner turns it into a one-line error. A missing key or an answer of the
wrong shape is a `CoachlabError`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import openai
from openai.types import CreateEmbeddingResponse
from pydantic import BaseModel, ConfigDict, Field

from coachlab.envref import expand_env, strip_credentials
from coachlab.errors import ModelResponseError, UsageError
from coachlab.redact import redact, register_secret
from coachlab.retry import RetryPolicy, backoff, is_transient

if TYPE_CHECKING:  # numpy is imported where vectors are made: the config loads without it
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["EmbeddingEndpointError", "OpenAIEmbedder", "OpenAIEmbedderConfig"]

logger = logging.getLogger(__name__)


class OpenAIEmbedderConfig(BaseModel):
    """Where and how `OpenAIEmbedder` asks for embeddings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, description="The embedding model's name at the endpoint.")
    base_url: str | None = Field(
        default=None,
        description="The endpoint, e.g. http://localhost:8000/v1 or ${EMBED_URL:-http://localhost:8000/v1} "
        "(OpenAI's when omitted).",
    )
    api_key_env: str | None = Field(
        default="OPENAI_API_KEY",
        description="The environment variable that holds the API key; null for servers that need none.",
    )
    dimensions: int | None = Field(default=None, gt=0, description="Ask for shorter vectors (text-embedding-3).")
    timeout_s: float = Field(default=10.0, gt=0, description="Seconds per request.")
    max_retries: int = Field(
        default=4, ge=0, le=20, description="Retries after the first try (connection errors, timeouts, 429, 5xx)."
    )
    initial_backoff_s: float = Field(default=0.5, ge=0, description="Wait before the first retry.")
    max_backoff_s: float = Field(default=30.0, ge=0, description="Longest wait between tries.")
    batch_size: int = Field(default=256, ge=1, description="Texts per request.")

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy these settings make (the one chat backends use)."""
        return RetryPolicy(
            max_retries=self.max_retries,
            initial_backoff_s=self.initial_backoff_s,
            max_backoff_s=self.max_backoff_s,
            timeout_s=self.timeout_s,
        )


class EmbeddingEndpointError(Exception):
    """The embeddings endpoint failed for good (after retries, or a non-transient error).

    Not a `CoachlabError`: inside an episode it is a backend failure (an infrastructure error), like
    `coachlab.llm.BackendError`. Its message names the endpoint and is redacted; `cause` is the
    original exception (read its type or status, never print it).
    """

    def __init__(self, endpoint: str, cause: BaseException, attempts: int) -> None:
        super().__init__(
            f"embeddings endpoint {endpoint} failed: {type(cause).__name__}: {redact(str(cause))} "
            f"(after {attempts} attempt(s))"
        )
        self.endpoint = endpoint
        self.cause = cause
        self.attempts = attempts


class OpenAIEmbedder:
    """An `Embedder` over an OpenAI-compatible embeddings endpoint (the openai SDK).

    `embed` is synchronous (one blocking HTTP request per batch, bounded by `timeout_s` and the
    SDK's retries); `aembed` runs it in a worker thread, so per-turn retrieval does not block the
    event loop. One HTTP client (a keep-alive connection pool) serves every thread.

    Args:
        config: The endpoint, model and key variable.

    Raises:
        UsageError: The key's environment variable is not set.
        ConfigError: `base_url` references a variable that is not set and has no default.
    """

    def __init__(self, config: OpenAIEmbedderConfig) -> None:
        self.config = config
        self.base_url: str | None = (
            expand_env(config.base_url, where="retrieval.endpoint.base_url") if config.base_url else None
        )
        """The endpoint with its variables expanded."""
        if config.api_key_env is None:
            self._api_key = "not-needed"  # local servers ignore it; the SDK wants a value
        else:
            key = os.environ.get(config.api_key_env)
            if not key:
                where = self.endpoint
                raise UsageError(f"Set the environment variable {config.api_key_env} to the API key of {where}.")
            register_secret(key)  # masked in error messages and log lines from now on
            self._api_key = key
        self._client: openai.OpenAI | None = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """The endpoint for people: its URL (credentials removed) and the model."""
        url = strip_credentials(self.base_url) if self.base_url else "https://api.openai.com/v1"
        return f"{url} ({self.config.model})"

    @property
    def key(self) -> str:
        """Identifies the vector space: endpoint (expanded, no credentials), model and dimensions."""
        base = strip_credentials(self.base_url) if self.base_url else "api.openai.com"
        return f"openai:{base}:{self.config.model}:{self.config.dimensions}"

    def _options(self) -> dict[str, Any]:
        return {
            "api_key": self._api_key,
            "base_url": self.base_url,
            "timeout": self.config.timeout_s,
            "max_retries": 0,  # retried here, as chat backends are (one layer, not two)
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
                # Retrievers are rebuilt as the library grows and nobody closes the old ones: their
                # connections close when they are collected, never left to the garbage collector.
                weakref.finalize(self, self._client.close)
            client = self._client
        parts = [self._vectors(self._create(client, batch), len(batch)) for batch in self._batches(texts)]
        return np.concatenate(parts)

    def _create(self, client: openai.OpenAI, batch: Sequence[str]) -> CreateEmbeddingResponse:
        """One request, with retries of transient failures.

        Raises:
            EmbeddingEndpointError: The request failed for good.
        """
        policy = self.config.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                return client.embeddings.create(**self._request(batch))
            except Exception as exc:
                if not is_transient(exc) or attempt > policy.max_retries:
                    # from None: a printed traceback would show the cause's text, key echoes included
                    raise EmbeddingEndpointError(self.endpoint, exc, attempt) from None
                wait = backoff(policy, attempt, exc)
                logger.warning(
                    "embeddings endpoint %s: %s; retry %d/%d in %.1fs",
                    self.endpoint,
                    type(exc).__name__,
                    attempt,
                    policy.max_retries,
                    wait,
                )
                time.sleep(wait)

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
                f"embeddings endpoint {self.endpoint} returned {len(data)} embeddings for {count} texts."
            )
        matrix = np.asarray([item.embedding for item in data], dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] == 0:
            raise ModelResponseError(f"{self.config.model} returned embeddings of shape {matrix.shape}.")
        return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
