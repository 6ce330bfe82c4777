"""Bad input: every malformed persona, scenario or experiment file gives one `ConfigError` naming file and field.

The property tests mutate the shipped YAML files (personas/, scenarios/, experiments/) into 380
generated malformed inputs (`max_examples`: 120 persona files, 120 scenario files, 100 experiments,
40 more experiments through `coachlab simulate`). Each test asserts how many *distinct* files it
really tried (at least 100 + 100 + 80 + 30 = 310) and that every kind of malformation came up, so
the 200 the issue asks for are guaranteed, not hoped for. The kinds: wrong types per field, missing
required fields, unknown fields with typos (checked for "Did you mean"), out-of-range numbers,
wrong nesting, lists for maps and maps for lists, references to personas / scenarios / models /
files that do not exist, fields written twice, invalid YAML syntax, odd unicode and control
characters. The schema walk reads the pydantic models, so a field added tomorrow is mutated too.
Hypothesis runs derandomized with no example database: the same inputs on every machine.

Explicit tests cover the files a generator cannot write well: empty, a directory, a device, a FIFO,
non-UTF-8, YAML bombs, a sparse 10 GiB file, a million-deep nesting, missing paths; and the CLI
(`coachlab validate`, `coachlab simulate`) on bad files: non-zero exit, one line, no traceback.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import signal
import sys
import time
import tracemalloc
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from coachlab.cli import app, main
from coachlab.errors import ConfigError
from coachlab.experiments.config import ExperimentConfig, load_experiment, load_personas, load_scenarios
from coachlab.schema import Persona, ScenarioSpec
from coachlab.yamlio import load_yaml

ROOT = Path(__file__).resolve().parents[1]
PERSONA_SEEDS = sorted((ROOT / "personas").glob("*.yaml"))
SCENARIO_SEEDS = sorted((ROOT / "scenarios").glob("*.yaml"))
EXPERIMENT_SEEDS = sorted((ROOT / "experiments").glob("*.yaml"))

Path_ = tuple[str | int, ...]


class ScenarioFile(BaseModel):
    """The shape of a scenario file, for the schema walk only (config.py reads it by hand)."""

    scenarios: list[ScenarioSpec]


# ----------------------------------------------------------------------------------------------
# A tiny YAML writer that knows the line of every field, so mutations can target lines.


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {float("inf"): ".inf", float("-inf"): "-.inf"}.get(value, repr(value))
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return json.dumps(value, ensure_ascii=False)


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name) else json.dumps(name, ensure_ascii=False)


@dataclass
class Line:
    text: str
    path: Path_ | None = None
    """The field this line writes (None for list items of scalars)."""
    key_column: int = 0
    scalar: bool = False
    """True when the field's value is on this line."""


def emit(value: Any, indent: int = 0, path: Path_ = ()) -> list[Line]:
    """Block-style YAML for `value` (a non-empty dict or list), one `Line` per text line."""
    pad = " " * indent
    out: list[Line] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                out.append(Line(f"{pad}{_key(k)}:", (*path, k), indent))
                out += emit(v, indent + 2, (*path, k))
            else:
                out.append(Line(f"{pad}{_key(k)}: {_scalar(v)}", (*path, k), indent, scalar=True))
    else:
        for i, item in enumerate(value):
            if isinstance(item, dict | list) and item:
                sub = emit(item, indent + 2, (*path, i))
                first = sub[0]
                out.append(Line(f"{pad}- {first.text.lstrip()}", first.path, first.key_column, first.scalar))
                out += sub[1:]
            else:
                out.append(Line(f"{pad}- {_scalar(item)}", (*path, i), indent + 2, scalar=True))
    return out


def render(lines: list[Line]) -> str:
    return "".join(line.text + "\n" for line in lines)


def dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path) if path else "(top level)"


# ----------------------------------------------------------------------------------------------
# The schema walk: which model governs a mapping, and what each field accepts.


def _arms(annotation: Any) -> list[Any]:
    """The members of a union (or the annotation itself), with Annotated unwrapped."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return [a for arm in get_args(annotation) for a in _arms(arm)]
    if hasattr(annotation, "__metadata__"):  # Annotated[...]
        return _arms(get_args(annotation)[0])
    if type(annotation).__name__ == "TypeAliasType":  # pydantic's JsonValue
        return [Any]
    return [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for arm in _arms(annotation):
        if isinstance(arm, type) and issubclass(arm, BaseModel):
            return arm
    return None


def governing(root: type[BaseModel], path: Path_) -> Any:
    """The annotation of the value at `path` (Any where the data is free-form)."""
    current: Any = root
    for part in path:
        model = _model_in(current)
        if model is not None and isinstance(part, str):
            if part not in model.model_fields:
                return Any
            current = model.model_fields[part].annotation
            continue
        containers = [a for a in _arms(current) if get_origin(a) in (list, dict)]
        if not containers:
            return Any
        args = get_args(containers[0])
        current = args[0] if get_origin(containers[0]) is list else args[1]
    return current


def field_info(root: type[BaseModel], path: Path_) -> FieldInfo | None:
    model = _model_in(governing(root, path[:-1])) if path else None
    if model is None or not isinstance(path[-1], str):
        return None
    return model.model_fields.get(path[-1])


def walk(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, (*path, i))


def model_maps(root: type[BaseModel], data: Any) -> list[tuple[Path_, type[BaseModel]]]:
    """Every mapping in `data` that a model governs (the ones whose field names matter)."""
    out: list[tuple[Path_, type[BaseModel]]] = []
    for path, value in walk(data):
        model = _model_in(governing(root, path))
        if isinstance(value, dict) and model is not None:
            out.append((path, model))
    return out


def typed_values(root: type[BaseModel], data: Any) -> list[tuple[Path_, Any, list[Any]]]:
    """Every value whose type the schema fixes: (path, value, the annotation's arms)."""
    out: list[tuple[Path_, Any, list[Any]]] = []
    for path, value in walk(data):
        if not path:
            continue
        arms = _arms(governing(root, path))
        if Any in arms:
            continue
        out.append((path, value, arms))
    return out


# ----------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    """One malformed file and what its error must name."""

    kind: str
    content: str | bytes
    fields: tuple[str, ...]
    """The message must name one of these fields (dotted; `[0]` and `.0` are the same)."""
    also: tuple[str, ...] = ()
    """Text the message must contain besides (e.g. a did-you-mean)."""
    label: str = ""
    """Which kind of malformation this is."""


def set_at(data: Any, path: Path_, value: Any) -> None:
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def get_at(data: Any, path: Path_) -> Any:
    for part in path:
        data = data[part]
    return data


def delete_at(data: Any, path: Path_) -> None:
    del get_at(data, path[:-1])[path[-1]]


def rename_at(data: Any, path: Path_, new: str) -> None:
    parent = get_at(data, path[:-1])
    items = [(new if k == path[-1] else k, v) for k, v in parent.items()]
    parent.clear()
    parent.update(items)


def copy(data: Any) -> Any:
    return json.loads(json.dumps(data))


def load_seed(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _wrong_values(value: Any, arms: list[Any]) -> list[Any]:
    """Values of a type the field cannot take."""
    takes_float = float in arms
    takes_none = type(None) in arms
    if isinstance(value, bool):
        bad: list[Any] = ["maybe", 7, ["x"], {"a": 1}]
    elif isinstance(value, int | float):
        bad = ["many", [1], {"a": 1}] + ([] if takes_float else [2.5])
    elif isinstance(value, str):
        bad = [["x", "y"], {"k": "v"}, 42, 4.5, True]
    elif isinstance(value, list):
        bad = ["just some text", {"item": value[0] if value else "x"}, 3]
    elif isinstance(value, dict):
        bad = [[{k: v} for k, v in value.items()] or ["x"], "text", 3]
    else:
        bad = [["x"], {"a": 1}]
    return [b for b in bad if not (takes_none and b is None)]


def _typo(draw: st.DrawFn, name: str) -> str:
    i = draw(st.integers(0, len(name) - 2))
    how = draw(st.sampled_from(["swap", "drop", "double", "upper", "space"]))
    if how == "swap":
        return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    if how == "drop":
        return name[:i] + name[i + 1 :]
    if how == "double":
        return name[:i] + name[i] + name[i:]
    if how == "upper":
        return name[:i] + name[i].upper() + name[i + 1 :]
    return name[:i] + "-" + name[i + 1 :] if name[i] == "_" else name[:i] + name[i] + "_" + name[i + 1 :]


ODD_NAMES: list[Callable[[str], str]] = [
    lambda n: n[:1] + "\u200b" + n[1:],  # zero-width space
    lambda n: n.replace("a", "\u0430", 1) if "a" in n else "\u0430" + n,  # Cyrillic a
    lambda n: "".join(chr(ord(c) + 0xFEE0) if c.isalpha() else c for c in n),  # fullwidth
    lambda n: n + "\u0301",  # combining accent
    lambda n: "\ufeff" + n,  # a byte-order mark inside the text
    lambda n: n + "\u202e",  # right-to-left override
]
ODD_SLUGS = ["café", "ÜBER", "emoji-\U0001f600", "a\u200bb", "x\u202ey", "ｌｏｗ", " lead-space", "tab\there"]


MUTATIONS = (
    "wrong_type",
    "missing",
    "typo",
    "out_of_range",
    "nesting",
    "duplicate",
    "syntax",
    "unicode_key",
    "unicode_value",
    "control_char",
    "document",
    "reference",
)


def mutate(draw: st.DrawFn, kind: str, root: type[BaseModel], data: Any) -> Case:
    """One malformed file from a valid seed `data` (whose schema is `root`), labelled with how it was broken."""
    while True:
        what = draw(st.sampled_from(MUTATIONS))
        case = _mutate(draw, what, kind, root, data)
        if case is not None:
            return replace(case, label=what)


def _mutate(draw: st.DrawFn, what: str, kind: str, root: type[BaseModel], data: Any) -> Case | None:
    data = copy(data)
    if what == "reference":
        return REFERENCES[kind](draw, data)
    if what == "wrong_type":
        path, value, arms = draw(st.sampled_from(typed_values(root, data)))
        set_at(data, path, draw(st.sampled_from(_wrong_values(value, arms))))
        return Case(kind, render(emit(data)), (dotted(path),))
    if what == "missing":
        options = [
            (*path, name)
            for path, model in model_maps(root, data)
            for name, info in model.model_fields.items()
            if info.is_required() and name in get_at(data, path) and model is not ScenarioFile
        ]
        if not options:
            return None
        path = draw(st.sampled_from(options))
        delete_at(data, path)
        return Case(kind, render(emit(data)), (dotted(path),), ("required field is missing",))
    if what == "typo":
        maps = [(p, m) for p, m in model_maps(root, data) if m is not ScenarioFile]
        path, model = draw(st.sampled_from(maps))
        allowed = sorted(model.model_fields)
        name = draw(st.sampled_from([n for n in allowed if len(n) >= 4]))
        typo = _typo(draw, name)
        if typo in allowed or difflib.get_close_matches(typo, allowed, n=1) != [name]:
            return None
        parent = get_at(data, path)
        if name in parent:
            rename_at(data, (*path, name), typo)
        else:
            parent[typo] = "x"
        return Case(kind, render(emit(data)), (dotted((*path, typo)),), (f"Did you mean '{name}'?",))
    if what == "out_of_range":
        numbers: list[tuple[Path_, FieldInfo]] = [
            ((*at, name), info)
            for at, model in model_maps(root, data)
            for name, info in model.model_fields.items()
            if any(
                isinstance(m, annotated_types.Ge | annotated_types.Gt | annotated_types.Le | annotated_types.Lt)
                for m in info.metadata
            )
        ]
        if not numbers:  # personas and scenarios have no numbers: an id longer than ids may be
            ids = [p for p, _ in walk(data) if p and p[-1] == "id"]
            too_long = draw(st.sampled_from(ids))
            set_at(data, too_long, "a" * draw(st.integers(81, 400)))
            return Case(kind, render(emit(data)), (dotted(too_long),), ("at most 80 characters",))
        number, info = draw(st.sampled_from(numbers))
        bounds = [m for m in info.metadata if isinstance(m, annotated_types.Ge | annotated_types.Gt)] + [
            m for m in info.metadata if isinstance(m, annotated_types.Le | annotated_types.Lt)
        ]
        bound = draw(st.sampled_from(bounds))
        step = draw(st.integers(0, 10**6))
        limit: Any = getattr(bound, type(bound).__name__.lower())  # Ge(ge=1).ge, Lt(lt=1.0).lt, ...
        below = isinstance(bound, annotated_types.Ge | annotated_types.Gt)
        inclusive = isinstance(bound, annotated_types.Ge | annotated_types.Le)
        outside = step + (1 if inclusive else 0)
        set_at(data, number, limit - outside if below else limit + outside)
        return Case(kind, render(emit(data)), (dotted(number),))
    if what == "nesting":
        how = draw(st.sampled_from(["lift", "sink", "wrap", "list"]))
        maps = model_maps(root, data)
        top = dict(maps)[()]
        if how == "lift":
            nested = [
                ((*p, n), n)
                for p, _ in maps
                if p
                for n in get_at(data, p)
                if isinstance(n, str) and n not in top.model_fields
            ]
            if not nested:
                return None
            path, name = draw(st.sampled_from(nested))
            data[name] = get_at(data, path)
            return Case(kind, render(emit(data)), (name,))
        if how == "sink":
            inner = [(p, m) for p, m in maps if len(p) == 1]
            if not inner:
                return None
            path, model = draw(st.sampled_from(inner))
            names = [n for n in data if n not in model.model_fields and n != path[0]]
            if not names:
                return None
            name = draw(st.sampled_from(names))
            get_at(data, path)[name] = data[name]
            return Case(kind, render(emit(data)), (dotted((*path, name)),))
        if how == "wrap":
            wrapper = draw(st.sampled_from(["persona", "scenario", "experiment", "config", "spec"]))
            if wrapper in top.model_fields:
                return None
            return Case(kind, render(emit({wrapper: data})), (wrapper,))
        return Case(kind, render(emit([data])), ("(top level)", "scenarios"))
    if what == "duplicate":
        lines = emit(data)
        candidates = [i for i, line in enumerate(lines) if line.scalar and line.path and isinstance(line.path[-1], str)]
        i = draw(st.sampled_from(candidates))
        line = lines[i]
        assert line.path is not None
        again = Line(" " * line.key_column + f"{_key(str(line.path[-1]))}: {draw(st.sampled_from(['1', 'again']))}")
        lines.insert(i + 1, again)
        return Case(kind, render(lines), (dotted(line.path),), ("written twice",))
    if what == "syntax":
        lines = emit(data)
        scalars = [i for i, line in enumerate(lines) if line.scalar and line.path and isinstance(line.path[-1], str)]
        i = draw(st.sampled_from(scalars))
        line = lines[i]
        head = line.text[: line.text.index(":", line.key_column) + 1]
        breakage = draw(
            st.sampled_from(
                [
                    " [unclosed, list",
                    ' "unclosed quote',
                    " {a: 1",
                    " @reserved",
                    " `backtick",
                    " a: b: c",
                    " ]",
                    " *",
                    " &",
                    " !<> x",
                    " |x",
                ]
            )
        )
        lines[i] = Line(head + breakage)
        assert line.path is not None
        return Case(kind, render(lines), (dotted(line.path),), ("line ",))
    if what == "unicode_key":
        path, model = draw(st.sampled_from(model_maps(root, data)))
        parent = get_at(data, path)
        names = [n for n in parent if isinstance(n, str)]
        if not names:
            return None
        name = draw(st.sampled_from(names))
        odd = draw(st.sampled_from(ODD_NAMES))(name)
        rename_at(data, (*path, name), odd)
        shown = odd if odd.isprintable() and "\u200b" not in odd and "\ufeff" not in odd else ascii(odd)[1:-1]
        return Case(kind, render(emit(data)), (dotted((*path, odd)), dotted((*path, shown)), dotted(path)))
    if what == "unicode_value":
        slugs = [
            (path, value)
            for path, value, arms in typed_values(root, data)
            if isinstance(value, str)
            and (any(get_origin(a) is Literal for a in arms) or path[-1] in ("id", "name", "persona"))
        ]
        slugs = [(p, v) for p, v in slugs if p[-1] != "name" or root is ExperimentConfig]
        if not slugs:
            return None
        path, _ = draw(st.sampled_from(slugs))
        set_at(data, path, draw(st.sampled_from(ODD_SLUGS)))
        return Case(kind, render(emit(data)), (dotted(path), path[-1] if isinstance(path[-1], str) else ""))
    if what == "control_char":
        lines = emit(data)
        scalars = [i for i, line in enumerate(lines) if line.scalar and line.path]
        i = draw(st.sampled_from(scalars))
        char = draw(st.sampled_from(["\x00", "\x07", "\x1b", "\x7f", "\ufffe", "\x0c"]))
        line = lines[i]
        assert line.path is not None
        lines[i] = Line(line.text[:-1] + char + line.text[-1], line.path, line.key_column, True)
        return Case(kind, render(lines), (dotted(line.path),))
    shape = draw(st.sampled_from(["list", "scalar", "null", "number", "comments", "two docs", "bytes"]))
    content: str | bytes = {
        "list": "- a\n- b\n",
        "scalar": "just a sentence\n",
        "null": "~\n",
        "number": "42\n",
        "comments": "# nothing but a comment\n\n",
        "two docs": render(emit(data)) + "---\n" + render(emit(data)),
    }.get(shape, b"")
    if shape == "bytes":
        text = render(emit(data)).encode()
        at = draw(st.integers(0, len(text) - 1))
        content = text[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe9", b"\x80\x80"])) + text[at:]
    return Case(kind, content, ())


REFERENCE_PERSONA = "reference-persona"
"""A persona that a fixture folder holds: a persona file claiming its id is a duplicate."""


def _persona_reference(draw: st.DrawFn, data: Any) -> Case:
    data["id"] = REFERENCE_PERSONA
    return Case("persona", render(emit(data)), ("id",), ("already defined",))


def _scenario_reference(draw: st.DrawFn, data: Any) -> Case:
    items = data["scenarios"]
    i = draw(st.integers(0, len(items) - 1))
    how = draw(st.sampled_from(["ghost persona", "persona typo", "duplicate id"]))
    if how == "duplicate id" and len(items) > 1:
        j = (i + 1) % len(items)
        items[j]["id"] = items[i]["id"]
        return Case("scenario", render(emit(data)), ("id",), ("already defined",))
    ref = items[i]["persona"]
    items[i]["persona"] = "ghost-customer" if how == "ghost persona" else ref[:-1] + "x"
    return Case("scenario", render(emit(data)), (f"scenarios.{i}.persona",), ("no persona",))


def _experiment_reference(draw: st.DrawFn, data: Any) -> Case:
    options = ["agent", "simulate scenario", "persona folder", "scenario file"]
    options += ["train student", "train teacher"] if "train" in data else []
    options += ["eval student", "eval scenario", "overlap"] if "evaluate" in data and "train" in data else []
    how = draw(st.sampled_from(options))
    ghost = draw(st.sampled_from(["ghost", "studnet", "Student", "judge2"]))
    if how == "agent":
        data.setdefault("simulate", {}).setdefault("agents", ["student"]).append(ghost)
        return Case("experiment", render(emit(data)), ("models",), (f"needs entries for {ghost}",))
    if how in ("train student", "train teacher"):
        data["train"][how.split()[1]] = ghost
        return Case("experiment", render(emit(data)), ("models",), (ghost,))
    if how == "eval student":
        data["evaluate"]["students"] = [*data["evaluate"].get("students", []), ghost]
        return Case("experiment", render(emit(data)), ("models",), (ghost,))
    if how == "simulate scenario":
        data.setdefault("simulate", {})["scenarios"] = ["retail-late-delivry"]
        return Case("experiment", render(emit(data)), ("simulate.scenarios.0",), ("did you mean",))
    if how == "eval scenario":
        data["evaluate"]["scenarios"] = [*data["evaluate"]["scenarios"], "no-such-scenario"]
        i = len(data["evaluate"]["scenarios"]) - 1
        return Case("experiment", render(emit(data)), (f"evaluate.scenarios.{i}",), ("unknown scenario",))
    if how == "overlap":
        data["evaluate"]["scenarios"] = [*data["evaluate"]["scenarios"], data["train"]["scenarios"][0]]
        return Case("experiment", render(emit(data)), ("evaluate.scenarios",), ("held out",))
    key = "personas" if how == "persona folder" else "scenarios"
    data[key] = [*data.get(key, []), "../nowhere" if key == "personas" else "../scenarios/none.yaml"]
    i = len(data[key]) - 1
    return Case("experiment", render(emit(data)), (f"{key}.{i}",), ("does not exist",))


REFERENCES: dict[str, Callable[[st.DrawFn, Any], Case]] = {
    "persona": _persona_reference,
    "scenario": _scenario_reference,
    "experiment": _experiment_reference,
}


# ----------------------------------------------------------------------------------------------
# Loading a case the way coachlab does


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shipped personas/, scenarios/ and experiments/ (experiments refer to ../)."""
    root = tmp_path_factory.mktemp("bad-input")
    for name in ("personas", "scenarios", "experiments"):
        shutil.copytree(ROOT / name, root / name)
    (root / "cases").mkdir()
    (root / "reference").mkdir()
    shutil.copy(ROOT / "personas" / "terse-priya.yaml", root / "reference" / "p.yaml")
    text = (root / "reference" / "p.yaml").read_text(encoding="utf-8")
    (root / "reference" / "p.yaml").write_text(text.replace("id: terse-priya", f"id: {REFERENCE_PERSONA}"))
    return root


def write(case: Case, path: Path) -> None:
    if isinstance(case.content, bytes):
        path.write_bytes(case.content)
    else:
        path.write_text(case.content, encoding="utf-8")


def check(case: Case, path: Path, load: Callable[[Path], object]) -> str:
    """Write the case, load it, and check the error is a ConfigError naming file and field."""
    write(case, path)
    with pytest.raises(ConfigError) as info:  # any other exception fails the test with its traceback
        load(path)
    msg = str(info.value)
    assert str(path) in msg, f"the error does not name the file:\n{msg}"
    normal = re.sub(r"\[(\d+)\]", r".\1", msg)
    if case.fields:
        assert any(f and f in normal for f in case.fields), f"none of {case.fields} named in:\n{msg}"
    else:  # syntax errors and whole-file problems: the line, or what the whole file is
        assert re.search(rf"{re.escape(str(path))}(:\d+| line \d+|: )", msg), msg
    for text in case.also:
        assert text in msg, msg
    assert "Traceback" not in msg
    return msg


SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)


def run_property(
    seeds: list[Path], kind: str, root: type[BaseModel], load: Callable[[Path], object], target: Path, n: int
) -> dict[str | bytes, str]:
    """Run `n` generated cases; returns the distinct contents tried, with how each was broken."""
    seen: dict[str | bytes, str] = {}
    seed_data = [load_seed(p) for p in seeds]

    @settings(SETTINGS, max_examples=n)
    @given(st.data())
    def prop(data: st.DataObject) -> None:
        case = mutate(data.draw, kind, root, data.draw(st.sampled_from(seed_data)))
        seen[case.content] = case.label
        check(case, target, load)

    prop()
    return seen


def test_generated_bad_persona_files(workspace: Path) -> None:
    """120 generated malformed persona files, loaded as `load_personas` does."""
    target = workspace / "cases" / "persona.yaml"
    folder = workspace / "reference"
    seen = run_property(PERSONA_SEEDS, "persona", Persona, lambda p: load_personas([folder, p]), target, 120)
    assert len(seen) >= 100
    assert set(seen.values()) == set(MUTATIONS)


def test_generated_bad_scenario_files(workspace: Path) -> None:
    """120 generated malformed scenario files, resolved against the shipped personas."""
    personas, _ = load_personas([workspace / "personas"])
    target = workspace / "cases" / "scenarios.yaml"
    seen = run_property(SCENARIO_SEEDS, "scenario", ScenarioFile, lambda p: load_scenarios([p], personas), target, 120)
    assert len(seen) >= 100
    assert set(seen.values()) == set(MUTATIONS)


def test_generated_bad_experiment_files(workspace: Path) -> None:
    """100 generated malformed experiment files, loaded with their personas and scenarios."""
    target = workspace / "experiments" / "case.yaml"
    seen = run_property(EXPERIMENT_SEEDS, "experiment", ExperimentConfig, load_experiment, target, 100)
    assert len(seen) >= 80
    assert set(seen.values()) == set(MUTATIONS)


def test_generated_bad_experiments_through_the_cli(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 generated bad experiments through `coachlab simulate`: exit 2, every line names the file, no traceback."""
    target = workspace / "experiments" / "cli-case.yaml"
    seen: dict[str | bytes, str] = {}
    seeds = [load_seed(p) for p in EXPERIMENT_SEEDS]

    @settings(SETTINGS, max_examples=40)
    @given(st.data())
    def prop(data: st.DataObject) -> None:
        case = mutate(data.draw, "experiment", ExperimentConfig, data.draw(st.sampled_from(seeds)))
        seen[case.content] = case.label
        write(case, target)
        code, out, err = run_main(
            capsys, monkeypatch, "simulate", str(target), "--dry-run", "--out", str(workspace / "out")
        )
        assert code == 2, (out, err)
        assert "Traceback" not in out + err
        lines = err.splitlines()
        assert lines[0].startswith(f"error: {target}"), err
        assert all(str(target) in line or line.startswith("... and") for line in lines), err

    prop()
    assert len(seen) >= 30


# ----------------------------------------------------------------------------------------------
# Files a generator cannot write well


def run_main(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int | str | None, str, str]:
    """Run the real entry point (`main`, which turns coachlab errors into one line) in-process."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["coachlab", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    return info.value.code, out, err


LOADERS: dict[str, Callable[[Path], object]] = {
    "persona": lambda p: load_personas([p]),
    "scenario": lambda p: load_scenarios([p], {}),
    "experiment": load_experiment,
}


def error_of(load: Callable[[Path], object], path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    return msg


@pytest.mark.parametrize("kind", sorted(LOADERS))
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"   \n\t\n", "is empty"),
        (b"\xef\xbb\xbf", "is empty"),  # a byte-order mark and nothing else
        (b"# only a comment\n", "has no content"),
        (b"~\n", "has no content"),
        (b"---\n...\n", "has no content"),
    ],
)
def test_empty_files(tmp_path: Path, kind: str, content: bytes, expected: str) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(content)
    assert expected in error_of(LOADERS[kind], path)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_a_directory_instead_of_a_file(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / f"{kind}.yaml"
    folder.mkdir()
    expected = "no persona files (*.yaml) in this folder" if kind == "persona" else "is a directory"
    assert expected in error_of(LOADERS[kind], folder)  # persona paths may be folders of persona files


def test_a_folder_of_personas_holding_a_folder_named_like_a_file(tmp_path: Path) -> None:
    shutil.copy(ROOT / "personas" / "terse-priya.yaml", tmp_path / "a.yaml")
    (tmp_path / "b.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"b\.yaml: is a directory"):
        load_personas([tmp_path])


def test_devices_and_pipes_are_refused_without_reading(tmp_path: Path) -> None:
    """A FIFO would block a reader forever, /dev/zero would fill memory: both are refused on sight."""
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    signal.alarm(10)  # a reader that opened the pipe would hang here; fail instead
    try:
        for path in (fifo, Path("/dev/zero"), Path("/dev/urandom")):
            if path.exists():
                assert "not a regular file" in error_of(lambda p: load_yaml(p, what="persona file"), path)
    finally:
        signal.alarm(0)


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("id: caf\u00e9\n".encode("latin-1"), 1),
        ("id: dana\nname: Dana\n".encode("utf-16"), 1),
        (b"id: dana\nname: Dana\ndescription: \x80 lone continuation byte\n", 3),
        (b"id: dana\nname: \xe2\x82\n", 2),  # truncated at the end of the file
    ],
)
def test_non_utf8_files_name_the_line(tmp_path: Path, content: bytes, line: int) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    msg = error_of(LOADERS["persona"], path)
    assert f"line {line}: not UTF-8" in msg and "save the persona file as UTF-8" in msg


def laughs(levels: int, width: int) -> str:
    """The billion-laughs bomb: each level refers `width` times to the one before."""
    text = 'lol0: &lol0 "lol"\n'
    for i in range(1, levels + 1):
        text += f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * width)}]\n"
    return text


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("billion laughs (90 aliases, 10^9 values)", laughs(9, 10)),
        ("many aliases", laughs(12, 9)),
        ("wide", "a: &a [" + ", ".join(["x"] * 2000) + "]\nb: [" + ", ".join(["*a"] * 99) + "]\n"),
    ],
)
@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_yaml_bombs_are_refused_quickly_without_expanding(tmp_path: Path, kind: str, name: str, text: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        msg = error_of(LOADERS[kind], path)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "aliases" in msg, msg
    assert elapsed < 2.0, f"{name}: {elapsed:.1f}s"
    assert peak < 30_000_000, f"{name}: {peak:,} bytes"


def test_a_bomb_inside_a_field_that_validation_would_walk(tmp_path: Path) -> None:
    """`facts` accepts any JSON: a bomb there would expand in validation, so the reader stops it first."""
    bomb = "".join(f"    b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9)}]\n" for i in range(1, 9))
    path = tmp_path / "s.yaml"
    path.write_text(
        "scenarios:\n  - id: s\n    domain: d\n    title: t\n    issue: i\n    policy: [p]\n    persona: x\n"
        '    facts:\n    b0: &b0 "x"\n'.replace("    b0", "      b0")
        + bomb.replace("    b", "      b")
    )
    started = time.perf_counter()
    msg = error_of(LOADERS["scenario"], path)
    assert "aliases" in msg and "scenarios.0.facts" in msg
    assert time.perf_counter() - started < 2.0


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A sparse 10 GiB file: reading it whole would take minutes and all memory; it is refused at once."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(10 * 2**30)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        msg = error_of(LOADERS["experiment"], path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "10,737,418,240 bytes is too large for an experiment file" in msg
    assert time.perf_counter() - started < 1.0 and peak < 5_000_000
    big = tmp_path / "big.yaml"
    big.write_text("description: " + "x" * 2_500_000 + "\n")
    assert "too large" in error_of(LOADERS["persona"], big)


def test_a_large_but_allowed_file_loads_fast(tmp_path: Path) -> None:
    path = tmp_path / "facts.yaml"
    facts = "".join(f"      k{i}: value number {i}\n" for i in range(20_000))
    path.write_text(
        "scenarios:\n  - id: s\n    domain: d\n    title: t\n    issue: i\n    policy: [p]\n    persona: x\n"
        "    facts:\n" + facts
    )
    assert path.stat().st_size > 500_000
    started = time.perf_counter()
    assert "no persona 'x'" in error_of(LOADERS["scenario"], path)
    assert time.perf_counter() - started < 10.0  # about 1 s: nothing quadratic in the reader


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "a: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n",
        "".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n",
        "- " * 5_000 + "x\n",
    ],
    ids=["flow lists", "flow maps", "block maps", "block lists"],
)
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    msg = error_of(LOADERS["persona"], path)
    assert "nest" in msg, msg


def test_paths_that_do_not_lead_to_a_file(tmp_path: Path) -> None:
    regular = tmp_path / "file.yaml"
    regular.write_text("id: x\n")
    assert "not found" in error_of(LOADERS["persona"], tmp_path / "nope.yaml")
    assert "not found" in error_of(LOADERS["persona"], regular / "inside.yaml")
    assert "File name too long" in error_of(LOADERS["experiment"], tmp_path / ("a" * 300 + ".yaml"))
    broken = tmp_path / "broken.yaml"
    broken.symlink_to(tmp_path / "gone.yaml")
    assert "not found" in error_of(LOADERS["scenario"], broken)
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    assert "cannot open" in error_of(LOADERS["scenario"], loop)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id: dana\npatience: " + "9" * 5000 + "\n", "p.yaml:2: patience: cannot read '999"),
        ("id: dana\nmood: 2024-13-45\n", "p.yaml:2: mood: cannot read '2024-13-45' as timestamp"),
        ("id: dana\nmood: !!int fast\n", "p.yaml:2: mood: cannot read 'fast' as int"),
        ("id: dana\n1: x\n", "p.yaml:2: 1: YAML reads this field name as int"),
        ("id: dana\nno: x\n", "p.yaml:2: no: YAML reads this field name as bool"),
        ("id: dana\n~: x\n", "p.yaml:2: ~: YAML reads this field name as null"),
        ("id: dana\n? [a, b]\n: x\n", "p.yaml:2: (top level): a field name must be plain text"),
        ("id: &a dana\n*a : x\n", "p.yaml:2: (top level): a field name must be plain text, not an alias"),
        ("id: dana\ntraits: &t [a, *t]\n", "p.yaml:2: traits.1: *t is inside the value it names"),
        ("id: dana\nmood: !!python/object:os.system x\n", "p.yaml:2: mood: could not determine a constructor"),
        ("id: dana\nmood: *nowhere\n", "p.yaml:2: mood: found undefined alias"),
        ("id: dana\n<<: 3\n", "p.yaml:2: <<: expected a mapping or list of mappings for merging"),
        ("id: dana\nname: Dana\nname: Dan\n", "p.yaml:3: name: written twice (first on line 2)"),
        ("id: dana\nna\u200bme: Dana\n", "p.yaml:2: na\\u200bme: unknown field. The name holds invisible characters"),
        ("id: dana\nname: [Dana\n", "p.yaml: line 3, column 1: name.0: not valid YAML"),
        ("id: dana\nname: Da\x1bna\n", "p.yaml: line 2, column 9: name: '\\x1b' is not allowed in YAML"),
        ("id: dana\n---\nid: dana\n", "p.yaml:2: (top level): a second YAML document"),
    ],
)
def test_what_yaml_itself_cannot_read_names_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    msg = error_of(LOADERS["persona"], path)
    assert expected in msg.replace(str(tmp_path) + "/", ""), msg


# ----------------------------------------------------------------------------------------------
# The command line


def test_cli_validate_prints_one_line_per_bad_file(tmp_path: Path) -> None:
    bad_persona = tmp_path / "personas" / "bad.yaml"
    bad_persona.parent.mkdir()
    bad_persona.write_text(
        (ROOT / "personas" / "terse-priya.yaml").read_text(encoding="utf-8").replace("patience:", "patiense:")
    )
    twice = tmp_path / "twice.yaml"
    twice.write_text("scenarios:\n  - id: s\n    id: t\n")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("id: caf\u00e9\n".encode("latin-1"))
    missing = tmp_path / "missing.yaml"
    good = ROOT / "personas" / "furious-frank.yaml"
    result = CliRunner().invoke(app, ["validate", str(bad_persona), str(twice), str(latin), str(missing), str(good)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = result.stderr.splitlines()
    assert len(errors) == 4, result.stderr
    assert errors[0].startswith(f"{bad_persona}:") and "patiense: unknown field. Did you mean 'patience'?" in errors[0]
    assert errors[1] == f"{twice}:3: scenarios.0.id: written twice (first on line 2); keep one of them."
    assert errors[2].startswith(f"{latin}: line 1: not UTF-8")
    assert errors[3].startswith(f"{missing}: file not found")
    assert f"ok {good}" in result.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: e\nscenarios: [../scenarios/retail.yaml]\nmodels: {}\nsimulat: {}\n", "e.yaml:4: simulat: unknown"),
        ("name: e\nname: f\n", "e.yaml:2: name: written twice"),
        ("name: e\nscenarios: [x.yaml\n", "e.yaml: line 3, column 1: scenarios.0: not valid YAML"),
        ("", "e.yaml: the experiment file is empty."),
        (laughs(9, 10), "e.yaml:"),
    ],
)
def test_cli_simulate_on_a_bad_file_says_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, content: str, expected: str
) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(content)
    code, out, err = run_main(capsys, monkeypatch, "simulate", str(path), "--dry-run")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert expected in err.replace(str(tmp_path) + "/", ""), err
    result = CliRunner().invoke(app, ["simulate", str(path), "--dry-run"])  # typer's runner: the raw exception
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)


def test_cli_simulate_on_a_directory_and_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for target, expected in ((tmp_path, "is a directory"), (tmp_path / "none.yaml", "not found")):
        code, _, err = run_main(capsys, monkeypatch, "simulate", str(target))
        assert code == 2 and err.count("\n") == 1 and expected in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------
# Known gaps in experiments/config.py (owned elsewhere): the fix each needs is in its reason.


def _experiment(tmp_path: Path, **override: object) -> Path:
    data = load_seed(ROOT / "experiments" / "quickstart.yaml")
    data.update(override)
    path = tmp_path / "experiments" / "e.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("personas", "scenarios"):
        if not (tmp_path / name).exists():
            shutil.copytree(ROOT / name, tmp_path / name)
    path.write_text(render(emit(data)))
    return path


def test_an_experiment_path_too_long_for_the_file_system(tmp_path: Path) -> None:
    path = _experiment(tmp_path, personas=["a" * 300])
    assert "personas[0]" in error_of(load_experiment, path)


def test_a_scenario_folder_in_an_experiment_names_the_field(tmp_path: Path) -> None:
    path = _experiment(tmp_path, scenarios=["../scenarios"])
    msg = error_of(load_experiment, path)
    assert re.search(rf"{re.escape(str(path))}:\d+: scenarios\[0\]:", msg), msg


def test_an_unknown_top_level_field_in_a_scenario_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text((ROOT / "scenarios" / "retail.yaml").read_text(encoding="utf-8") + "scenarioss: []\n")
    msg = error_of(LOADERS["scenario"], path)
    assert re.search(rf"{re.escape(str(path))}:\d+: scenarioss: unknown field", msg), msg
