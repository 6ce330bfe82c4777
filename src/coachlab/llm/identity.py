"""`ModelIdentity`: everything about a backend that can change its answers, and nothing secret.

Two uses: the response cache keys on it (an answer is reused only by a backend that would give the
same one), and the resolved run config records it for each role. So it holds the provider, the
model, the endpoint with its `${VAR}` references expanded (pointing `SERVER_URL` at another server
is another identity), every other setting of the client config with the provider's defaults filled
(temperature, top_p, max_tokens, n_ctx, model_info...) and coachlab's request settings
(structured-output mode, seeds); never a key, a credential in a URL, or a transport setting that
cannot change an answer (timeouts, retries, threads).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any, Literal, cast

from autogen_core.models import ChatCompletionClient
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from coachlab.envref import expand_env, is_secret_field, strip_credentials
from coachlab.llm.components import ModelEntry
from coachlab.llm.scripted import ScriptedChatCompletionClient
from coachlab.redact import known_secrets, redact

__all__ = ["ModelIdentity", "resolve_identity"]

_SCRIPTED_PROVIDERS = frozenset({"autogen_ext.models.replay.ReplayChatCompletionClient"})
_TRANSPORT = frozenset({"timeout", "max_retries", "n_threads", "verbose", "http_client"})
"""Config fields that change how a call travels, never what it answers."""


class ModelIdentity(BaseModel):
    """What a backend answers with: provider, model, expanded endpoint and every setting that matters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(description="The import path of the client class the entry names.")
    model: str = Field(description="The model at the endpoint (or the entry's name when the config names none).")
    base_url: str | None = Field(default=None, description="The endpoint, variables expanded, credentials removed.")
    settings: dict[str, JsonValue] = Field(
        default_factory=dict[str, JsonValue],
        description="Every other config value that can change an answer (sampling, context, model_info), with the "
        "provider's defaults filled; keys and transport settings left out.",
    )
    model_info: dict[str, JsonValue] | None = Field(
        default=None, description="The client's model info (agents shape their requests by it)."
    )
    structured_output: Literal["native", "json_object_schema", "prompt"] = "native"
    send_seed: bool = True
    client: str | None = Field(
        default=None, description="The class of a ready-made client used in place of the provider (tests, dry runs)."
    )
    name: str | None = Field(default=None, description="The entry's name, with a ready-made client (scripts differ).")
    scripted: bool = Field(default=False, description="The answers come from a script, not a model (--dry-run).")

    @property
    def label(self) -> str:
        """A short label for people: `Class:model@endpoint`."""
        short = self.provider.rsplit(".", 1)[-1]
        return f"{short}:{self.model}@{self.base_url}" if self.base_url else f"{short}:{self.model}"

    def key(self) -> str:
        """The identity as one canonical JSON string (what cache keys hold)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def _without_secrets(value: Any) -> Any:
    """`value` with every secret-looking field (`api_key`, `*_token`, `Authorization`...) removed, at any depth."""
    if isinstance(value, dict):
        items = cast("dict[Any, Any]", value).items()
        return {k: _without_secrets(v) for k, v in items if not is_secret_field(str(k))}
    if isinstance(value, list):
        return [_without_secrets(v) for v in cast("list[Any]", value)]
    return value


def _with_defaults(provider_path: str, config: dict[str, Any]) -> dict[str, Any]:
    """`config` as the provider's component config reads it, defaults filled (unchanged when it cannot tell)."""
    module_name, _, class_name = provider_path.rpartition(".")
    try:
        schema: object = getattr(importlib.import_module(module_name), class_name).component_config_schema
    except (ImportError, AttributeError, ValueError):
        return config
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return config
    try:
        return schema.model_validate(config).model_dump(mode="json", exclude_none=True)
    except (ValidationError, TypeError, ValueError):
        return config  # building the client reports the problem (a dry run never builds it)


def resolve_identity(
    entry: ModelEntry,
    *,
    name: str,
    where: str = "",
    model_info: Mapping[str, Any] | None = None,
    ready_client: ChatCompletionClient | None = None,
) -> ModelIdentity:
    """The identity of a model entry, as built from the entry or as served by a ready-made client.

    Keys are dropped before `${VAR}` references are expanded, so a dry run needs none of them; with
    a ready-made client a variable that is not set keeps its reference.

    Args:
        entry: The model entry.
        name: The entry's name under `models:`.
        where: Where the entry was written, for errors.
        model_info: The built client's model info.
        ready_client: The client used instead of building one from the entry (scripted tests, dry
            runs); its model info is taken from it.

    Raises:
        ConfigError: Building from the entry, a referenced variable is not set and has no default.
    """
    client = ready_client
    if client is not None:
        model_info = dict(client.model_info)
    config: dict[str, Any] = expand_env(
        _without_secrets(dict(entry.config)), where=f"{where}.config", strict=client is None
    )
    config = _without_secrets(_with_defaults(entry.provider_path, config))
    model = config.pop("model", None) or config.get("azure_deployment") or name
    base = config.pop("base_url", None) or config.pop("azure_endpoint", None)
    settings = {k: v for k, v in config.items() if k not in _TRANSPORT}
    text = json.dumps(settings, sort_keys=True)
    if known_secrets() and redact(text) != text:  # a secret expanded into a field whose name does not say so
        settings = json.loads(redact(text))
    scripted = isinstance(client, ScriptedChatCompletionClient) or (
        client is None and entry.provider_path in _SCRIPTED_PROVIDERS
    )
    return ModelIdentity(
        provider=entry.provider_path,
        model=str(model),
        base_url=strip_credentials(base) if isinstance(base, str) and base else None,
        settings=settings,
        model_info=cast("dict[str, JsonValue]", json.loads(json.dumps(dict(model_info)))) if model_info else None,
        structured_output=entry.structured_output,
        send_seed=entry.send_seed,
        client=f"{type(client).__module__}.{type(client).__qualname__}" if client is not None else None,
        name=name if client is not None else None,
        scripted=scripted,
    )
