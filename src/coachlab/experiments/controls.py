"""The control arms of `evaluate`: the oracle ceiling and the placebo.

- `oracle`: the held-out scenario's own checklist, one strategy per must item (not a forbidden
  one), its example line as the words to say, shown every turn. No library can know more about the
  case than its answer key, so oracle minus baseline is the most any library could do for this
  student with this prompt layout: the ceiling. The library's share of it is
  (library - baseline) / (oracle - baseline).
- `placebo`: as many strategies as the oracle, of the same form and about the same length, that fit
  none of the scenario's items: lines drawn from other scenarios' checklists (and a shipped bank of
  service lines about other matters) that share no content word with any of this scenario's items.
  Placebo minus baseline is what more text in the prompt does by itself; oracle minus placebo is
  what the content does.
- `twin`: the oracle of the held-out scenario's training twin (the training scenario of the same
  `situation`), its case facts generalised as the teacher's strategies are (`redact_case_details`:
  "camping stove" -> "the item", "NF-RS-220481" -> "the reference number"). Words learned on
  another case of the same situation, at their best: twin minus baseline is how far such words
  carry over to a new case, the ceiling of transfer.

All three are built from the scenario at each turn, with no teacher, no retrieval and no randomness, so
every trial of every student sees the same lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from coachlab.agents.drafts import StrategyDraft, redact_case_details
from coachlab.library.retrieval import content_words
from coachlab.schema import Criterion, Dialogue, Guidance, GuidanceProvider, Scenario

__all__ = [
    "ORACLE_SITUATION",
    "PLACEBO_BANK",
    "item_words",
    "oracle_guidance",
    "oracle_lines",
    "placebo_guidance",
    "placebo_lines",
    "twin_guidance",
    "twin_lines",
    "twins",
]

ORACLE_SITUATION = "When the customer raises this problem"
"""The situation every oracle and placebo strategy is shown under (one fits every turn)."""

_SAY = "Say, in your own words: "

PLACEBO_BANK: tuple[str, ...] = (
    "Our stores open at nine on weekdays and at ten on Sundays.",
    "You can change the language of the app under Settings, then Display.",
    "Gift wrapping is available at the till for a small charge.",
    "Our newsletter comes out on the first Monday of each month, and you can unsubscribe at any time.",
    "The car park behind the building is free for the first two hours.",
    "Loyalty points appear in the app within a day of a purchase.",
    "Dark mode is under Appearance in the menu at the top right.",
    "Our head office moved to a new building on the river last spring.",
    "The summer catalogue is out now, with a section on garden furniture.",
    "You can choose a nickname for your profile picture in the app.",
    "Our reception desk has umbrellas to lend on rainy days.",
    "The recipe cards in the leaflet use metric measures throughout.",
    "Volunteers from our team plant trees in the local park every autumn.",
    "The museum shop sells postcards of every painting in the collection.",
    "Our quiz night runs on the last Thursday of the month in the canteen.",
    "Pets are welcome in the garden area, as long as they stay on a lead.",
    "The font size of the website can be made larger with the button at the bottom of every page, which many "
    "readers find easier on the eyes.",
    "Our choir rehearses on Wednesday evenings, and new singers of any experience are always welcome to join us "
    "for a first session.",
)
"""Service lines about matters no shipped scenario is about: the placebo's fallback when other scenarios give too
few lines that share no word with a scenario's items."""


def _imperative(text: str) -> str:
    """A criterion text as an order: "offers to reship ..." -> "Offer to reship ..."."""
    text = text[0].upper() + text[1:]
    verb, _, rest = text.partition(" ")
    order = verb[:-1] if verb.endswith("s") and not verb.endswith("ss") else verb
    return f"{order} {rest}".rstrip(".") + "."


def _must_items(scenario: Scenario) -> list[Criterion]:
    return [c for c in scenario.success_criteria if c.level == "must" and not c.forbidden]


def oracle_lines(scenario: Scenario, kind: Literal["example", "imperative"] = "example") -> list[Guidance]:
    """One strategy per must item of the scenario's checklist (none without a checklist).

    `example`: the item's example line as words to say ("Say, in your own words: ..."), or the item
    as an order when it has no example; `imperative`: the item as an order ("Offer to reship the
    order by free express delivery."), the form the teacher's strategies take.
    """
    out: list[Guidance] = []
    for c in _must_items(scenario):
        text = _SAY + c.example if kind == "example" and c.example else _imperative(c.text)
        out.append(Guidance(id=f"oracle-{c.id}", situation=ORACLE_SITUATION, guidance=text))
    return out


def oracle_guidance() -> GuidanceProvider:
    """The `oracle` condition: the scenario's must items' example lines, every turn."""

    async def provide(scenario: Scenario, _: Dialogue) -> Sequence[Guidance]:
        return oracle_lines(scenario)

    return provide


def item_words(scenario: Scenario) -> set[str]:
    """The content words of every checklist item of the scenario: its text and all its example lines."""
    words: set[str] = set()
    for c in scenario.success_criteria:
        words |= content_words(c.text)
        for line in c.all_examples:
            words |= content_words(line)
    return words


def placebo_lines(scenario: Scenario, pool: Iterable[str]) -> list[Guidance]:
    """As many strategies as `oracle_lines(scenario)`, each of its form and about its length, fitting no item.

    Candidates are the lines of `pool` and then `PLACEBO_BANK` that share no content word
    (`content_words`) with any of the scenario's items (`item_words`); each oracle line gets the
    unused candidate closest to it in length (ties: the earlier candidate). When fewer candidates
    than oracle lines are left, the placebo is that much shorter.
    """
    banned = item_words(scenario)
    candidates = [
        line for line in dict.fromkeys([*pool, *PLACEBO_BANK]) if line.strip() and not content_words(line) & banned
    ]
    out: list[Guidance] = []
    for n, oracle in enumerate(oracle_lines(scenario), start=1):
        if not candidates:
            break
        target = len(oracle.guidance) - len(_SAY)
        best = min(candidates, key=lambda line: abs(len(line) - target))
        candidates.remove(best)
        out.append(Guidance(id=f"placebo-{n}", situation=ORACLE_SITUATION, guidance=_SAY + best))
    return out


def placebo_guidance(scenarios: Sequence[Scenario]) -> GuidanceProvider:
    """The `placebo` condition: `placebo_lines` drawn from the other scenarios' must items' example lines."""

    def pool(scenario: Scenario) -> list[str]:
        return [
            c.example
            for other in scenarios
            if other.id != scenario.id and (scenario.situation is None or other.situation != scenario.situation)
            for c in _must_items(other)
            if c.example
        ]

    cache: dict[str, list[Guidance]] = {}

    async def provide(scenario: Scenario, _: Dialogue) -> Sequence[Guidance]:
        if scenario.id not in cache:
            cache[scenario.id] = placebo_lines(scenario, pool(scenario))
        return cache[scenario.id]

    return provide


def twins(held_out: Sequence[Scenario], training: Sequence[Scenario]) -> dict[str, Scenario]:
    """Each held-out scenario's training twin: the first training scenario of its `situation` with a must item."""
    out: dict[str, Scenario] = {}
    for scenario in held_out:
        if scenario.situation is None:
            continue
        twin = next((t for t in training if t.situation == scenario.situation and oracle_lines(t)), None)
        if twin is not None and twin.id != scenario.id:
            out[scenario.id] = twin
    return out


def twin_lines(twin: Scenario) -> list[Guidance]:
    """The twin's oracle lines with its case facts generalised (`redact_case_details` against the twin)."""
    out: list[Guidance] = []
    for g in oracle_lines(twin):
        general = redact_case_details(StrategyDraft(situation=g.situation, guidance=g.guidance), twin)
        out.append(Guidance(id=g.id.replace("oracle-", "twin-", 1), situation=g.situation, guidance=general.guidance))
    return out


def twin_guidance(pairs: Mapping[str, Scenario]) -> GuidanceProvider:
    """The `twin` condition: `twin_lines` of the held-out scenario's twin in `pairs` (by held-out id), every turn."""
    lines = {sid: twin_lines(twin) for sid, twin in pairs.items()}

    async def provide(scenario: Scenario, _: Dialogue) -> Sequence[Guidance]:
        return lines.get(scenario.id, [])

    return provide
