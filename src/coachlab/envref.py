"""`${NAME}` references in config files: expanding them, and refusing secrets written in place of one.

A model entry's `config` (and `retrieval.endpoint.base_url`) may reference environment variables
as `${NAME}` or `${NAME:-default}`. They are expanded only when a client is built, so files and
everything coachlab writes keep the reference. A key must always come in that way: a secret-looking
field (`api_key`, `azure_ad_token`, an `Authorization` header...) that holds literal text is refused
when the file is loaded (`literal_secrets`). Nothing here imports a model SDK.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from coachlab.errors import ConfigError

__all__ = [
    "ENV_REF",
    "expand_env",
    "is_secret_field",
    "literal_secrets",
    "strip_credentials",
]

Loc = tuple[str | int, ...]
"""A path inside nested dicts and lists."""

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
"""`${NAME}` or `${NAME:-default}`."""

_SECRET_FIELD = re.compile(r"(?i)key|secret|token|passw|credential|authorization|cookie")
_COUNT_FIELD = re.compile(r"(?i)tokens$")  # max_tokens, max_completion_tokens: sizes, not secrets
_AUTH_SCHEME = re.compile(r"(?i)^\s*(bearer|basic|token)\s+")
_KEY_LIKE = re.compile(r"^(sk|pk|rk|hf|gsk|xai|key|api)[-_]|^[A-Za-z0-9_\-]{24,}$")
"""A `${NAME:-default}` default that looks like a real key rather than a placeholder such as `not-needed`."""


def is_secret_field(name: str) -> bool:
    """True for a config field whose value is a credential (`api_key`, `*_token`, `Authorization`...)."""
    return bool(_SECRET_FIELD.search(name)) and not _COUNT_FIELD.search(name)


def expand_env(value: Any, *, where: str, strict: bool = True) -> Any:
    """Replace `${NAME}` / `${NAME:-default}` in every string inside `value`.

    Args:
        value: A string, or dicts and lists of them (other values are returned as they are).
        where: Where `value` was written ("experiments/x.yaml: models.student.config"), for errors.
        strict: Raise on a variable that is not set and has no default; else keep its reference.

    Raises:
        ConfigError: With `strict`, a referenced variable is not set and has no default.
    """
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is not None:
                return found
            if default is not None:
                return default
            if not strict:
                return match.group(0)
            raise ConfigError(
                f"{where}: environment variable {name} is not set. Export it (export {name}=...) "
                f"or write ${{{name}:-default}}."
            )

        return ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        items = cast("dict[Any, Any]", value).items()
        return {k: expand_env(v, where=f"{where}.{k}", strict=strict) for k, v in items}
    if isinstance(value, list):
        return [expand_env(v, where=f"{where}[{i}]", strict=strict) for i, v in enumerate(cast("list[Any]", value))]
    return value


def _strings(value: object, path: Loc, field: str) -> Iterator[tuple[Loc, str, str]]:
    """Every string inside `value` with its path and the name of the field that holds it."""
    if isinstance(value, str):
        yield path, field, value
    elif isinstance(value, Mapping):
        for key, item in cast("Mapping[object, object]", value).items():
            yield from _strings(item, (*path, str(key)), str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(cast("list[object]", value)):
            yield from _strings(item, (*path, i), field)


def literal_secrets(config: object) -> list[tuple[Loc, str]]:
    """The secret-looking fields of a model config that hold a key written out instead of `${NAME}`.

    A field counts when its name looks secret (`is_secret_field`) and, once its `${NAME}` references
    and an auth scheme word (`Bearer `) are taken out, text is left; or when the default of a
    reference looks like a real key (`${KEY:-sk-...}`). A placeholder default such as
    `${SERVER_KEY:-not-needed}` is fine.

    Returns:
        (path inside `config`, the literal value) for each such field, in document order.
    """
    found: list[tuple[Loc, str]] = []
    for path, field, text in _strings(config, (), ""):
        if not is_secret_field(field):
            continue
        rest = _AUTH_SCHEME.sub("", ENV_REF.sub("", text)).strip()
        defaults = [m.group(2) for m in ENV_REF.finditer(text) if m.group(2)]
        if rest or any(_KEY_LIKE.search(d) for d in defaults):
            found.append((path, text))
    return found


def strip_credentials(url: str) -> str:
    """`url` without a user name, password, or secret-looking query parameter (`?api-key=...`)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not is_secret_field(k)])
    return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))
