"""Checks on a line's own words that need no judge: the amount an item names, the code it asks for.

Some items are about a number or a code: "applies a courtesy credit of half the roaming charges
($74)", "gives a reference number for the refund". A small judge gets these wrong in both
directions (it credits "I've credited $148" for the $74 credit, and "a reference will follow" for a
reference number), while the words give them away. `fits` is a veto, never a credit: a line that
names money amounts, none of them one the item names, cannot show that item; and a line with no
code-like token cannot give the reference, confirmation, tag or case number an item asks for. Lines
that pass still need the judge's yes (or the item's `pattern`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from coachlab.schema import Criterion

__all__ = ["asks_for_code", "fits", "has_code", "money_amounts"]

_MONEY = re.compile(r"[$€£]\s?(\d{1,3}(?:,\d{3})+|\d+)(\.\d{1,2})?(?!\d)")
# An item that asks for a code: "a reference number", "the new confirmation number", "a claim reference".
_ASKS_CODE = re.compile(
    r"\b(reference|confirmation|tag|booking|case|claim|ticket|job|tracking)\s+(number|no|code|id|reference)\b"
    r"|\b(gives|give|with)\s+(a|an|the)\s+(new\s+)?([a-z]+\s+)?reference\b",
    re.IGNORECASE,
)
# A code-like token: letters and digits joined by dashes ("RS-48213-0612"), capitals then digits ("LK4471"),
# "#" and digits, or six digits and more.
_CODE = re.compile(
    r"(?<![\w-])(?=[A-Za-z0-9-]*\d)[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+(?![\w-])"
    r"|\b[A-Z]{1,5}\d{3,}[A-Z0-9]*\b"
    r"|#\d{3,}\b"
    r"|\b\d{6,}\b"
)


def money_amounts(text: str) -> frozenset[Decimal]:
    """The money amounts written with a currency sign in `text` ("$5.99", "$1,200", "€25" -> 5.99, 1200, 25)."""
    found: set[Decimal] = set()
    for whole, cents in _MONEY.findall(text):
        try:
            found.add(Decimal(whole.replace(",", "") + cents))
        except InvalidOperation:  # pragma: no cover - the pattern only admits digits
            continue
    return frozenset(found)


def has_code(text: str) -> bool:
    """True when `text` holds a code-like token (a reference, tag or confirmation number)."""
    return _CODE.search(text) is not None


def asks_for_code(criterion: Criterion) -> bool:
    """True when the item is about giving a reference, confirmation, tag or case number."""
    return _ASKS_CODE.search(criterion.text) is not None


def fits(criterion: Criterion, line: str) -> bool:
    """False when the line's own words rule the item out; True otherwise (the judge decides).

    Ruled out: the item names money amounts and the line names others only, or the item asks for a
    code and the line holds none.
    """
    named = money_amounts(criterion.text)
    if named:
        said = money_amounts(line)
        if said and not said & named:
            return False
    return not (asks_for_code(criterion) and not has_code(line))
