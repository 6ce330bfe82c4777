"""Retrying transient backend errors: which errors, how long to wait, how often.

Shared by every backend coachlab calls over the network (chat models in `coachlab.llm`, the
embeddings endpoint in `coachlab.library`), so they retry alike: timeouts, dropped connections, 429
and 5xx are retried with exponential backoff and jitter, or after the wait the server asked for
(`Retry-After`), capped at `RetryPolicy.max_backoff_s`. Nothing here imports a model SDK.
"""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_TIMEOUT_S", "RetryPolicy", "backoff", "is_transient", "retry_after"]

DEFAULT_TIMEOUT_S = 120.0
"""The per-call timeout of a remote backend that sets none."""

_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
_TRANSIENT_NAMES = {"APIConnectionError", "APITimeoutError", "RateLimitError", "InternalServerError"}


class RetryPolicy(BaseModel):
    """How transient backend errors (timeouts, 429, 5xx, dropped connections) are retried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_retries: int = Field(default=4, ge=0, le=20, description="Retries after the first try.")
    initial_backoff_s: float = Field(default=0.5, ge=0, description="Wait before the first retry.")
    max_backoff_s: float = Field(default=30.0, ge=0, description="Longest wait between tries.")
    timeout_s: float | None = Field(
        default=DEFAULT_TIMEOUT_S,
        gt=0,
        description=(
            "Per-call timeout in seconds; null for none. Unset in a model entry, it follows the backend "
            "(coachlab.llm.components.default_timeout): none in-process, generous for a server on this machine."
        ),
    )


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: timeouts, dropped connections, 429 and 5xx."""
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status in _TRANSIENT_STATUS
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


def retry_after(exc: BaseException) -> float | None:
    """The wait a server asked for: `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff(policy: RetryPolicy, attempt: int, exc: BaseException) -> float:
    """Seconds to wait before retry number `attempt` (1-based) after `exc`.

    The server's `Retry-After` when it sent one, else exponential backoff with jitter; never more
    than `policy.max_backoff_s`.
    """
    wait = retry_after(exc)
    if wait is None:
        wait = min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (attempt - 1))
        wait *= 0.5 + random.random() / 2
    return min(wait, policy.max_backoff_s)
