"""What the teacher writes as a strategy, and the checks a draft passes before it can be one.

A draft is a situation, one action and the words to say for it. `redact_case_details` replaces the
case's facts in it by what they are (a code, a date, the item); `draft_problem` says why a draft
still cannot be a strategy: it quotes the case, the chat or a private fact, orders a forbidden
item, narrates what the expert did, or leaves the situation unwritten. Plain functions of the text
and the scenario, so they are tested without a model.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from coachlab.schema import Dialogue, Scenario

__all__ = [
    "StrategyDraft",
    "StrategyDrafts",
    "draft_problem",
    "leaked_detail",
    "private_details",
    "redact_case_details",
]

logger = logging.getLogger(__name__)


class StrategyDraft(BaseModel):
    """A candidate strategy as the teacher writes it."""

    model_config = ConfigDict(extra="forbid")

    situation: str = Field(description="When it applies, starting 'When the customer ...'.")
    guidance: str = Field(description="One action in the imperative.")
    # Folded into the guidance ('... Say: "..."'): a 0.5B student given only the action did not do it,
    # given the words it did (benchmarks/follows_guidance.py).
    say: str = Field(default="", description="The words the agent says for it, in general terms.")

    def folded(self) -> StrategyDraft:
        """The draft with its words to say appended to the guidance (what the student is shown)."""
        say = self.say.strip().strip('"').strip()
        if not say:
            return self.model_copy(update={"say": ""})
        action = self.guidance.strip().rstrip(".")
        return StrategyDraft(situation=self.situation, guidance=f'{action}. Say: "{say}"')


class StrategyDrafts(BaseModel):
    """The teacher's candidate strategies for one failure."""

    model_config = ConfigDict(extra="forbid")

    strategies: list[StrategyDraft] = Field(min_length=1, max_length=5)


_WORDS = re.compile(r"[a-z][a-z'-]+|\d[\d.,/:-]*\d|\d")
_FILLER = frozenset(("a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "for", "with", "by", "from", "is"))


_MONEY = re.compile(r"[$\u00a3\u20ac]\s?(\d+)(?:[.,](\d\d))?(?!\d)")


def _money(scenario: Scenario) -> list[tuple[re.Pattern[str], str]]:
    """(pattern, field name) for each money amount of the case's facts: "$65.00" is "$65" too, written either way."""
    found: list[tuple[re.Pattern[str], str]] = []
    for key, value in scenario.facts.items():
        for whole, cents in _MONEY.findall(str(value)) if not isinstance(value, bool) else []:
            tail = r"(?:[.,]00)?" if cents in ("", "00") else rf"[.,]{cents}"
            pattern = re.compile(rf"[$\u00a3\u20ac]\s?{whole}{tail}(?![\d])")
            found.append((pattern, key.replace("_", " ").strip().lower()))
    return found


def _detail_phrases(value: str) -> list[str]:
    """The fragments of a case fact that only this case would mention.

    The whole value; every number of three or more digits; and every pair of adjacent content
    words ("cookware set", "sage green") - single words are left alone, since a general strategy
    may well say "delayed" or "refund".
    """
    words = [w for w in _WORDS.findall(value.lower()) if w not in _FILLER]
    numbers = [w for w in words if sum(c.isdigit() for c in w) >= 3]
    pairs = [f"{a} {b}" for a, b in itertools.pairwise(words) if not (a[0].isdigit() or b[0].isdigit())]
    return [value.lower().strip(), *numbers, *pairs]


_CAPITALISED = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]{2,}\b")
_NUMBER = re.compile(r"\$?\d+(?:[.,:]\d+)*(?:\s?(?:am|pm))?", re.IGNORECASE)


def private_details(scenario: Scenario, *, pairs: bool = False) -> list[str]:
    """Fragments of the persona's private fields that the public case does not also say.

    Names and days (capitalised words inside a sentence: "Saturday", "Boston") and numbers ("$20",
    "9am"); with `pairs`, also adjacent content-word pairs ("family event", "birthday gift"), which
    are too common to refuse in a strategy but give a title away.
    """
    p = scenario.persona
    private = [p.goal, p.satisfied_when, p.gives_up_when or "", *p.hidden_constraints]
    public = " ".join(
        [
            scenario.issue,
            scenario.company,
            scenario.opening_line or "",
            *scenario.policy,
            *map(str, scenario.facts.values()),
        ]
    ).lower()
    found: list[str] = []
    for text in private:
        for sentence in re.split(r"(?<=[.!?;])\s+", text):
            found += [m.group(0) for m in _CAPITALISED.finditer(sentence)]
            found += [m.group(0).strip() for m in _NUMBER.finditer(sentence)]
            if pairs:
                found += _detail_phrases(sentence)[1:]
    return [f for f in dict.fromkeys(found) if len(f) >= 2 and f.lower() not in public]


def leaked_detail(draft: StrategyDraft, scenario: Scenario, *, public: Sequence[str] = ()) -> str | None:
    """A case detail that a strategy quotes, or None.

    Strategies must generalise: one that names the customer or the company (or its first word, the
    brand), quotes a fact of the case (an order number, an amount, "sage green"), or names a private
    fact of the persona (a day, a place, an amount) or four of its private words in a row is rejected,
    unless those words are also in `public` (what the agent could read: the chat) or the public case.
    """
    text = " ".join(w for w in _WORDS.findall(f"{draft.situation} {draft.guidance}".lower()) if w not in _FILLER)
    details = [
        *(n.lower() for n in scenario.persona.name.split()),
        *([scenario.company.lower(), scenario.company.split()[0].lower()] if scenario.company != "the company" else []),
        *(p for v in scenario.facts.values() if not isinstance(v, bool) for p in _detail_phrases(str(v))),
        *(d.lower() for d in private_details(scenario)),
    ]
    for pattern, _ in _money(scenario):
        if (m := pattern.search(f"{draft.situation} {draft.guidance}")) is not None:
            return m.group(0)
    for detail in details:
        d = " ".join(w for w in _WORDS.findall(detail) if w not in _FILLER)
        if len(d) >= 4 and re.search(rf"(?<![\w-]){re.escape(d)}(?![\w-])", text):
            return detail
    return _copied_private(text, scenario, public)


_DETERMINERS = frozenset(("the", "a", "an", "your", "his", "her", "their", "its", "this", "that", "our", "my"))


def _phrase_pattern(words: Sequence[str], left: Sequence[str] = (), right: Sequence[str] = ()) -> re.Pattern[str]:
    """A phrase's words in order (fillers and punctuation between them allowed), grown by `left` and `right` words."""
    gap = rf"(?:\W+(?:{'|'.join(sorted(_FILLER))}))*\W+"

    def alternatives(grow: Sequence[str]) -> str:
        return "|".join(re.escape(w.strip("'-")) for w in sorted(set(grow), key=len, reverse=True))

    body = gap.join(re.escape(w.strip("'-")) for w in words)
    before = rf"(?:(?:{alternatives(left)}){gap})*" if left else ""
    after = rf"(?:{gap}(?:{alternatives(right)}))*" if right else ""
    return re.compile(rf"(?<![\w-])[$£€]?{before}{body}{after}(?![\w-])", re.IGNORECASE)


def _replace(text: str, pattern: re.Pattern[str], name: str) -> str:
    """Every match of `pattern` in `text` becomes `name` ("the item"; "item" after a determiner: "his (new) item")."""

    def sub(m: re.Match[str]) -> str:
        before = text[: m.start()].rstrip()
        words = re.findall(r"[A-Za-z]+", before)
        owned = before.endswith(("'s", "s'", "\u2019s"))
        tokens = before.lower().split()[-2:]
        # "item" right after a determiner, or after one and an adjective ("a new item"); else "the item"
        modified = len(tokens) == 2 and tokens[0] in _DETERMINERS and tokens[1].isalpha() and tokens[1] not in _FILLER
        return name if owned or (words and words[-1].lower() in _DETERMINERS) or modified else f"the {name}"

    return pattern.sub(sub, text)


def redact_case_details(draft: StrategyDraft, scenario: Scenario) -> StrategyDraft:
    """The draft with this case's public details replaced by what they are.

    A small teacher writes "When the customer's cookware set is late, reship the cookware set":
    good guidance that names the case. Each fact of the case becomes its field's name ("cookware
    set" -> "the item", "order A-100" -> "the order number"), the persona's name "the customer" and
    the company "the company", so the strategy generalises and keeps its action. Private facts of
    the persona (a day, a place, the goal's words) have no field name: `leaked_detail` still refuses them.
    """
    situation, guidance = _redact_text(draft.situation, scenario), _redact_text(draft.guidance, scenario)
    if (situation, guidance) != (draft.situation, draft.guidance):
        logger.debug("redacted case details: %r -> %r", draft.model_dump(), (situation, guidance))
    return StrategyDraft(situation=situation, guidance=guidance)


def _swaps(scenario: Scenario) -> list[tuple[int, re.Pattern[str], str]]:
    """(length, pattern, name) for each public detail of the case, longest first."""
    swaps: list[tuple[int, re.Pattern[str], str]] = []
    for key, value in scenario.facts.items():
        if isinstance(value, bool):
            continue
        name = key.replace("_", " ").strip().lower()
        value_words = [w for w in _WORDS.findall(str(value).lower()) if w not in _FILLER]
        key_words = [w for w in _WORDS.findall(name) if w not in _FILLER]
        for phrase in _detail_phrases(str(value)):
            words = [w for w in _WORDS.findall(phrase) if w not in _FILLER]
            if words and len(" ".join(words)) >= 4:
                pattern = _phrase_pattern(words, left=[*value_words, *key_words], right=value_words)
                swaps.append((len(" ".join(words)), pattern, name))
    names = [w for w in _WORDS.findall(scenario.persona.name.lower()) if len(w) >= 3]
    swaps += [(len(n), _phrase_pattern([n], right=names), "customer") for n in names]
    if scenario.company != "the company":
        company = [w for w in _WORDS.findall(scenario.company.lower()) if w not in _FILLER]
        if company:
            swaps.append((len(" ".join(company)), _phrase_pattern(company[:1], right=company[1:]), "company"))
    return sorted(swaps, key=lambda s: -s[0])


_CODE = re.compile(r"(?<![\w-])(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9]+(?:-[A-Z0-9]+)+(?![\w-])")
"""A reference code: capitals and digits in hyphenated parts ("NF-RS-220481", "RF-QZ81L")."""
_ISO_DATE = re.compile(r"(?<![\w-])\d{4}-\d\d-\d\d(?![\w-])")
_THING_KEYS = ("item", "product", "device", "model", "hotel", "plan")
"""Fact fields whose value ends in the thing's own noun ("... camping stove"): that noun alone names the case too."""


def _head_nouns(scenario: Scenario) -> list[tuple[re.Pattern[str], str]]:
    """(pattern, field name) for the last word of each thing-like fact ("stove" of "Trailblaze camping stove")."""
    found: list[tuple[re.Pattern[str], str]] = []
    for key, value in scenario.facts.items():
        name = key.replace("_", " ").strip().lower()
        if isinstance(value, bool) or not any(k in name.split() for k in _THING_KEYS):
            continue
        words = re.findall(r"[a-z]{4,}", str(value).lower().split(",")[0])
        if words:
            found.append((re.compile(rf"(?<![\w-]){re.escape(words[-1])}s?(?![\w-])", re.IGNORECASE), name))
    return found


def _redact_text(text: str, scenario: Scenario) -> str:
    for _, pattern, name in _swaps(scenario):
        text = _replace(text, pattern, name)
    for pattern, name in [*_money(scenario), *_head_nouns(scenario)]:
        text = _replace(text, pattern, name)
    text = _replace(text, _CODE, "reference number")  # the student gives the one in its own records
    return _replace(text, _ISO_DATE, "date")


_SPAN = 4
"""Content words in a row that a strategy may not copy from a private field of the persona."""


def _copied_private(text: str, scenario: Scenario, public: Sequence[str] = ()) -> str | None:
    """A run of `_SPAN` content words copied from the persona's goal, constraints or `satisfied_when`.

    The hindsight teacher reads them; a strategy that repeats them ("a date that fits her deadline and a
    reference number") is written for this customer, not for a situation the agent can see. A run the
    agent could read too (in `public`: the chat, where the customer may have said it) is not private.
    """
    p = scenario.persona
    words = f" {text} "
    seen = " ".join(
        f" {' '.join(w for w in _WORDS.findall(t.lower()) if w not in _FILLER)} "
        for t in [*public, scenario.issue, scenario.opening_line or "", *scenario.policy]
    )
    for field in [p.goal, p.satisfied_when, p.gives_up_when or "", *p.hidden_constraints]:
        content = [w for w in _WORDS.findall(field.lower()) if w not in _FILLER]
        for i in range(len(content) - _SPAN + 1):
            run = " ".join(content[i : i + _SPAN])
            if f" {run} " in words and f" {run} " not in seen:
                return run
    return None


_QUOTE_SPAN = 5
"""Content words in a row that a strategy may not copy from the chat (a quote, not a kind of moment)."""


def _quotes_chat(text: str, dialogue: Dialogue, scenario: Scenario, span: int = _QUOTE_SPAN) -> str | None:
    """A run of `span` content words that `text` (redacted) shares with a line of the chat (redacted alike)."""
    words = [w for w in _WORDS.findall(text.lower()) if w not in _FILLER]
    said = {
        " ".join(run)
        for _, line in dialogue
        for run in _runs([w for w in _WORDS.findall(_redact_text(line, scenario).lower()) if w not in _FILLER], span)
    }
    return next((" ".join(run) for run in _runs(words, span) if " ".join(run) in said), None)


def _runs(words: Sequence[str], size: int) -> list[Sequence[str]]:
    return [words[i : i + size] for i in range(len(words) - size + 1)]


_LABELS = re.compile(r"\b(would have been satisfied|in hindsight|the reviewer|junior agent)\b", re.IGNORECASE)


def draft_problem(
    draft: StrategyDraft, scenario: Scenario, dialogue: Dialogue, *, situation: bool = True
) -> str | None:
    """Why a (redacted) draft cannot be a strategy, or None: a case detail, a quote, a narration, our own labels.

    With `situation` False, only what the guidance says is checked (the situation is to be rewritten).
    """
    leaked = leaked_detail(draft, scenario, public=[line for _, line in dialogue])
    if leaked is not None:
        return f"quoted {leaked!r}"
    quoted = _quotes_chat(f"{draft.situation} {draft.guidance}", dialogue, scenario)
    if quoted is not None:
        return f"quoted the chat ({quoted!r})"
    repeated = _quotes_chat(draft.situation, [("agent", draft.guidance)], scenario)
    if repeated is not None:
        return f"repeated the guidance in the situation ({repeated!r})"
    for c in scenario.success_criteria:
        if c.forbidden and (
            c.matches(draft.guidance) or _quotes_chat(draft.guidance, [("agent", c.text)], scenario, 4)
        ):
            return f"told the agent to do what it must never do ({c.id})"
    if _descriptive(draft):
        return "described the expert"
    if not situation:
        return None
    if _LABELS.search(draft.situation):
        return "copied the prompt's labels"
    if _vague(draft.situation):
        return "left the situation unwritten"
    if _QUOTED.search(draft.situation):
        return "quoted the customer in the situation"
    if _AMOUNT.search(draft.situation):
        return "named an amount in the situation"
    return None


def _vague(situation: str) -> bool:
    """A situation with nothing the agent could recognise: "When the customer ...", "When the customer"."""
    said = [w for w in _WORDS.findall(situation.lower()) if w not in _FILLER | {"when", "customer", "agent"}]
    return "..." in situation or "\u2026" in situation or not said


_QUOTED = re.compile(r"(?:^|[\s(:])['\"\u201c\u2018][^'\"\u201d\u2019]{3,}['\"\u201d\u2019](?=$|[\s.,;:!?)])")
"""Words in quotes ("When the customer says 'My bill is $193!'"): this chat's words, not a kind of moment."""
_AMOUNT = re.compile(r"[$\u00a3\u20ac]\s?\d")
"""A money amount: the customer's own figure (which it may have invented), never one that recurs."""


_DESCRIPTIVE = re.compile(
    r"\b(the expert|the junior|the agent (did|could have|should have)|could have|improvement over|previous turns)\b",
    re.IGNORECASE,
)


def _descriptive(draft: StrategyDraft) -> bool:
    """Guidance that narrates ("The expert provided ...", "the junior could have ...") instead of instructing."""
    return bool(_DESCRIPTIVE.search(draft.guidance))
