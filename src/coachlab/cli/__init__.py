"""The `coachlab` command line: one module per command group, gathered by `coachlab.cli.app`.

The commands are the outermost layer: they read files, wire the parts of the other packages
together and print; nothing else in coachlab imports this package. See docs/architecture.md.
"""

from __future__ import annotations

from coachlab.cli.app import app, main, stop_on_sigterm

__all__ = ["app", "main", "stop_on_sigterm"]
