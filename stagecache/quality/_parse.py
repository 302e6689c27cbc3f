"""Parse a text once for every structural check: tokens, numbers, dates, units,
versions, entities, negations, roles and the kind of answer it asks for.

:func:`analyse` returns a :class:`Parsed` value; :func:`tokenize` is the light
tokenisation (lower case, contractions expanded) every check shares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stagecache.quality._lexicon import (
    _ASK_PATTERNS,
    _CONTRACTIONS,
    _DATE_MODIFIERS,
    _DAYS,
    _DIRECTION_MARKERS,
    _INTERJECTION,
    _MONTH_IDS,
    _MONTHS,
    _NEGATION_FILLER,
    _NEGATIONS,
    _NUMBER_WORDS,
    _ORDINALS,
    _PERIODS,
    _QUESTION_OPENERS,
    _RAW_TOKEN,
    _ROMAN,
    _STRICT_WH,
    _TOKEN,
    _UNIT_ONLY_WITH_NUMBER,
    _UNITS,
    _VERSION,
    STOPWORDS,
)

__all__ = ["Parsed", "analyse", "tokenize"]


def _ask(tokens: list[str]) -> str:
    text = " ".join(tokens)
    for kind, pattern in _ASK_PATTERNS:
        if pattern.match(text):
            return kind
    return ""


def _normalise(text: str) -> str:
    out = text.lower().replace("\u2019", "'")
    for pattern, repl in _CONTRACTIONS:
        out = pattern.sub(repl, out)
    return out


def tokenize(text: str) -> list[str]:
    """Lower-case word and number tokens, contractions expanded."""
    return _TOKEN.findall(_normalise(text))


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "es", "s", "ed"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _number(token: str) -> float | None:
    t = token.lstrip("$").rstrip("%k")
    for suffix in ("st", "nd", "rd", "th", "pm", "am"):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
    t = t.replace(",", "")
    if ":" in t:
        t = t.split(":", 1)[0]
    try:
        return float(t)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Parsed:
    """A query parsed once for every check (see :func:`analyse`)."""

    tokens: tuple[str, ...]
    content: frozenset[str]
    stems: frozenset[str]
    negations: int
    numbers: frozenset[float]
    versions: frozenset[str]
    dates: frozenset[str]
    units: tuple[str, ...]
    source_units: frozenset[str]
    entities: frozenset[str]
    wh: str
    # (stemmed word, its direction role, its token index)
    roles: tuple[tuple[str, str, int], ...]
    ask: str = ""
    # the content words (stemmed) in text order
    order: tuple[str, ...] = ()
    # the token index of each direction marker
    markers: tuple[int, ...] = ()
    # a question (a "?" or a question word or auxiliary first), not a statement
    question: bool = False
    # negations whose weight depends on the other text: ("without", X) for
    # "without X" (counted in ``negations``) and ("extra", X) for "non-X" and "in
    # the absence of X" (not counted there); X is the stem of the word negated
    scoped: tuple[tuple[str, str], ...] = ()


def _governed(tokens: list[str], start: int) -> str:
    """The stem of the first content word from ``start`` ("without having to
    decode" -> "decode"), or "" when none follows closely."""
    for tok in tokens[start : start + 4]:
        if tok not in STOPWORDS and tok not in _NEGATION_FILLER:
            return _stem(tok)
    return ""


def _scoped(tokens: list[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for i, tok in enumerate(tokens):
        word = ""
        kind = "extra"
        if tok == "without":
            kind, word = "without", _governed(tokens, i + 1)
        elif tok.startswith("non-") and len(tok) > 5:
            word = _stem(tok[4:].split("-", 1)[0])
        elif tok == "absence" and i + 1 < len(tokens) and tokens[i + 1] == "of":
            word = _governed(tokens, i + 2)
        if word:
            out.append((kind, word))
    return tuple(out)


def analyse(text: str) -> Parsed:
    """Parse ``text`` into the facts the checks compare."""
    tokens = tokenize(text)
    # "Yes, ..." / "No, ..." answers a question and adds nothing the rest of the
    # text does not say ("No, X does not exist" / "X does not exist"); "No
    # alternative is mentioned" negates
    if _INTERJECTION.match(text):
        tokens = tokens[1:]
    n = len(tokens)
    negations = 0
    numbers: set[float] = set()
    versions: set[str] = set()
    dates: set[str] = set()
    units: list[str] = []
    source_units: set[str] = set()
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else ""
        nxt = tokens[i + 1] if i + 1 < n else ""
        if tok in _NEGATIONS or tok.endswith("-free"):
            negations += 1
        if tok[0].isdigit() or tok[0] == "$":
            if _VERSION.match(tok) or (
                tok.count(".") >= 1 and prev.isalpha() and prev not in STOPWORDS
            ):
                versions.add(tok)
            value = _number(tok)
            if value is not None:
                if 1000 <= value <= 2100 and value == int(value) and "." not in tok:
                    dates.add(str(int(value)))
                else:
                    numbers.add(value)
            unit_tok = nxt
            if tok.endswith("%"):
                unit_tok = "%"
            elif tok.startswith("$"):
                unit_tok = "$"
            unit = _UNITS.get(unit_tok.split("-", 1)[0])
            if unit is not None:
                source_units.add(unit)
        elif tok in _NUMBER_WORDS and tok not in ("one", "half", "double", "twice"):
            numbers.add(float(_NUMBER_WORDS[tok]))
        elif tok in _ORDINALS and nxt not in ("time", "of", "person"):
            numbers.add(float(_ORDINALS[tok]))
        elif "-" in tok and tok.split("-", 1)[0] in _NUMBER_WORDS:
            head = tok.split("-", 1)[0]
            if head != "one":
                numbers.add(float(_NUMBER_WORDS[head]))
        if tok in _MONTH_IDS and (
            (tok in _MONTHS[:12] and tok != "may")
            or prev.isdigit()
            or nxt[:1].isdigit()
        ):
            dates.add(f"m{_MONTH_IDS[tok]}")
        elif tok in _DAYS:
            dates.add(tok)
        elif tok in _PERIODS and prev in _DATE_MODIFIERS:
            dates.add(f"{prev}-{tok}")
        if re.match(r"^\d{4}-\d{2}-\d{2}$", tok):
            dates.add(tok)
        unit = _UNITS.get(tok)
        if unit is not None and (
            tok not in _UNIT_ONLY_WITH_NUMBER or prev[:1].isdigit()
        ):
            units.append(unit)
            if prev in ("a", "an", "one", "per", "each") or (
                prev[:1].isdigit() or prev in _NUMBER_WORDS
            ):
                source_units.add(unit)
    raw = _RAW_TOKEN.findall(text)
    capital_ratio = sum(w[0].isupper() for w in raw) / max(len(raw), 1)
    entities: set[str] = set()
    for j, word in enumerate(raw):
        if word in _ROMAN:
            numbers.add(float(_ROMAN[word]))
            continue
        inner_caps = any(c.isupper() for c in word[1:]) or any(
            c.isdigit() for c in word
        )
        if inner_caps or (
            word[0].isupper() and j > 0 and capital_ratio < 0.6 and word != "I"
        ):
            low = word.lower()
            if low not in STOPWORDS and low not in _DAYS and low not in _MONTH_IDS:
                entities.add(low)
    content = frozenset(t for t in tokens if t not in STOPWORDS and t not in _NEGATIONS)
    wh_words = _STRICT_WH | {"what", "how", "which"}
    # the ask is the leading wh-word ("why ...?") or a trailing one ("..., why?")
    wh = next((t for t in tokens[:3] if t in wh_words), "")
    if not wh and tokens and tokens[-1] in wh_words:
        wh = tokens[-1]
    roles: list[tuple[str, str, int]] = []
    marker_pos = [i for i, t in enumerate(tokens) if t in _DIRECTION_MARKERS]
    if marker_pos:
        for i, tok in enumerate(tokens):
            if tok in STOPWORDS or tok in _DIRECTION_MARKERS:
                continue
            role = ""
            for k in range(i - 1, max(i - 5, -1), -1):
                if tokens[k] in _DIRECTION_MARKERS:
                    role = _DIRECTION_MARKERS[tokens[k]]
                    break
                if tokens[k] not in STOPWORDS:
                    break
            if not role and any(p > i for p in marker_pos):
                role = "pre"
            if role:
                roles.append((_stem(tok), role, i))
    return Parsed(
        tokens=tuple(tokens),
        content=content,
        stems=frozenset(_stem(t) for t in content),
        negations=negations,
        numbers=frozenset(numbers),
        versions=frozenset(versions),
        dates=frozenset(dates),
        units=tuple(units),
        source_units=frozenset(source_units),
        entities=frozenset(entities),
        wh=wh,
        roles=tuple(roles),
        ask=_ask(tokens),
        order=tuple(
            _stem(t) for t in tokens if t not in STOPWORDS and t not in _NEGATIONS
        ),
        markers=tuple(marker_pos),
        question="?" in text or bool(tokens and tokens[0] in _QUESTION_OPENERS),
        scoped=_scoped(tokens),
    )
