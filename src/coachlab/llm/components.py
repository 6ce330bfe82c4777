"""Model entries in YAML: AutoGen component configs plus coachlab's run settings.

A model entry is what a researcher writes under `models:` in an experiment file::

    student:
      provider: openai              # or a full import path of a ChatCompletionClient
      config: {model: llama-3.1-8b-instruct, base_url: "http://localhost:8000/v1",
               api_key: "${VLLM_KEY}"}
      concurrency: 16

`provider` + `config` are an AutoGen component config, loaded with
`ChatCompletionClient.load_component`. Strings in `config` may reference environment
variables as `${NAME}` or `${NAME:-default}`; they are expanded only when the client is built,
so the file and everything coachlab writes keep the reference, never the secret.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal
from urllib.parse import urlsplit

from autogen_core import ComponentModel
from autogen_core.models import ChatCompletionClient
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from coachlab.envref import expand_env, literal_secrets
from coachlab.errors import ConfigError
from coachlab.redact import redact, referenced_secrets, register_secret
from coachlab.retry import DEFAULT_TIMEOUT_S, RetryPolicy

__all__ = [
    "IN_PROCESS_PROVIDERS",
    "LOCAL_SERVER_TIMEOUT_S",
    "OPENAI_TIMEOUT_S",
    "PROVIDER_ALIASES",
    "ModelEntry",
    "RetryPolicy",
    "build_chat_client",
    "default_timeout",
    "expand_env",
    "is_local_url",
    "model_identity",
]

PROVIDER_ALIASES: dict[str, str] = {
    "openai": "autogen_ext.models.openai.OpenAIChatCompletionClient",
    "azure_openai": "autogen_ext.models.openai.AzureOpenAIChatCompletionClient",
    "embedded": "coachlab.llm.embedded.EmbeddedChatCompletionClient",
    "replay": "autogen_ext.models.replay.ReplayChatCompletionClient",
}
"""Short names accepted in `provider:`."""

_OPENAI = "autogen_ext.models.openai.OpenAIChatCompletionClient"

IN_PROCESS_PROVIDERS = frozenset(
    {
        "coachlab.llm.embedded.EmbeddedChatCompletionClient",
        "autogen_ext.models.llama_cpp.LlamaCppChatCompletionClient",
        "autogen_ext.models.replay.ReplayChatCompletionClient",
    }
)
"""Providers that answer in this process: a call cannot be cut short, and a slow CPU is no fault."""

LOCAL_SERVER_TIMEOUT_S = 1800.0
"""Default per-call timeout for a server on this machine: a CPU server with every slot busy queues calls,
and a queued call is slow, not failed (only a server that stopped answering should time out)."""

OPENAI_TIMEOUT_S = 600.0
"""Default per-call timeout for api.openai.com: the openai SDK's own default."""


class ModelEntry(BaseModel):
    """One model under `models:` in an experiment file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(description="'openai', 'embedded', or the import path of a ChatCompletionClient.")
    config: dict[str, JsonValue] = Field(default_factory=dict[str, JsonValue], description="The client's config.")
    concurrency: int = Field(default=8, ge=1, le=1024, description="Calls in flight at once on this backend.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    structured_output: Literal["native", "json_object_schema", "prompt"] = Field(
        default="native",
        description=(
            "How the judge's JSON schema reaches the backend: 'native' (json_schema response format), "
            "'json_object_schema' (llama.cpp server), 'prompt' (schema in the prompt only)."
        ),
    )
    send_seed: bool = Field(default=True, description="Send a per-trial seed with every call.")
    cost_per_1k_prompt: float = Field(default=0.0, ge=0, description="Price per 1,000 prompt tokens.")
    cost_per_1k_completion: float = Field(default=0.0, ge=0, description="Price per 1,000 completion tokens.")

    @property
    def provider_path(self) -> str:
        """The full import path of the client class."""
        return PROVIDER_ALIASES.get(self.provider, self.provider)

    @property
    def call_timeout_s(self) -> float | None:
        """The per-call timeout: `retry.timeout_s` when the entry sets it (null included), else `default_timeout`."""
        return self.retry.timeout_s if "timeout_s" in self.retry.model_fields_set else default_timeout(self)

    @property
    def temperature(self) -> float | None:
        """The configured sampling temperature, if any (part of cache keys)."""
        value = self.config.get("temperature")
        return float(value) if isinstance(value, int | float) else None


def is_local_url(url: str) -> bool:
    """True when `url` points at this machine (localhost, a loopback address, 0.0.0.0)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def default_timeout(entry: ModelEntry) -> float | None:
    """The per-call timeout that fits the entry's backend, when its `retry` sets none.

    None (no timeout) for a model run in this process (`IN_PROCESS_PROVIDERS`);
    `LOCAL_SERVER_TIMEOUT_S` for a server on this machine; `OPENAI_TIMEOUT_S` for OpenAI itself
    (an OpenAI client without a `base_url`, or one at api.openai.com); else `DEFAULT_TIMEOUT_S`.
    """
    provider = entry.provider_path
    if provider in IN_PROCESS_PROVIDERS:
        return None
    config = expand_env(dict(entry.config), where="models", strict=False)
    base = config.get("base_url") or config.get("azure_endpoint")
    if isinstance(base, str) and base:
        if is_local_url(base):
            return LOCAL_SERVER_TIMEOUT_S
        if urlsplit(base).hostname == "api.openai.com":
            return OPENAI_TIMEOUT_S
    elif provider == _OPENAI:
        return OPENAI_TIMEOUT_S
    return DEFAULT_TIMEOUT_S


def model_identity(entry: ModelEntry) -> str:
    """A short label of a model entry as written: provider class, model, endpoint (references unexpanded).

    Never contains a secret (keys are not part of it). Cache keys and the resolved run config use
    `coachlab.llm.identity.resolve_identity` instead, which expands the endpoint and holds every
    sampling setting.
    """
    cfg = entry.config
    model = cfg.get("model") or cfg.get("azure_deployment") or "?"
    base = cfg.get("base_url") or cfg.get("azure_endpoint") or ""
    return (
        f"{entry.provider_path.rsplit('.', 1)[-1]}:{model}@{base}"
        if base
        else f"{entry.provider_path.rsplit('.', 1)[-1]}:{model}"
    )


def build_chat_client(entry: ModelEntry, *, where: str) -> ChatCompletionClient:
    """Build the AutoGen client for a model entry.

    Args:
        entry: The model entry.
        where: Where the entry was written ("experiments/x.yaml: models.student"), for errors.

    Raises:
        ConfigError: The provider cannot be imported or rejects its config.
    """
    config = expand_env(dict(entry.config), where=f"{where}.config")
    for secret in referenced_secrets(entry.config):
        register_secret(secret)  # masked from now on in error messages and (with the CLI's filter) log lines
    for _, literal in literal_secrets(entry.config):  # an entry built in Python (files refuse them at load)
        if len(literal) >= 16:  # a key, not a placeholder such as "not-needed"
            register_secret(literal)
    if entry.provider_path.startswith("autogen_ext.models.openai."):
        config.setdefault("max_retries", 0)  # RoleClient retries (honouring Retry-After); one layer, not two
        config.setdefault("timeout", entry.call_timeout_s)  # the SDK's own 600 s must not cut a queued call short
    component = ComponentModel(provider=entry.provider_path, component_type="model", config=config)
    try:
        if entry.provider_path == _OPENAI:
            return _openai_client(config)
        return ChatCompletionClient.load_component(component)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(f"{where}.config: {redact(problems)}") from None
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        text = str(exc)
        if "model_info" in text:
            text += (
                " For a model OpenAI does not know (vLLM, Ollama, llama.cpp server), add "
                "model_info: {vision: false, function_calling: false, json_output: true, "
                "structured_output: true, family: unknown} to config."
            )
        if "api_key" in text.lower() or "OPENAI_API_KEY" in text:
            text += " Set the key in the environment and reference it as api_key: ${OPENAI_API_KEY}."
        raise ConfigError(f"{where}: cannot build {entry.provider!r}: {redact(text)}") from None


def _openai_client(config: dict[str, Any]) -> ChatCompletionClient:
    """AutoGen's OpenAI client as `load_component` builds it, on an HTTP client that reads each answer's cache report.

    The report (`coachlab.llm.metering.processed_from_response`) is in the response body, which AutoGen's
    `CreateResult` drops: llama.cpp's `timings`, OpenAI's `usage.prompt_tokens_details`.
    """
    from autogen_ext.models.openai import OpenAIChatCompletionClient
    from autogen_ext.models.openai.config import OpenAIClientConfigurationConfigModel

    from coachlab.llm.metering import metered_http_client

    settings = OpenAIClientConfigurationConfigModel.model_validate(config)
    kwargs: dict[str, Any] = settings.model_dump(exclude_none=True)
    if settings.api_key is not None:
        kwargs["api_key"] = settings.api_key.get_secret_value()
    if "timeout" in config and config["timeout"] is None:
        kwargs["timeout"] = None  # no timeout (model_dump(exclude_none) dropped it)
    kwargs["http_client"] = metered_http_client()  # passed on to AsyncOpenAI, like any of its arguments
    return OpenAIChatCompletionClient(**kwargs)
