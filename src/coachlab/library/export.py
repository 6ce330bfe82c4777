"""Exports of a library version for the places a library goes: prompts, reviews, pipelines, agent runtimes.

- `prompt_block`: a fixed coaching block for teams that cannot retrieve per request, the same
  strongest approved strategies the `generic` evaluation condition shows (so its measured effect
  is the one to expect);
- `markdown_document`: a review document (text, evidence, provenance, audit trail);
- `jsonl_lines`: one strategy a line, as `Strategy` JSON (`Strategy.model_validate_json` reads a line back);
- `write_skill`: an Agent Skills folder (`SKILL.md` with YAML front matter, agentskills.io) holding
  the approved strategies, for agent runtimes that load skills.

`coachlab library export RUN --format prompt|markdown|jsonl|skill` writes them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

import yaml

from coachlab.errors import UsageError
from coachlab.library.coaching import coaching_block
from coachlab.library.store import LibraryVersion
from coachlab.schema import AuditStatus, Strategy

__all__ = [
    "SKILL_NAME",
    "generic_strategies",
    "jsonl_lines",
    "markdown_document",
    "prompt_block",
    "skill_document",
    "write_skill",
]

SKILL_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
"""An Agent Skills name: lowercase letters, digits and single hyphens (at most 64 characters)."""


def generic_strategies(strategies: Sequence[Strategy], size: int) -> list[Strategy]:
    """The `generic` condition's fixed list: the `size` approved strategies with the largest measured gain."""
    approved = [s for s in strategies if s.status is AuditStatus.APPROVED]
    return sorted(approved, key=lambda s: -s.evidence.gain if s.evidence else 0.0)[:size]


def prompt_block(version: LibraryVersion, *, size: int = 5) -> str:
    """A coaching block to paste at the end of a system prompt: the `generic` condition's strategies.

    Returns:
        The block (`coaching_block`), or "" when no strategy is approved.
    """
    return coaching_block([s.as_guidance() for s in generic_strategies(version.strategies, size)])


def _md(text: str) -> str:
    """Strategy text for Markdown: one line, HTML escaped (a rendered review page runs no markup from it)."""
    return html.escape(" ".join(text.split()), quote=False)


def markdown_document(version: LibraryVersion, strategies: Sequence[Strategy], *, title: str = "") -> str:
    """A review document: each strategy's situation, guidance, evidence, provenance and audit trail."""
    counts = {status: len(version.with_status(status)) for status in AuditStatus}
    head = f"# Strategy library v{version.version}" + (f": {_md(title)}" if title else "")
    lines = [
        head,
        "",
        f"Written {version.created_at:%Y-%m-%d %H:%M} UTC ({_md(version.note) or 'no note'}). "
        + ", ".join(f"{n} {status.value}" for status, n in counts.items() if n or status is not AuditStatus.RETIRED)
        + f"; {len(strategies)} shown here.",
        "",
    ]
    for s in strategies:
        lines += [
            f"## {s.id} ({s.status.value})",
            "",
            f"**When:** {_md(s.situation)}",
            "",
            f"**Do:** {_md(s.guidance)}",
            "",
        ]
        lines.append(f"- Evidence: {_md(s.evidence.summary) if s.evidence else 'none recorded'}")
        if s.provenance is not None:
            p = s.provenance
            where = f"scenario `{p.scenario_id}`" + (f", node `{p.node_id}`" if p.node_id else "")
            turn = f", failure at turn {p.failure_turn}" if p.failure_turn is not None else ""
            lines.append(f"- Written by: `{_md(p.teacher_model)}` (iteration {p.iteration}) for {where}{turn}")
        for m in s.merged:
            found = f" for scenario `{m.provenance.scenario_id}`" if m.provenance else ""
            if m.provenance and m.provenance.node_id:
                found += f", node `{m.provenance.node_id}`"
            evidence = _md(m.evidence.summary) if m.evidence else "none recorded"
            lines.append(
                f"- Found again{found}: merged as a near-duplicate (similarity {m.similarity:.2f}: "
                f"{_md(m.situation)} / {_md(m.guidance)}); its evidence: {evidence}"
            )
        for entry in s.audit:
            why = f": {_md(entry.why)}" if entry.why else ""
            lines.append(f"- {entry.at:%Y-%m-%d %H:%M} {entry.status.value} by {_md(entry.by)}{why}")
        lines.append("")
    return "\n".join(lines)


def jsonl_lines(strategies: Sequence[Strategy]) -> str:
    """One strategy a line, as `Strategy` JSON (with provenance, evidence and audit trail)."""
    return "".join(s.model_dump_json() + "\n" for s in strategies)


def skill_document(version: LibraryVersion, *, name: str, description: str | None = None) -> str:
    """The `SKILL.md` of an Agent Skill that holds the approved strategies of `version`.

    Raises:
        UsageError: `name` is not a valid skill name, or no strategy is approved.
    """
    if len(name) > 64 or not SKILL_NAME.match(name):
        raise UsageError(
            f"skill name {name!r}: use 1-64 lowercase letters, digits and single hyphens (e.g. acme-support-coaching)."
        )
    approved = version.with_status(AuditStatus.APPROVED)
    if not approved:
        raise UsageError(f"library v{version.version} has no approved strategy: approve some before exporting a skill.")
    from coachlab import __version__

    text = description or (
        f"Verified customer-service strategies (coachlab library v{version.version}, {len(approved)} strategies). "
        "Use when replying to a customer in a support conversation: find the situation that fits the "
        "conversation and follow its guidance."
    )
    front = yaml.safe_dump(
        {
            "name": name,
            "description": text[:1024],
            "metadata": {"library-version": str(version.version), "generator": f"coachlab {__version__}"},
        },
        sort_keys=False,
        allow_unicode=True,
        width=1000,
    )
    lines = [
        "---",
        front.rstrip("\n"),
        "---",
        "",
        "# Customer-service coaching",
        "",
        "Each strategy below says when it applies and what to do. They were written by a stronger model,",
        "checked in simulated conversations and approved by a person. When the conversation fits a",
        "situation, follow its guidance; skip the ones that do not fit. They never override the company's",
        "policy or the facts in your records.",
        "",
    ]
    for s in approved:
        evidence = f" Evidence: {s.evidence.summary}." if s.evidence else ""
        lines += [
            f"## {' '.join(s.situation.split())}",
            "",
            " ".join(s.guidance.split()),
            "",
            f"(`{s.id}`.{evidence})",
            "",
        ]
    return "\n".join(lines)


def write_skill(version: LibraryVersion, parent: Path, *, name: str, description: str | None = None) -> Path:
    """Write the skill folder `parent/name/` with its `SKILL.md` (replacing an earlier export).

    Returns:
        The path of `SKILL.md`.

    Raises:
        UsageError: See `skill_document`.
    """
    document = skill_document(version, name=name, description=description)
    folder = parent / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "SKILL.md"
    path.write_text(document, encoding="utf-8")
    return path
