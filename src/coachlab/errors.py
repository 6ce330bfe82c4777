"""The exceptions coachlab raises on purpose.

Every error a user can cause (a bad YAML file, a missing model, a wrong command) is a
`CoachlabError`; the CLI prints its message and exits without a traceback.
"""

from __future__ import annotations

__all__ = [
    "CoachlabError",
    "ConfigError",
    "ModelResponseError",
    "SimulationError",
    "UsageError",
]


class CoachlabError(Exception):
    """Base class of every error coachlab raises on purpose."""


class ConfigError(CoachlabError):
    """A configuration file (persona, scenario, experiment) is missing or invalid.

    The message names the file, the field (and line where YAML gives it) and what to write instead.
    """


class UsageError(CoachlabError):
    """The user asked for something that cannot be done as asked (wrong flag, missing model)."""


class SimulationError(CoachlabError):
    """An episode could not be run to the end."""


class ModelResponseError(CoachlabError):
    """A model answered, but not in the form the caller needs (unparseable judge output, say)."""
