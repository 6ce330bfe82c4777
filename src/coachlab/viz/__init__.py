"""Pictures of a run: the interactive tree page, the static tree picture and the experiment report.

All three read a run folder through `load_run`, so they show the same saved tree, library and
results. The names below load on first use: `coachlab.cli.viz` is imported by the command line
at start-up and must not pull in matplotlib and the run readers before a command needs them.

The map of the packages is docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coachlab.viz.layout import TreeLayout, node_radius, satisfaction_color, tidy_layout
    from coachlab.viz.page import page_data, render_page, script_json, strategy_commands, write_page
    from coachlab.viz.png import tree_figure, write_tree_png
    from coachlab.viz.report import Report, ReportFiles, build_report, write_report
    from coachlab.viz.run import RoleCost, RunData, load_run, role_costs

__all__ = [
    "Report",
    "ReportFiles",
    "RoleCost",
    "RunData",
    "TreeLayout",
    "build_report",
    "load_run",
    "node_radius",
    "page_data",
    "render_page",
    "role_costs",
    "satisfaction_color",
    "script_json",
    "strategy_commands",
    "tidy_layout",
    "tree_figure",
    "write_page",
    "write_report",
    "write_tree_png",
]

_HOME = {
    **dict.fromkeys(("TreeLayout", "node_radius", "satisfaction_color", "tidy_layout"), "layout"),
    **dict.fromkeys(("page_data", "render_page", "script_json", "strategy_commands", "write_page"), "page"),
    **dict.fromkeys(("tree_figure", "write_tree_png"), "png"),
    **dict.fromkeys(("Report", "ReportFiles", "build_report", "write_report"), "report"),
    **dict.fromkeys(("RoleCost", "RunData", "load_run", "role_costs"), "run"),
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'coachlab.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(f"coachlab.viz.{_HOME[name]}"), name)
