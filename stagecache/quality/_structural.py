"""Cheap structural checks: do two queries differ in a way that changes the answer?

Each check compares the query with a cached query and reports a mismatch that an
embedding model is known to miss: a negation, a changed number, date, version or
unit, a swapped named entity, a swapped direction ("from A to B" / "from B to A")
or a different ask on the same topic ("install" / "uninstall"). The checks are
rules over a light tokenisation (no model): they run in tens of microseconds.

A negation is read against the other text: "non-X" and "in the absence of X"
negate X when the other text speaks of X, and "without X" between two statements
counts only when the other names X (see ``_negations``). A direction swap needs a
direction marker between the two words that traded roles (``_roles_swapped``).

:func:`analyse` (in :mod:`stagecache.quality._parse`, re-exported here) parses a
text once into a :class:`Parsed` value;
:func:`compare` runs every check on two parsed texts and returns a
:class:`Checks` value that the learned verifier also reads as features.
"""

from __future__ import annotations

from dataclasses import dataclass

from stagecache.quality._lexicon import _ANTONYM_PAIRS, _STRICT_WH
from stagecache.quality._parse import Parsed, _stem, analyse, tokenize

__all__ = ["CHECK_NAMES", "Checks", "Parsed", "analyse", "compare", "tokenize"]

CHECK_NAMES = (
    "negation",
    "number",
    "date",
    "version",
    "unit",
    "entity",
    "direction",
    "different_ask",
)


@dataclass(frozen=True, slots=True)
class Checks:
    """The outcome of every structural check on one pair of queries.

    Hard flags (a mismatch that changes the answer) are the fields named in
    :data:`CHECK_NAMES`; the ``*_one_sided`` fields are soft signals (one query says
    something the other leaves out) that only the learned verifier uses.
    """

    negation: bool
    number: bool
    date: bool
    version: bool
    unit: bool
    entity: bool
    direction: bool
    different_ask: bool
    number_one_sided: bool
    date_one_sided: bool
    entity_one_sided: int
    wh_mismatch: bool

    def first_failure(self) -> str | None:
        """The name of the first hard check that failed, or None."""
        for name in CHECK_NAMES:
            if getattr(self, name):
                return name
        return None


# Fuzzy checks (entities, negation, direction, different ask) are for queries;
# long statements carry many facts and reword them freely.
_SHORT = 40
# texts of at least this many tokens sharing less than this share of their words
# are rewordings (see ``compare``)
_REWORD_TOKENS = 15
_REWORD_OVERLAP = 0.5
# texts of at least this many tokens that are not questions are statements (see
# ``_negations``)
_STATEMENT_TOKENS = 10
# a swap of key terms needs this many shared words, and this share of all words
_SWAP_MIN_SHARED = 6
_SWAP_OVERLAP = 0.75
_SWAP_MIDDLE = 2


def _entities_matched(x: Parsed, y: Parsed) -> frozenset[str]:
    # An entity also counts as present when the other text has it in lower case or
    # spelled with other spacing ("Hugging Face" / "Huggingface").
    squashed = "".join(y.tokens).replace("-", "")
    return frozenset(
        e
        for e in x.entities
        if e not in y.entities
        and e not in y.tokens
        and _stem(e) not in y.stems
        and e.replace("-", "") not in squashed
    )


def _swapped(a: Parsed, b: Parsed) -> bool:
    """Two key terms (or short phrases) traded places, all else the same.

    "Light reactions happen in the stroma, the Calvin cycle in the thylakoid" /
    "... in the thylakoid, ... in the stroma"; "flying west is harder than flying
    east" / "... east ... west". Over the words both texts share, one text must be
    the other with two segments of 1-3 words exchanged and at least two words
    between them ("difference between A and B" / "... B and A" is symmetric, and
    "better, A or B" / "better B or A" a reordered list).
    """
    shared = set(a.order) & set(b.order)
    if len(shared) < _SWAP_MIN_SHARED or len(shared) < _SWAP_OVERLAP * len(
        set(a.order) | set(b.order)
    ):
        return False
    ua = [w for w in a.order if w in shared]
    ub = [w for w in b.order if w in shared]
    if len(ua) != len(ub) or ua == ub:
        return False
    diff = [i for i, (x, y) in enumerate(zip(ua, ub, strict=True)) if x != y]
    p, q = diff[0], diff[-1] + 1
    for l1 in range(1, 4):
        for l2 in range(1, 4):
            if p + l1 + _SWAP_MIDDLE > q - l2:  # words must stand between them
                continue
            s1, s2 = ua[p : p + l1], ua[q - l2 : q]
            if set(s1) & set(s2):
                continue
            if ua[:p] + s2 + ua[p + l1 : q - l2] + s1 + ua[q:] == ub:
                return True
    return False


def _marker_between(x: Parsed, i: int, j: int) -> bool:
    lo, hi = min(i, j), max(i, j)
    return any(lo < m < hi for m in x.markers)


def _roles_swapped(a: Parsed, b: Parsed) -> bool:
    """Two shared words whose roles traded places across a direction marker
    ("from A to B" / "from B to A", "A faster than B" / "B faster than A"). Words
    of one phrase that merely changed order ("from your GitLab account" / "from
    your account on GitLab") have no marker between them and do not count."""
    at_a = {w: (r, k) for w, r, k in a.roles}
    at_b = {w: (r, k) for w, r, k in b.roles}
    moved = [
        (w, at_a[w][0], at_b[w][0])
        for w in at_a
        if w in at_b and at_a[w][0] != at_b[w][0]
    ]
    for w1, ra1, rb1 in moved:
        for w2, ra2, rb2 in moved:
            if (ra2, rb2) != (rb1, ra1):
                continue
            if _marker_between(a, at_a[w1][1], at_a[w2][1]) or _marker_between(
                b, at_b[w1][1], at_b[w2][1]
            ):
                return True
    return False


def _negations(x: Parsed, y: Parsed, statements: bool) -> int:
    """``x``'s negation count as read against ``y``.

    "non-X" and "in the absence of X" negate X when ``y`` speaks of X ("in
    non-streaming mode" / "without streaming"). Between two statements, "without
    X" is a detail, not a denial, when ``y`` never mentions X ("infers the label
    without any manual input" / "automatically infers the label"); in a question
    it narrows what is asked ("lose weight without exercise?") and always counts.
    """
    n = x.negations
    if not x.scoped:
        return n
    words = y.stems | {_stem(p) for t in y.tokens if "-" in t for p in t.split("-")}
    for kind, word in x.scoped:
        if kind == "extra" and word in words:
            n += 1
        elif kind == "without" and statements and word not in words:
            n -= 1
    return n


def compare(a: Parsed, b: Parsed) -> Checks:
    """Run every structural check on two parsed queries."""
    statements = not (a.question or b.question) and (
        min(len(a.tokens), len(b.tokens)) >= _STATEMENT_TOKENS
    )
    negation = (_negations(a, b, statements) % 2) != (_negations(b, a, statements) % 2)
    version = bool(a.versions or b.versions) and a.versions != b.versions
    number = bool(a.numbers and b.numbers) and a.numbers != b.numbers and not version
    if not number and not version and (a.numbers or b.numbers):
        # a number on one side only is a change when the other side has a different
        # quantity word for the same slot ("a 650 score" vs "a good score")
        number = False
    date = bool(a.dates and b.dates) and a.dates != b.dates
    unit = False
    if a.units and b.units:
        unit = frozenset(a.units) != frozenset(b.units) or (
            bool(a.source_units and b.source_units) and a.source_units != b.source_units
        )
    short = len(a.tokens) <= _SHORT and len(b.tokens) <= _SHORT
    # A statement reworded as a whole ("without copying" / "zero-copy", "not
    # mandatory" / "optional") flips the negation count with the meaning kept; in a
    # long text a negation or a swap only counts between near-identical wordings.
    reworded = min(len(a.tokens), len(b.tokens)) >= _REWORD_TOKENS and len(
        a.stems & b.stems
    ) < _REWORD_OVERLAP * len(a.stems | b.stems)
    if not short or reworded:
        negation = False
    only_a = _entities_matched(a, b)
    only_b = _entities_matched(b, a)
    entity = False
    if only_a and only_b and short and len(only_a) <= 3 and len(only_b) <= 3:
        # a swap: the words around the entities are mostly the same
        ents = a.entities | b.entities
        ca, cb = a.stems - ents, b.stems - ents
        entity = len(ca & cb) >= 0.5 * max(len(ca | cb), 1)
    direction = short and not reworded and _roles_swapped(a, b)
    if not direction:
        direction = _swapped(a, b)
    diff_a = a.stems - b.stems
    diff_b = b.stems - a.stems
    different_ask = any((x, y) in _ANTONYM_PAIRS for x in diff_a for y in diff_b)
    if not different_ask:
        raw_a = a.content - b.content
        raw_b = b.content - a.content
        different_ask = any((x, y) in _ANTONYM_PAIRS for x in raw_a for y in raw_b)
    different_ask = different_ask and short
    if not different_ask:
        different_ask = a.wh in _STRICT_WH and b.wh in _STRICT_WH and a.wh != b.wh
    if not different_ask:
        # "In what year was X discovered?" / "Who discovered X?"
        # ("who won the cup" is answered by a country: person and place may agree)
        different_ask = (
            short
            and bool(a.ask and b.ask)
            and a.ask != b.ask
            and {a.ask, b.ask} != {"person", "place"}
        )
    return Checks(
        negation=negation,
        number=number,
        date=date,
        version=version,
        unit=unit,
        entity=entity,
        direction=direction,
        different_ask=different_ask,
        number_one_sided=bool(a.numbers) != bool(b.numbers),
        date_one_sided=bool(a.dates) != bool(b.dates),
        entity_one_sided=len(only_a) + len(only_b),
        wh_mismatch=a.wh != b.wh,
    )
