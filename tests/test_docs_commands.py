"""Every `coachlab` command the README and docs/ show exists, with every flag it names.

The shell blocks (```bash) are read as a reader would copy them: continuation lines joined,
commands split at `&&`, `;` and `|`. Each `coachlab` command is resolved against the real command
tree (`coachlab.cli.app`), subcommand by subcommand, and each `--flag` must be an option of the
command it is given to. A renamed command or flag fails here before a reader finds it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from coachlab.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(?:bash|sh|shell|console)\n(.*?)^```", re.M | re.S)


def _commands(text: str) -> list[list[str]]:
    """The `coachlab ...` commands (as argument lists) in the shell blocks of a Markdown text."""
    found: list[list[str]] = []
    for block in BLOCK.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            if not line or line.startswith("#"):
                continue
            for part in re.split(r"&&|\|\||;|\|", line):
                try:
                    words = shlex.split(part, comments=True)
                except ValueError:
                    continue
                while words and ("=" in words[0] and not words[0].startswith("-")):
                    words = words[1:]  # VAR=value before the command
                if words and words[0] == "coachlab":
                    found.append(words[1:])
    return found


def _check(command: Any, args: list[str], where: str) -> list[str]:
    """What in `args` does not exist on `command` (an empty list when all of it does)."""
    path = ["coachlab"]
    words = list(args)
    # typer ships its own click: a group is a command with subcommands.
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        name = words.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            return [f"{where}: `{' '.join(path)}` has no subcommand `{name}`"]
        path.append(name)
        command = sub
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
    return [
        f"{where}: `{' '.join(path)}` has no option `{flag}`"
        for word in words
        if word.startswith("--") and (flag := word.split("=", 1)[0]) not in known
    ]


def test_the_docs_show_coachlab_commands() -> None:
    commands = [c for doc in DOCS for c in _commands(doc.read_text(encoding="utf-8"))]
    assert len(commands) >= 5
    assert any(c[:1] == ["distill"] for c in commands)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_and_flag_exists(doc: Path) -> None:
    root = typer.main.get_command(app)
    problems = [
        problem for args in _commands(doc.read_text(encoding="utf-8")) for problem in _check(root, args, doc.name)
    ]
    assert not problems, "\n".join(problems)


def test_a_wrong_flag_or_command_is_caught() -> None:
    root = typer.main.get_command(app)
    text = (
        "```bash\ncoachlab distill x.yaml --resume && coachlab trian x.yaml\ncoachlab library list run --bogus\n```\n"
    )
    problems = [p for args in _commands(text) for p in _check(root, args, "t.md")]
    assert problems == [
        "t.md: `coachlab` has no subcommand `trian`",
        "t.md: `coachlab library list` has no option `--bogus`",
    ]
