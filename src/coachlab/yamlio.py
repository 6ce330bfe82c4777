"""Reading YAML files the user writes, with errors that name the file, field and line.

`load_yaml` refuses what would hurt (directories, non-UTF-8 bytes, huge files, alias bombs)
and returns the data with a map from field paths to line numbers, so that
`validate_yaml` can turn a pydantic error into one readable `ConfigError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from pydantic import BaseModel, ValidationError

from coachlab.errors import ConfigError

__all__ = ["YamlDocument", "format_validation_error", "load_yaml", "validate_yaml"]

MAX_YAML_BYTES = 2_000_000
MAX_YAML_NODES = 200_000
MAX_YAML_ALIASES = 100

ModelT = TypeVar("ModelT", bound=BaseModel)
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: its data and the line (1-based) of each field path."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=lambda: {})

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of the deepest known field along `loc`, if YAML recorded one."""
        parts = tuple(loc)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return None


class _CountingLoader(yaml.SafeLoader):
    """A safe loader that refuses alias bombs (many aliases) before constructing anything."""


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], count: list[int]) -> None:
    count[0] += 1
    if count[0] > MAX_YAML_NODES:
        raise _TooBig
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:  # pyright: ignore[reportUnknownVariableType]
            key = getattr(key_node, "value", None)  # pyright: ignore[reportUnknownArgumentType]
            if isinstance(key, str):
                _walk(value_node, (*loc, key), lines, count)  # pyright: ignore[reportUnknownArgumentType]
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
            _walk(item, (*loc, index), lines, count)  # pyright: ignore[reportUnknownArgumentType]


class _TooBig(Exception):
    pass


def load_yaml(path: str | Path, *, what: str = "file") -> YamlDocument:
    """Read one YAML file safely.

    Args:
        path: The file to read.
        what: What the file should be, for error messages ("persona file", ...).

    Returns:
        The parsed document with its line map.

    Raises:
        ConfigError: The file is missing, a directory, empty, too large, not UTF-8, not valid
            YAML, or uses so many aliases that it would expand without bound.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: {what} not found. Check the path (relative paths start at the current folder).")
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory; expected a {what} (a .yaml file).")
    size = p.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{p}: {size:,} bytes is too large for a {what} (limit {MAX_YAML_BYTES:,}).")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x}); save the {what} as UTF-8."
        ) from None
    if not text.strip():
        raise ConfigError(f"{p}: the {what} is empty.")
    if text.count("*") > MAX_YAML_ALIASES and text.count("&") > 0:
        tokens = cast("Iterable[object]", yaml.scan(text, Loader=yaml.SafeLoader))  # pyright: ignore[reportUnknownMemberType]
        aliases = sum(1 for token in tokens if isinstance(token, yaml.AliasToken))
        if aliases > MAX_YAML_ALIASES:
            raise ConfigError(f"{p}: {aliases} YAML aliases (*name); refusing a file that may expand without bound.")
    try:
        node = cast("yaml.Node | None", yaml.compose(text, Loader=_CountingLoader))  # pyright: ignore[reportUnknownMemberType]
        lines: dict[Loc, int] = {}
        if node is not None:
            _walk(node, (), lines, [0])
        data = yaml.load(text, Loader=_CountingLoader)
    except _TooBig:
        raise ConfigError(f"{p}: more than {MAX_YAML_NODES:,} YAML nodes; refusing it.") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{where}: not valid YAML: {exc.problem}. Check indentation and quoting.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if data is None:
        raise ConfigError(f"{p}: the {what} has no content.")
    return YamlDocument(path=p, data=data, lines=lines)


def _allowed_fields(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names valid at `loc` inside `model`, for did-you-mean hints."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields: Mapping[str, Any] | None = getattr(current, "model_fields", None)  # pyright: ignore[reportUnknownArgumentType]
        if fields is None or part not in fields:
            return []
        annotation = fields[part].annotation
        current = _first_model_in(annotation)
        if current is None:
            return []
    names: Mapping[str, Any] | None = getattr(current, "model_fields", None)
    return sorted(names) if names else []


def _first_model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = cast("tuple[Any, ...]", getattr(cast(object, annotation), "__args__", ()) or ())
    for arg in args:
        found = _first_model_in(arg)
        if found is not None:
            return found
    return None


def format_validation_error(
    error: ValidationError, *, doc: YamlDocument | None, model: type[BaseModel], prefix: Loc = ()
) -> str:
    """Turn a pydantic error into lines of `file:line: field: problem. hint`."""
    where = str(doc.path) if doc is not None else model.__name__
    out: list[str] = []
    for item in error.errors()[:8]:
        loc: Loc = tuple(x for x in item["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        full = (*prefix, *loc)
        line = doc.line_of(full) if doc is not None else None
        field_name = ".".join(str(x) for x in full) or "(top level)"
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_fields(model, loc)
            guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1) if loc else []
            hint = f" Did you mean '{guess[0]}'?" if guess else ""
            msg = f"unknown field.{hint} Allowed here: {', '.join(allowed)}." if allowed else "unknown field."
        elif kind == "missing":
            msg = "required field is missing; add it."
        else:
            got = item.get("input")
            shown = repr(got)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            msg = f"{item['msg']} (got {shown})."
        at = f"{where}:{line}" if line is not None else where
        out.append(f"{at}: {field_name}: {msg}")
    extra = len(error.errors()) - 8
    if extra > 0:
        out.append(f"... and {extra} more problems.")
    return "\n".join(out)


def validate_yaml(model: type[ModelT], doc: YamlDocument, *, data: Any = None, prefix: Loc = ()) -> ModelT:
    """Validate `doc.data` (or `data`, found at `prefix` inside the document) as `model`.

    Raises:
        ConfigError: With every problem as `file:line: field: what is wrong`.
    """
    payload = doc.data if data is None else data
    if not isinstance(payload, Mapping):
        at = doc.line_of(prefix)
        where = f"{doc.path}:{at}" if at is not None else str(doc.path)
        raise ConfigError(
            f"{where}: expected a mapping of fields ({model.__name__}), got {type(payload).__name__}."  # pyright: ignore[reportUnknownArgumentType]
        )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, doc=doc, model=model, prefix=prefix)) from None
