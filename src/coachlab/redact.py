"""Keeping API keys out of log lines, error messages and everything coachlab writes.

Keys reach coachlab only through environment variables that model entries reference
(`api_key: "${OPENAI_API_KEY}"`); files keep the reference, never the value. A key can still come
back in text coachlab did not write: a server that rejects it echoes it in its error body, an SDK
logs a request. So every such text passes through `redact` before it is logged or stored:

- `build_chat_client` registers the values it expands into secret-looking fields (`api_key`,
  `*token*`, `Authorization` headers...) or from secret-looking variables (`register_secret`);
- values of secret-looking environment variables (`*_API_KEY`, `*_TOKEN`, `*SECRET*`...) count too,
  since SDKs read some of them on their own;
- `redact` masks each value and every fragment of it 8 characters or longer, so a server echoing
  `sk-...last8chars` does not leak the key's tail either;
- `RedactingFilter` does the same to log records (message, arguments, traceback); the CLI installs
  it on its log handlers with `install_log_filter`.

The registry is process-wide on purpose, like logging itself: a secret registered by one run must be
masked in every log line of the process.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import traceback
from collections.abc import Iterable, Mapping
from typing import cast

__all__ = [
    "MASK",
    "RedactingFilter",
    "install_log_filter",
    "known_secrets",
    "redact",
    "referenced_secrets",
    "register_secret",
]

MASK = "***"
"""What a secret (or a fragment of one) is replaced with."""
MIN_SECRET_LENGTH = 8
"""Shorter values are not treated as secrets (masking "1" or "yes" everywhere would help nobody)."""
FRAGMENT = 8
"""Fragments of a secret this long or longer are masked too."""

_SECRET_FIELD = re.compile(r"(?i)key|secret|token|passw|credential|authorization|cookie")
_SECRET_VARIABLE = re.compile(r"(?i)(^|_)(api_?key|key|secret|token|password|passwd|credentials?)(_|$)")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")

_lock = threading.Lock()
_registered: set[str] = set()


def register_secret(value: str) -> None:
    """Mask `value` in everything `redact` cleans from now on (values under 8 characters are ignored)."""
    if len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _registered.add(value)


def referenced_secrets(config: object, environ: Mapping[str, str] | None = None, *, field: str = "") -> set[str]:
    """The values of environment variables that a model config passes into secret-looking fields.

    A reference counts when the field's name looks secret (`api_key`, `azure_ad_token`, an
    `Authorization` header...) or the variable's does (`OPENAI_API_KEY`, `HF_TOKEN`...).

    Args:
        config: A model entry's `config` (nested dicts, lists and strings with `${NAME}`).
        environ: Where variables are read (default: the process environment).
        field: The name of the field holding `config` (for recursion).
    """
    env = os.environ if environ is None else environ
    found: set[str] = set()
    if isinstance(config, str):
        for match in _ENV_REF.finditer(config):
            name = match.group(1)
            value = env.get(name)
            secret_looking = _SECRET_FIELD.search(field) or _SECRET_VARIABLE.search(name)
            if value is not None and secret_looking and len(value) >= MIN_SECRET_LENGTH:
                found.add(value)
    elif isinstance(config, Mapping):
        for key, value in cast("Mapping[object, object]", config).items():
            found |= referenced_secrets(value, env, field=str(key))
    elif isinstance(config, list | tuple):
        for value in cast("Iterable[object]", config):
            found |= referenced_secrets(value, env, field=field)
    return found


def known_secrets() -> frozenset[str]:
    """Registered secrets plus the values of secret-looking environment variables."""
    from_env = {
        value for name, value in os.environ.items() if _SECRET_VARIABLE.search(name) and len(value) >= MIN_SECRET_LENGTH
    }
    with _lock:
        return frozenset(_registered | from_env)


@functools.lru_cache(maxsize=32)
def _pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    whole = sorted(secrets, key=len, reverse=True)
    parts = {s[i : i + FRAGMENT] for s in whole for i in range(len(s) - FRAGMENT + 1)}
    alternatives = [re.escape(s) for s in whole] + [re.escape(p) for p in sorted(parts)]
    return re.compile("|".join(alternatives)) if alternatives else None


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every secret, and every fragment of one 8 characters or longer, replaced by `***`.

    Args:
        text: Any text (an error message, a log line, a response body).
        secrets: The values to mask (default: `known_secrets()`).
    """
    chosen = known_secrets() if secrets is None else frozenset(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)
    pattern = _pattern(chosen) if chosen else None
    if pattern is None:
        return text
    spans: list[list[int]] = []
    for match in pattern.finditer(text):
        start, end = match.span()
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for start, end in spans:
        out += [text[last:start], MASK]
        last = end
    out.append(text[last:])
    return "".join(out)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in a record's message, arguments and traceback.

    Attach it to handlers (`install_log_filter`): a filter on a logger does not see the records
    its child loggers propagate.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record in place; never drops it."""
        secrets = known_secrets()
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it as usual
            return True
        clean = redact(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info is not None and record.exc_info[1] is not None:
            text = record.exc_text or "".join(traceback.format_exception(record.exc_info[1])).rstrip("\n")
            record.exc_text = redact(text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> RedactingFilter:
    """Attach one `RedactingFilter` to every handler of `logger` (default: the root logger) and to it.

    Call it after logging is configured (handlers added later are not covered).

    Returns:
        The filter (already installed where it was missing).
    """
    target = logger if logger is not None else logging.getLogger()
    existing = next((f for f in target.filters if isinstance(f, RedactingFilter)), None)
    installed = existing or RedactingFilter()
    if existing is None:
        target.addFilter(installed)
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(installed)
    return installed
