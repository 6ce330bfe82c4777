r"""The interactive tree page: one self-contained HTML file (no network, works from file://).

The page embeds the saved tree as node-link JSON (node records inlined, exactly as tree.json
holds them) with the layout, the colours, the node's transcripts and the library, and draws it
with plain JavaScript and SVG shipped in the package (`coachlab/templates/tree_page.*`, followed by
the colour switch of `coachlab.viz.measure_switch`). Nodes are coloured by the student's task
success rate (items met where no node succeeds, satisfaction without a checklist:
`coachlab.viz.measures`), and a control in the legend switches to the other measures. Data goes
in a `<script type="application/json">` block with `<`, `>` and `&` written as JSON `\u` escapes,
so no text from a persona, a transcript or a mutation can close the block or open a tag; the
script builds every element with `textContent`, never parsing data as HTML.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shlex
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from coachlab import __version__
from coachlab.schema import AgentMessage, CustomerMessage, Episode, Strategy
from coachlab.viz.layout import MEASURES, SATISFACTION_STOPS, Measure, node_radius, satisfaction_color, tidy_layout
from coachlab.viz.measure_switch import MEASURE_SCRIPT, MEASURE_STYLE
from coachlab.viz.measures import available_measures, episode_score, node_scores, tree_measure
from coachlab.viz.run import RunData

__all__ = ["page_data", "render_page", "script_json", "strategy_commands", "write_page"]

_PLACEHOLDER = re.compile(r"\{\{([A-Z]+)\}\}")


def script_json(data: Any) -> str:
    r"""JSON that is safe inside an HTML `<script>` element.

    `<`, `>` and `&` (and the line separators U+2028/U+2029) are written as `\uXXXX` escapes,
    which JSON.parse reads back unchanged, so the text cannot end the element (`</script>`), start
    a comment (`<!--`) or hide an entity.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def strategy_commands(run_dir: str | Path, strategy: Strategy) -> dict[str, str]:
    """Copyable `coachlab library` commands for a strategy (approve, reject, edit).

    The run folder, the id and the current guidance are shell-quoted; NAME and the reason are
    placeholders to replace.
    """
    folder, sid = shlex.quote(str(run_dir)), shlex.quote(strategy.id)
    return {
        "approve": f"coachlab library approve {folder} {sid} --by NAME --why '...'",
        "reject": f"coachlab library reject {folder} {sid} --by NAME --why '...'",
        "edit": f"coachlab library edit {folder} {sid} --by NAME --guidance {shlex.quote(strategy.guidance)}",
    }


_FIRST_BECAUSE: dict[Measure, str] = {
    "task_success": "",
    "items_met": "No node's student succeeded in this run: items met is shown first.",
    "satisfaction": "No checklist verdicts in this run: satisfaction is shown.",
}
"""Why the page opens in a measure other than task success."""


_SWITCH_NAMES: dict[Measure, str] = {
    "task_success": "task success",
    "items_met": "items met",
    "satisfaction": "satisfaction (secondary)",
}
"""The measures as the page's switch names them in a run with checklist verdicts."""


def _episode(ep: Episode) -> dict[str, Any]:
    """An episode as the page shows it: lines with agent-turn numbers and the judged failure turn."""
    lines: list[dict[str, Any]] = []
    agent_turns = sum(1 for e in ep.events if isinstance(e, AgentMessage))
    failure = ep.verdict.failure_turn if ep.verdict is not None else None
    if failure is not None and agent_turns:
        failure = min(max(failure, 0), agent_turns - 1)  # as the train loop reads it
    agent_turn = 0
    for event in ep.events:
        if isinstance(event, CustomerMessage):
            lines.append({"who": "customer", "text": event.text, "origin": event.origin})
        elif isinstance(event, AgentMessage):
            lines.append({"who": "agent", "text": event.text, "origin": event.origin, "turn": agent_turn})
            agent_turn += 1
        elif event.type == "strategy_shown":
            if event.strategy_ids:
                lines.append({"who": "note", "text": "strategies shown: " + ", ".join(event.strategy_ids)})
        elif event.type == "role_slip":
            lines.append({"who": "note", "text": f"customer reply rejected ({event.rule}): {event.text}"})
        elif event.type == "tool_call":
            lines.append({"who": "note", "text": f"tool call {event.name}({json.dumps(event.arguments)})"})
        elif event.type == "tool_result":
            lines.append({"who": "note", "text": f"tool {event.name} returned: {event.result}"})
    return {
        "id": ep.id,
        "condition": ep.condition,
        "agent_model": ep.agent_model,
        "trial": ep.trial,
        "termination": ep.termination.value,
        "termination_detail": ep.termination_detail,
        "verdict": ep.verdict.model_dump(mode="json") if ep.verdict is not None else None,
        "judge_error": ep.judge_error,
        "simulator_fault": ep.simulator_fault,
        "failure_turn": failure,
        "color": satisfaction_color(ep.verdict.satisfaction if ep.verdict is not None else None),
        "colors": {m: scale.color(episode_score(ep, m)) for m, scale in MEASURES.items()},
        "lines": lines,
    }


def _strategy(run_dir: str | Path, s: Strategy) -> dict[str, Any]:
    data = s.model_dump(mode="json")
    data["status"] = s.status.value
    data["uplift"] = s.evidence.uplift if s.evidence is not None else None
    data["commands"] = strategy_commands(run_dir, s)
    return data


def page_data(run: RunData, *, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Everything the page embeds, as plain JSON data.

    Args:
        run: The loaded run folder.
        run_dir: The folder as the user names it in commands (default: the folder it was read from).

    Returns:
        `tree` (node-link JSON, records inlined, as saved), `view` (layout, size, badge and colours
        per node: `fill` and `ring` in the measure the page opens in, `colors` and `teacher_colors`
        per measure, `scores` and `teacher_scores` the figures behind them, `color` and
        `teacher_color` the satisfaction colours beside the panel's satisfaction means),
        `episodes` (the transcripts the nodes name, each with its colour per measure),
        `strategies` (the latest library with evidence, audit trail and commands) and `run` (name,
        folder, notes, the banner of a run with scripted models, the fingerprints of
        resolved.json, `measure` the page opens in and `measures` the ones it can switch to).
    """
    folder = run.root if run_dir is None else run_dir
    layout = tidy_layout(run.tree.graph)
    parents = {child: parent for parent, child in run.tree.graph.edges}
    scores = {node.id: node_scores(run, node) for node in run.tree.nodes()}
    first = tree_measure(scores.values())
    view: dict[str, dict[str, Any]] = {}
    episodes: dict[str, dict[str, Any]] = {}
    for node in run.tree.nodes():
        x, y = layout.positions[node.id]
        trials = run.trials(node)
        mine = scores[node.id]
        view[node.id] = {
            "x": x,
            "y": y,
            "r": node_radius(trials),
            "fill": MEASURES[first].color(mine.student[first]),
            "ring": MEASURES[first].color(mine.teacher[first]),
            "colors": {m: scale.color(mine.student[m]) for m, scale in MEASURES.items()},
            "teacher_colors": {m: scale.color(mine.teacher[m]) for m, scale in MEASURES.items()},
            "scores": dict(mine.student),
            "teacher_scores": dict(mine.teacher),
            "color": satisfaction_color(node.student_mean),
            "teacher_color": satisfaction_color(node.teacher_mean),
            "trials": trials,
            "admitted": run.admitted(node),
            "tokens": sum(u.total_tokens for u in node.usage.values()),
            "parent": parents.get(node.id),
            "children": list(run.tree.graph.successors(node.id)),
        }
        for eid in node.episode_ids:
            if eid in run.episodes:
                episodes[eid] = _episode(run.episodes[eid])
    train = run.experiment.train if run.experiment is not None else None
    return {
        "run": {
            "name": run.name,
            "folder": str(folder),
            "library_version": run.library.version,
            "threshold": train.threshold if train is not None else None,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "coachlab_version": __version__,
            "notes": run.notes,
            "dry_run": run.banner,
            "fingerprints": {r.command: r.fingerprint for r in run.record.runs()} if run.record is not None else {},
            "layout": {"width": layout.width, "depth": layout.depth},
            "scale": [list(stop) for stop in SATISFACTION_STOPS],
            "measure": first,
            "measure_note": _FIRST_BECAUSE[first],
            "measures": [
                {
                    "key": m,
                    "name": _SWITCH_NAMES[m] if first != "satisfaction" else m.replace("_", " "),
                    "label": MEASURES[m].label,
                    "scale": [list(stop) for stop in MEASURES[m].stops],
                    "low": MEASURES[m].low,
                    "high": MEASURES[m].high,
                }
                for m in available_measures(scores.values(), first=first)
            ],
        },
        "tree": run.tree.to_json(),
        "view": view,
        "episodes": episodes,
        "strategies": {s.id: _strategy(folder, s) for s in run.library.strategies},
    }


def _asset(name: str) -> str:
    return resources.files("coachlab").joinpath("templates", name).read_text(encoding="utf-8")


def render_page(run: RunData, *, run_dir: str | Path | None = None) -> str:
    """The page as one HTML string (CSS, script and data inline)."""
    script = "\n" + _asset("tree_page.js") + "\n" + MEASURE_SCRIPT + "\n"
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    parts = {
        "TITLE": html.escape(f"{run.name}: scenario tree (coachlab)"),
        "STYLE": _asset("tree_page.css") + MEASURE_STYLE,
        "SCRIPT": script,
        # The page's Content-Security-Policy runs this one script and nothing else, and allows no network.
        "SCRIPTHASH": f"'sha256-{digest}'",
        "DATA": script_json(page_data(run, run_dir=run_dir)),
    }
    # One pass: text substituted for a placeholder is never scanned again.
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], _asset("tree_page.html"))


def write_page(run: RunData, out: str | Path, *, run_dir: str | Path | None = None) -> Path:
    """Write the page to `out` (folders created); returns the path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(run, run_dir=run_dir), encoding="utf-8")
    return path
