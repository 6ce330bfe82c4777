"""The models layer: clients from YAML, the embedded local model, cache, retries, limits.

The map of the packages is docs/architecture.md.
"""

from coachlab.llm._base import EngineContexts, ModelClient, WholeReplyClient
from coachlab.llm.cache import CacheKey, ResponseCache
from coachlab.llm.client import Backend, BackendError, RoleClient, close_backends, is_transient
from coachlab.llm.components import (
    PROVIDER_ALIASES,
    ModelEntry,
    RetryPolicy,
    build_chat_client,
    expand_env,
    model_identity,
)
from coachlab.llm.identity import ModelIdentity, resolve_identity
from coachlab.llm.replay import ReplayMiss, ReplayOnlyClient

__all__ = [
    "PROVIDER_ALIASES",
    "Backend",
    "BackendError",
    "CacheKey",
    "EngineContexts",
    "ModelClient",
    "ModelEntry",
    "ModelIdentity",
    "ReplayMiss",
    "ReplayOnlyClient",
    "ResponseCache",
    "RetryPolicy",
    "RoleClient",
    "WholeReplyClient",
    "build_chat_client",
    "close_backends",
    "expand_env",
    "is_transient",
    "model_identity",
    "resolve_identity",
]
