"""Shared pydantic bases: strict about unknown fields, frozen for value objects."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

__all__ = ["Frozen", "Slug", "Text"]

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_\-]*$", max_length=80)]
"""An identifier: lowercase letters, digits, '_' and '-' (used in file names and references)."""

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
"""Non-empty text."""


class Frozen(BaseModel):
    """An immutable value object that rejects unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)
