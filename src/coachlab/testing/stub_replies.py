"""What `OpenAIStub` answers: reply functions and the JSON-schema helpers behind the default reply.

A reply function (`ReplyFn`) turns one chat-completions request (its parsed JSON body) into the
assistant's text. `default_reply` answers a short fixed line, or, when the request asks for JSON
(`response_format`), the smallest object that fits the schema sent with it, so a judge or a
teacher gets a parseable answer. `replies_by_model` answers each role by the model name its
entry uses.

Example::

    reply = replies_by_model({"customer": "My parcel is late.", "agent": "Refunded, reference R-1."})
    with OpenAIStub(reply=reply) as stub:
        ...
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, cast

__all__ = [
    "DEFAULT_REPLY",
    "ReplyFn",
    "default_reply",
    "json_array",
    "json_object",
    "replies_by_model",
    "request_text",
    "response_schema",
    "schema_example",
]

ReplyFn = Callable[[dict[str, Any]], str]
"""Returns the assistant's reply text for one chat-completions request (its parsed JSON body)."""

DEFAULT_REPLY = "Thanks, noted."
"""What `default_reply` says when no JSON is asked for."""


def json_object(value: Any) -> dict[str, Any] | None:
    """`value` as a JSON object, or None."""
    return cast(dict[str, Any], value) if isinstance(value, dict) else None


def json_array(value: Any) -> list[Any]:
    """`value` as a JSON array ([] when it is not one)."""
    return cast(list[Any], value) if isinstance(value, list) else []


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = (json_object(part) for part in json_array(content))
    return " ".join(part["text"] for part in parts if part is not None and isinstance(part.get("text"), str))


def request_text(request: Mapping[str, Any], *, role: str | None = None) -> str:
    """The text of a request's messages (only those of `role` when given), one per line."""
    messages = (json_object(m) for m in json_array(request.get("messages")))
    return "\n".join(
        _content_text(m.get("content")) for m in messages if m is not None and (role is None or m.get("role") == role)
    )


def response_schema(request: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request asks its answer to follow, if any.

    Reads OpenAI's `{"type": "json_schema", "json_schema": {"schema": ...}}` (what the openai SDK
    sends for a pydantic `response_format`, i.e. AutoGen's `json_output=<class>`) and llama.cpp
    server's `{"type": "json_object", "schema": ...}`. Plain `json_object` gives `{}`.
    """
    fmt = json_object(request.get("response_format"))
    if fmt is None:
        return None
    if fmt.get("type") == "json_schema":
        spec = json_object(fmt.get("json_schema")) or {}
        return json_object(spec.get("schema")) or {}
    if fmt.get("type") == "json_object":
        return json_object(fmt.get("schema")) or {}
    return None


def schema_example(schema: Mapping[str, Any], *, root: Mapping[str, Any] | None = None) -> Any:
    """The smallest value that fits a JSON schema (first enum value, null when allowed, "stub"...).

    Handles what pydantic emits: `$ref` into `$defs`, `anyOf`/`oneOf`, `enum`, `const`, objects
    (every property filled), arrays (empty unless `minItems`) and the scalar types.
    """
    root = root if root is not None else schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Mapping[str, Any] | None = root
        for part in ref[2:].split("/"):
            target = json_object(target.get(part)) if target is not None else None
        return schema_example(target or {}, root=root)
    if "const" in schema:
        return schema["const"]
    enum = json_array(schema.get("enum"))
    if enum:
        return enum[0]
    if "default" in schema:
        return schema["default"]
    branches = [b for b in map(json_object, json_array(schema.get("anyOf") or schema.get("oneOf"))) if b is not None]
    if branches:
        if any(b.get("type") == "null" for b in branches):
            return None
        return schema_example(branches[0], root=root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = json_array(kind)
        if "null" in kinds:
            return None
        kind = kinds[0] if kinds else "object"
    if kind == "object" or (kind is None and "properties" in schema):
        props = json_object(schema.get("properties")) or {}
        return {name: schema_example(json_object(sub) or {}, root=root) for name, sub in props.items()}
    if kind == "array":
        items = json_object(schema.get("items")) or {}
        return [schema_example(items, root=root) for _ in range(int(schema.get("minItems", 0)))]
    if kind == "string":
        return "stub"
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    return None


def default_reply(request: dict[str, Any]) -> str:
    """`DEFAULT_REPLY`, or, when the request asks for JSON, the smallest object fitting its schema."""
    schema = response_schema(request)
    if schema is None:
        return DEFAULT_REPLY
    return json.dumps(schema_example(schema) if schema else {})


def replies_by_model(replies: Mapping[str, str | ReplyFn], *, default: ReplyFn = default_reply) -> ReplyFn:
    """Answer by the request's `model`: give each role's model entry its own model name.

    Example::

        reply = replies_by_model(
            {"customer": "My parcel is late.", "agent": "Refunded.", "judge": lambda request: verdict_json}
        )
    """
    table = dict(replies)

    def reply(request: dict[str, Any]) -> str:
        answer = table.get(str(request.get("model")))
        if answer is None:
            return default(request)
        return answer if isinstance(answer, str) else answer(request)

    return reply
