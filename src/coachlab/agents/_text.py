"""Cleaning model output into one line of dialogue."""

from __future__ import annotations

import re

__all__ = ["clean_line", "normalize"]

_SPEAKER = r"(?:customer|agent|support(?: agent)?|assistant|representative|user|you|me)"


def clean_line(text: str, *, own_labels: tuple[str, ...], other_labels: tuple[str, ...]) -> str:
    r"""Strip a leading `Name:` label, quotes and anything past the other party's next label.

    Small models often continue the dialogue for both sides ("...\\nAgent: Sure!"); only the first
    speaker's part is kept.
    """
    labels = "|".join(re.escape(x) for x in (*own_labels, *other_labels))
    other = "|".join(re.escape(x) for x in other_labels)
    out = text.strip()
    out = re.sub(rf"^\s*\**(?:{labels}|{_SPEAKER})(?:\s*\([^)]*\))?\**\s*:\s*", "", out, flags=re.IGNORECASE)
    cut = re.search(rf"\n\s*\**(?:{other}|{_SPEAKER})(?:\s*\([^)]*\))?\**\s*:", out, flags=re.IGNORECASE)
    if cut:
        out = out[: cut.start()]
    out = "\n".join(
        x
        for x in out.splitlines()
        if not re.fullmatch(r"\s*(\*\*|\(|\[).*(\*\*|\)|\])\s*", x) or re.search(r"\[\s*(done|leave)", x, re.I)
    )
    out = out.strip()
    if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'":
        out = out[1:-1].strip()
    return re.sub(r"\n{2,}", "\n", out)


def normalize(text: str) -> str:
    """Lowercase words only, for comparing lines."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))
