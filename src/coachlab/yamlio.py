"""Reading YAML files the user writes, with errors that name the file, field and line.

`load_yaml` refuses what would hurt before building anything: missing files, directories and
devices, huge files, non-UTF-8 bytes, YAML that nests too deeply or whose aliases would expand
without bound, fields written twice, field names that YAML reads as numbers, and characters that
cannot be written back as UTF-8. It returns the data with a map from field paths to line numbers,
so that `validate_yaml` can turn a pydantic error into one readable `ConfigError`.
"""

from __future__ import annotations

import difflib
import re
import stat
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, Union, cast, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.constructor import ConstructorError

from coachlab.errors import ConfigError

if TYPE_CHECKING:
    from yaml import SafeLoader as _BaseLoader
else:  # libyaml parses about 20 times faster than pure Python; the checks below do not depend on it
    _BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = ["YamlDocument", "format_validation_error", "load_yaml", "validate_yaml"]

MAX_YAML_BYTES = 2_000_000
"""Largest file read (a config file is a few kB)."""
MAX_YAML_NODES = 200_000
"""Most values a document may hold once its aliases are expanded (a YAML bomb holds billions)."""
MAX_YAML_ALIASES = 100
"""Most aliases (*name) in one file."""
MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and lists (configs use fewer than 10 levels)."""

ModelT = TypeVar("ModelT", bound=BaseModel)
Loc = tuple[str | int, ...]

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_RESOLVER = yaml.resolver.Resolver()
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")
"""What YAML readers refuse (PyYAML's set; libyaml also refuses a byte-order mark inside the text)."""


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file: its data and the line (1-based) of each field path."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=lambda: {})

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of the deepest known field along `loc` (else of the document), if YAML recorded one."""
        parts = tuple(loc)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return self.lines.get(())


def _field_name(loc: Sequence[str | int]) -> str:
    """`a.b.0.c` for a field path; invisible characters in names are shown as escapes."""
    if not loc:
        return "(top level)"
    return ".".join(_visible(str(x)) for x in loc)


def _visible(name: str) -> str:
    if all(ch.isprintable() and unicodedata.category(ch) != "Cf" for ch in name):
        return name
    return ascii(name)[1:-1]


class _Loader(_BaseLoader):
    """The safe loader, with numbers and dates YAML cannot read reported as errors at their line."""


def _checked(tag: str) -> Callable[[Any, Any], Any]:
    original = cast("Callable[[Any, Any], Any]", _BaseLoader.yaml_constructors[f"tag:yaml.org,2002:{tag}"])

    def construct(loader: Any, node: Any) -> Any:
        try:
            return original(loader, node)
        except (ValueError, OverflowError) as exc:
            shown = str(node.value)
            why = f"{len(shown)} digits is too many" if "digits" in str(exc) else str(exc)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ConstructorError(None, None, f"cannot read {shown!r} as {tag} ({why})", node.start_mark) from None

    return construct


for _tag in ("int", "float", "timestamp"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _checked(_tag))  # pyright: ignore[reportUnknownMemberType]


def _events(text: str) -> Iterator[yaml.Event]:
    """The parse events of `text` (iterative: no recursion however deep the nesting)."""
    return cast("Iterator[yaml.Event]", yaml.parse(text, Loader=_BaseLoader))  # pyright: ignore[reportUnknownMemberType]


@dataclass
class _Frame:
    """One open mapping or list while `_Survey` walks the events of a document."""

    loc: Loc
    is_map: bool
    anchor: str | None
    size: int = 1
    index: int = 0
    key: str | None = None
    expecting_key: bool = True
    merge: bool = False
    seen: dict[str, int] = field(default_factory=lambda: {})


class _Survey:
    r"""Walks a document's parse events once, without building it.

    Records the line of every field path, and refuses (with file, line and field) what would hurt
    later: too deep, too many aliases or too many values after expanding them, two documents, a
    field written twice, a field name that is not text, a lone surrogate from a `\u` escape.
    Parsing is iterative (no recursion), so a file nested a million levels deep is refused cheaply.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[Loc, int] = {}
        self.frames: list[_Frame] = []
        self.anchors: dict[str, int] = {}
        self.aliases = 0
        self.total = 0
        self.documents = 0

    def current(self) -> Loc:
        """The field path the walk is in (for errors found mid-way)."""
        if not self.frames:
            return ()
        top = self.frames[-1]
        if top.is_map:
            return (*top.loc, top.key) if top.key is not None else top.loc
        return (*top.loc, max(top.index - 1, 0)) if top.index else top.loc

    def fail(self, line: int, loc: Loc, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}:{line}: {_field_name(loc)}: {problem}")

    def run(self, text: str) -> dict[Loc, int]:
        for event in _events(text):
            self.event(event)
        return self.lines

    def event(self, event: yaml.Event) -> None:
        line = event.start_mark.line + 1
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.fail(line, (), "a second YAML document (after ---); a file holds one document.")
            return
        if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            done = self.frames.pop()
            if done.anchor is not None:
                self.anchors[done.anchor] = done.size
            self.add(done.size, line, done.loc)
            return
        if not isinstance(event, yaml.NodeEvent):
            return
        top = self.frames[-1] if self.frames else None
        if top is not None and top.is_map and top.expecting_key:
            self.key(top, event, line)
            return
        if top is None:
            loc: Loc = ()
        elif top.is_map:
            loc = top.loc if top.merge else (*top.loc, cast(str, top.key))
            top.expecting_key, top.merge = True, False
        else:
            loc = (*top.loc, top.index)
            top.index += 1
        self.lines.setdefault(loc, line)
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if any(frame.anchor == event.anchor for frame in self.frames):
                raise self.fail(line, loc, f"*{event.anchor} is inside the value it names (a loop); remove it.")
            if self.aliases > MAX_YAML_ALIASES:
                raise self.fail(
                    line, loc, f"more than {MAX_YAML_ALIASES} YAML aliases (*name); refusing a file that may expand."
                )
            self.add(self.anchors.get(str(event.anchor), 1), line, loc)
        elif isinstance(event, yaml.ScalarEvent):
            self.check_text(event.value, line, loc)
            if event.anchor is not None:
                self.anchors[event.anchor] = 1
            self.add(1, line, loc)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            if len(self.frames) >= MAX_YAML_DEPTH:
                raise self.fail(line, loc, f"nested more than {MAX_YAML_DEPTH} levels deep; refusing it.")
            self.frames.append(_Frame(loc=loc, is_map=isinstance(event, yaml.MappingStartEvent), anchor=event.anchor))

    def key(self, top: _Frame, event: yaml.NodeEvent, line: int) -> None:
        if not isinstance(event, yaml.ScalarEvent):
            what = "an alias (*name)" if isinstance(event, yaml.AliasEvent) else "a list or mapping"
            raise self.fail(line, top.loc, f"a field name must be plain text, not {what}. Check the indentation.")
        tag = event.tag if event.tag not in (None, "!") else None
        if tag is None:
            implicit = cast("tuple[bool, bool]", event.implicit)
            resolve = cast("Callable[[type[yaml.Node], str, tuple[bool, bool]], str]", _RESOLVER.resolve)  # pyright: ignore[reportUnknownMemberType]
            tag = resolve(yaml.ScalarNode, event.value, implicit) if implicit[0] else _STR_TAG
        name = event.value
        self.check_text(name, line, (*top.loc, name))
        if tag == _MERGE_TAG:
            top.key, top.expecting_key, top.merge = name, False, True
            self.lines.setdefault((*top.loc, name), line)
            return
        if tag != _STR_TAG:
            kind = tag.rsplit(":", 1)[-1]
            raise self.fail(
                line,
                (*top.loc, name),
                f"YAML reads this field name as {kind}, not text; put it in quotes: '{name}': ...",
            )
        if name in top.seen:
            raise self.fail(
                line, (*top.loc, name), f"written twice (first on line {top.seen[name]}); keep one of them."
            )
        top.seen[name] = line
        top.key, top.expecting_key = name, False
        self.lines.setdefault((*top.loc, name), line)
        self.add(1, line, top.loc)

    def check_text(self, value: str, line: int, loc: Loc) -> None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = value[exc.start]
            raise self.fail(
                line, loc, f"holds {bad!a}, half of a surrogate pair, which no file can store; remove it."
            ) from None

    def add(self, size: int, line: int, loc: Loc) -> None:
        if self.frames:
            self.frames[-1].size += size
            grown = self.frames[-1].size
        else:
            self.total += size
            grown = self.total
        if grown > MAX_YAML_NODES:
            if not self.aliases:
                raise self.fail(line, loc, f"more than {MAX_YAML_NODES:,} values in one file; refusing it.")
            raise self.fail(
                line,
                loc,
                f"YAML aliases (*name) here expand to more than {MAX_YAML_NODES:,} values; "
                "refusing a file that may expand without bound.",
            )


def _a(what: str) -> str:
    return f"an {what}" if what[:1] in "aeiou" else f"a {what}"


def _read(p: Path, what: str) -> bytes:
    """The file's bytes, refusing what is not a regular file of a sane size (never reading more)."""
    try:
        info = p.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(
            f"{p}: {what} not found. Check the path (relative paths start at the current folder)."
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{p}: cannot open the {what}: {getattr(exc, 'strerror', None) or exc}.") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{p}: is a directory; expected {_a(what)} (a .yaml file).")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{p}: not a regular file (a device, pipe or socket); expected {_a(what)}.")
    if info.st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{p}: {info.st_size:,} bytes is too large for {_a(what)} (limit {MAX_YAML_BYTES:,}).")
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the {what}: {exc.strerror or exc}.") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{p}: more than {MAX_YAML_BYTES:,} bytes is too large for {_a(what)}.")
    return raw


def _syntax_error(p: Path, text: str, exc: yaml.YAMLError, where: Callable[[int, int], Loc]) -> ConfigError:
    """One line for a YAML syntax error: file, line, column, the field it is in, what is wrong."""
    if isinstance(exc, yaml.reader.ReaderError):
        found = _NON_PRINTABLE.search(text)
        index = found.start() if found is not None else min(exc.position, len(text))
        line = text.count("\n", 0, index)
        column = index - (text.rfind("\n", 0, index) + 1)
        bad = ascii(text[index]) if found is not None else "a character"
        return ConfigError(
            f"{p}: line {line + 1}, column {column + 1}: {_field_name(where(line, column))}: "
            f"{bad} is not allowed in YAML (a control character); delete it."
        )
    mark = exc.problem_mark if isinstance(exc, yaml.MarkedYAMLError) else None
    problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else str(exc).splitlines()[0]
    if mark is None:
        return ConfigError(f"{p}: not valid YAML: {problem}.")
    loc = where(mark.line, mark.column)
    return ConfigError(
        f"{p}: line {mark.line + 1}, column {mark.column + 1}: {_field_name(loc)}: not valid YAML: {problem}. "
        "Check indentation and quoting."
    )


def _path_at(p: Path, text: str, line: int, column: int) -> Loc:
    """The field path the parser is in at (0-based) `line` and `column` (for syntax errors)."""
    survey = _Survey(p)
    try:
        for event in _events(_NON_PRINTABLE.sub(" ", text)):
            if (event.start_mark.line, event.start_mark.column) >= (line, column):
                break
            survey.event(event)
    except (yaml.YAMLError, ConfigError):
        pass
    return survey.current()


def _field_on_line(lines: Mapping[Loc, int], line: int) -> Loc:
    """The deepest field written on `line`, else the last one before it."""
    best: Loc = ()
    best_line = 0
    for loc, at in lines.items():
        if (at, len(loc)) > (best_line, len(best)) and at <= line:
            best, best_line = loc, at
    return best


def load_yaml(path: str | Path, *, what: str = "file") -> YamlDocument:
    """Read one YAML file safely.

    Args:
        path: The file to read.
        what: What the file should be, for error messages ("persona file", ...).

    Returns:
        The parsed document with its line map.

    Raises:
        ConfigError: The file is missing, a directory or device, empty, too large, not UTF-8, not
            valid YAML, nested too deeply, full of aliases that would expand without bound, or
            writes a field twice. The message names the file, the line and the field.
    """
    p = Path(path)
    raw = _read(p, what)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{p}: line {line}: not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x}); save the {what} as UTF-8."
        ) from None
    if not text.strip():
        raise ConfigError(f"{p}: the {what} is empty.")
    survey = _Survey(p)
    try:
        lines = survey.run(text)
    except yaml.YAMLError as exc:
        raise _syntax_error(p, text, exc, lambda line, column: _path_at(p, text, line, column)) from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:  # the survey parsed it: a value YAML cannot build (tag, alias, number)
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = str(exc.problem or exc.context or "not valid YAML").rstrip(".")
        raise ConfigError(f"{p}:{line}: {_field_name(_field_on_line(lines, line))}: {problem}.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:  # pragma: no cover - the survey refuses deep nesting first
        raise ConfigError(f"{p}: nested too deeply; refusing it.") from None
    if data is None:
        raise ConfigError(f"{p}: the {what} has no content.")
    return YamlDocument(path=p, data=data, lines=lines)


def _allowed_fields(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names valid at `loc` inside `model`, for did-you-mean hints."""
    current: Any = model
    for part in loc[:-1]:
        current = _step(current, part)
        if current is None:
            return []
    found = _direct_model(current)
    return sorted(found.model_fields) if found is not None else []


def _arms(annotation: Any) -> list[Any]:
    """The members of a union (or the annotation itself), with `Annotated` unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _arms(get_args(annotation)[0])
    if origin is Union or origin is UnionType:
        return [arm for member in get_args(annotation) for arm in _arms(member)]
    return [annotation]


def _direct_model(annotation: Any) -> type[BaseModel] | None:
    for arm in _arms(annotation):
        if isinstance(arm, type) and issubclass(arm, BaseModel):
            return arm
    return None


def _step(annotation: Any, part: str | int) -> Any:
    """The annotation one step down: a model's field, or the items of a list or dict (None if unknown)."""
    found = _direct_model(annotation)
    if found is not None and isinstance(part, str):
        info = found.model_fields.get(part)
        return info.annotation if info is not None else None
    for arm in _arms(annotation):
        origin = get_origin(arm)
        if isinstance(origin, type) and issubclass(origin, Sequence | Mapping) and not issubclass(origin, str):
            args = get_args(arm)
            return args[-1] if args else None
    return None


def _model_names(model: type[BaseModel]) -> set[str]:
    """Class names of every model reachable from `model` (pydantic puts them in union error paths)."""
    names: set[str] = set()
    todo: list[Any] = [model]
    while todo:
        annotation = todo.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ in names:
                continue
            names.add(annotation.__name__)
            todo.extend(f.annotation for f in annotation.model_fields.values())
        else:
            todo.extend(cast("tuple[Any, ...]", getattr(cast(object, annotation), "__args__", ()) or ()))
    return names


def _union_cleaned(error: ValidationError, model: type[BaseModel]) -> list[tuple[Loc, ErrorDetails]]:
    """The errors with pydantic's union-branch labels taken out of their paths.

    A value that fits no branch of `id | Persona` gets one error per branch; when it is clearly
    meant as one branch (it has errors inside it), the bare type error of the other is dropped.
    """
    labels = _model_names(model)
    out: list[tuple[Loc, ErrorDetails]] = []
    for item in error.errors():
        loc: Loc = tuple(
            x
            for x in item["loc"]
            if not (isinstance(x, str) and (x in labels or x == "constrained-str" or x.startswith("function-")))
        )
        out.append((loc, item))

    def other_branch_fits(loc: Loc, item: ErrorDetails) -> bool:
        """A bare type error, where another branch took the value's type (it has its own errors)."""
        return item["type"].endswith("_type") and any(
            (len(o) > len(loc) and o[: len(loc)] == loc) or (o == loc and not other["type"].endswith("_type"))
            for o, other in out
        )

    kept: list[tuple[Loc, ErrorDetails]] = []
    for loc, item in out:
        if other_branch_fits(loc, item):
            continue
        same = next((i for i, (o, other) in enumerate(kept) if o == loc and other["type"].endswith("_type")), None)
        if same is not None and item["type"].endswith("_type"):  # no branch takes this type: one line for all
            first = kept[same][1]
            alternative = item["msg"].removeprefix("Input should be ")
            kept[same] = (loc, cast(ErrorDetails, {**first, "msg": f"{first['msg']}, or {alternative}"}))
            continue
        kept.append((loc, item))
    return kept


_LEADING_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)(?::\s*|\s+)")


def _named_field(msg: str, doc: YamlDocument | None, prefix: Loc) -> tuple[Loc, str] | None:
    """A whole-object check that starts by naming a field ("models: needs ...") points at that field."""
    match = _LEADING_FIELD.match(msg)
    if match is None or doc is None:
        return None
    loc: Loc = (*prefix, *match.group(1).split("."))
    if loc not in doc.lines:
        return None
    rest = msg[match.end() :] if msg[match.end(1)] == ":" else msg
    return loc, rest


def format_validation_error(
    error: ValidationError, *, doc: YamlDocument | None, model: type[BaseModel], prefix: Loc = ()
) -> str:
    """Turn a pydantic error into lines of `file:line: field: problem. hint`."""
    where = str(doc.path) if doc is not None else model.__name__
    out: list[str] = []
    items = _union_cleaned(error, model)
    for loc, item in items[:8]:
        full = (*prefix, *loc)
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_fields(model, loc)
            guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1) if loc else []
            hint = f" Did you mean '{guess[0]}'?" if guess else ""
            if loc and _visible(str(loc[-1])) != str(loc[-1]):
                hint = " The name holds invisible characters (shown as escapes)." + hint
            msg = f"unknown field.{hint} Allowed here: {', '.join(allowed)}." if allowed else f"unknown field.{hint}"
        elif kind == "missing":
            msg = "required field is missing; add it."
        elif kind == "value_error" and not loc:
            msg = str(item["msg"]).removeprefix("Value error, ")
            named = _named_field(msg, doc, prefix)
            if named is not None:
                full, msg = named
            msg = msg.rstrip(".") + "."
        else:
            got = item.get("input")
            shown = repr(got)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            msg = f"{item['msg']} (got {shown})."
        line = doc.line_of(full) if doc is not None else None
        at = f"{where}:{line}" if line is not None else where
        out.append(f"{at}: {_field_name(full)}: {msg}")
    extra = len(items) - 8
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
            f"{where}: {_field_name(prefix)}: expected a mapping of fields ({model.__name__}), "
            f"got {type(payload).__name__}."  # pyright: ignore[reportUnknownArgumentType]
        )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, doc=doc, model=model, prefix=prefix)) from None
    except RecursionError:  # pragma: no cover - load_yaml refuses deep nesting first
        raise ConfigError(f"{doc.path}: {_field_name(prefix)}: nested too deeply.") from None
