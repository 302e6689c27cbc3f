"""Cheap structural checks: do two queries differ in a way that changes the answer?

Each check compares the query with a cached query and reports a mismatch that an
embedding model is known to miss: a negation, a changed number, date, version or
unit, a swapped named entity, a swapped direction ("from A to B" / "from B to A")
or a different ask on the same topic ("install" / "uninstall"). The checks are
rules over a light tokenisation (no model): they run in tens of microseconds.

:func:`analyse` parses a text once into a :class:`Parsed` value;
:func:`compare` runs every check on two parsed texts and returns a
:class:`Checks` value that the learned verifier also reads as features.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CHECK_NAMES", "Checks", "Parsed", "analyse", "compare", "tokenize"]

_CONTRACTIONS = (
    (re.compile(r"\bcan'?t\b"), "can not"),
    (re.compile(r"\bcannot\b"), "can not"),
    (re.compile(r"\bwon'?t\b"), "will not"),
    (re.compile(r"\b(\w+)n't\b"), r"\1 not"),
    (re.compile(r"\b(what|who|where|when|how|it|that|there)'s\b"), r"\1 is"),
    (re.compile(r"'(re|ve|ll|d|m)\b"), " "),
    (re.compile(r"'s\b"), ""),
)
_TOKEN = re.compile(
    r"\$?\d+(?:[.,:]\d+)*(?:st|nd|rd|th|pm|am|%|k)?|[a-z]+(?:[-/][a-z0-9]+)*"
)
_INTERJECTION = re.compile(r"\s*no\b\s*(?:[,.!;:\-]|$)", re.IGNORECASE)
_RAW_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-.][A-Za-z0-9]+)*")

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "doing",
        "have",
        "has",
        "had",
        "having",
        "i",
        "me",
        "my",
        "mine",
        "myself",
        "we",
        "us",
        "our",
        "you",
        "your",
        "yours",
        "he",
        "him",
        "his",
        "she",
        "her",
        "it",
        "its",
        "they",
        "them",
        "their",
        "this",
        "that",
        "these",
        "those",
        "of",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "about",
        "as",
        "into",
        "to",
        "from",
        "up",
        "down",
        "out",
        "over",
        "under",
        "again",
        "then",
        "once",
        "here",
        "there",
        "all",
        "any",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "such",
        "only",
        "own",
        "same",
        "so",
        "too",
        "very",
        "s",
        "t",
        "just",
        "should",
        "would",
        "could",
        "can",
        "will",
        "may",
        "might",
        "must",
        "shall",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "if",
        "or",
        "and",
        "but",
        "because",
        "until",
        "while",
        "than",
        "also",
        "there's",
        "get",
        "got",
        "please",
        "tell",
        "know",
        "like",
        "want",
        "need",
        "way",
        "make",
        "one",
        "thing",
        "things",
        "someone",
        "something",
        "anyone",
        "good",
        "best",
        "really",
        "much",
        "many",
        "lot",
    ]
)
_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "without",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "nowhere",
        "cannot",
    ]
)
_NUMBER_WORDS: dict[str, float] = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_NUMBER_WORDS.update(
    {
        "thirty": 30,
        "forty": 40,
        "fifty": 50,
        "sixty": 60,
        "seventy": 70,
        "eighty": 80,
        "ninety": 90,
        "hundred": 100,
        "thousand": 1000,
        "million": 10**6,
        "billion": 10**9,
        "half": 0.5,
        "dozen": 12,
        "double": 2,
        "twice": 2,
    }
)
_ORDINALS = {
    w: i + 1
    for i, w in enumerate(
        [
            "first",
            "second",
            "third",
            "fourth",
            "fifth",
            "sixth",
            "seventh",
            "eighth",
            "ninth",
            "tenth",
        ]
    )
}
_ROMAN = {"II": 2, "III": 3, "IV": 4, "VI": 6, "VII": 7, "VIII": 8, "IX": 9, "XI": 11}
_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
]
_MONTH_IDS = {m: [f[:3] for f in _MONTHS[:12]].index(m[:3]) for m in _MONTHS}
_DAYS = frozenset(
    [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "today",
        "tomorrow",
        "yesterday",
        "tonight",
        "weekend",
        "weekday",
        "morning",
        "afternoon",
        "evening",
        "night",
        "midnight",
        "noon",
        "christmas",
        "easter",
        "thanksgiving",
        "halloween",
        "q1",
        "q2",
        "q3",
        "q4",
    ]
)
_DATE_MODIFIERS = frozenset(["next", "last", "this", "previous", "coming", "past"])
_PERIODS = frozenset(["week", "month", "year", "decade", "century", "quarter"])
_UNITS = {
    "mg": "mg",
    "milligram": "mg",
    "milligrams": "mg",
    "g": "g",
    "gram": "g",
    "grams": "g",
    "kg": "kg",
    "kilo": "kg",
    "kilos": "kg",
    "kilogram": "kg",
    "kilograms": "kg",
    "mcg": "mcg",
    "microgram": "mcg",
    "micrograms": "mcg",
    "lb": "lb",
    "lbs": "lb",
    "pound": "lb",
    "pounds": "lb",
    "oz": "oz",
    "ounce": "oz",
    "ounces": "oz",
    "stone": "stone",
    "ton": "ton",
    "tons": "ton",
    "tonne": "ton",
    "km": "km",
    "kilometer": "km",
    "kilometers": "km",
    "kilometre": "km",
    "kilometres": "km",
    "mile": "mi",
    "miles": "mi",
    "mi": "mi",
    "m": "m",
    "meter": "m",
    "meters": "m",
    "metre": "m",
    "metres": "m",
    "cm": "cm",
    "centimeter": "cm",
    "centimeters": "cm",
    "mm": "mm",
    "millimeter": "mm",
    "millimeters": "mm",
    "ft": "ft",
    "foot": "ft",
    "feet": "ft",
    "inch": "in",
    "inches": "in",
    "yard": "yd",
    "yards": "yd",
    "yd": "yd",
    "l": "l",
    "liter": "l",
    "liters": "l",
    "litre": "l",
    "litres": "l",
    "ml": "ml",
    "milliliter": "ml",
    "milliliters": "ml",
    "gallon": "gal",
    "gallons": "gal",
    "cup": "cup",
    "cups": "cup",
    "tablespoon": "tbsp",
    "tablespoons": "tbsp",
    "tbsp": "tbsp",
    "teaspoon": "tsp",
    "teaspoons": "tsp",
    "tsp": "tsp",
    "celsius": "degc",
    "fahrenheit": "degf",
    "kelvin": "kelvin",
    "mph": "mph",
    "km/h": "kmh",
    "kmh": "kmh",
    "kph": "kmh",
    "ms": "ms",
    "millisecond": "ms",
    "milliseconds": "ms",
    "second": "sec",
    "seconds": "sec",
    "sec": "sec",
    "secs": "sec",
    "minute": "min",
    "minutes": "min",
    "mins": "min",
    "hour": "hour",
    "hours": "hour",
    "hr": "hour",
    "hrs": "hour",
    "day": "day",
    "days": "day",
    "week": "week",
    "weeks": "week",
    "month": "month",
    "months": "month",
    "year": "year",
    "years": "year",
    "kb": "kb",
    "kilobyte": "kb",
    "kilobytes": "kb",
    "mb": "mb",
    "megabyte": "mb",
    "megabytes": "mb",
    "gb": "gb",
    "gigabyte": "gb",
    "gigabytes": "gb",
    "gibibyte": "gib",
    "tb": "tb",
    "terabyte": "tb",
    "terabytes": "tb",
    "watt": "watt",
    "watts": "watt",
    "w": "watt",
    "kw": "kw",
    "kwh": "kwh",
    "amp": "amp",
    "amps": "amp",
    "volt": "volt",
    "volts": "volt",
    "mah": "mah",
    "percent": "pct",
    "%": "pct",
    "dollar": "usd",
    "dollars": "usd",
    "usd": "usd",
    "$": "usd",
    "euro": "eur",
    "euros": "eur",
    "eur": "eur",
    "gbp": "gbp",
    "rupees": "inr",
    "yen": "jpy",
    "calorie": "kcal",
    "calories": "kcal",
    "kcal": "kcal",
    "acre": "acre",
    "acres": "acre",
    "hectare": "ha",
    "hectares": "ha",
    "pixel": "px",
    "pixels": "px",
    "px": "px",
    "hz": "hz",
    "ghz": "ghz",
    "mhz": "mhz",
    "bit": "bit",
    "bits": "bit",
    "byte": "byte",
    "bytes": "byte",
}
_UNIT_ONLY_WITH_NUMBER = frozenset(["g", "m", "l", "w", "s", "in", "ms"])
_ANTONYMS = (
    ("install", "uninstall"),
    ("enable", "disable"),
    ("add", "remove"),
    ("create", "delete"),
    ("open", "close"),
    ("start", "stop"),
    ("import", "export"),
    ("upload", "download"),
    ("encrypt", "decrypt"),
    ("buy", "sell"),
    ("rent", "buy"),
    ("lock", "unlock"),
    ("show", "hide"),
    ("increase", "decrease"),
    ("increase", "reduce"),
    ("minimum", "maximum"),
    ("min", "max"),
    ("before", "after"),
    ("benefits", "risks"),
    ("benefits", "dangers"),
    ("advantages", "disadvantages"),
    ("pros", "cons"),
    ("best", "worst"),
    ("cheap", "expensive"),
    ("cheapest", "expensive"),
    ("eat", "avoid"),
    ("win", "lose"),
    ("won", "lost"),
    ("higher", "lower"),
    ("more", "less"),
    ("first", "last"),
    ("compress", "extract"),
    ("compress", "decompress"),
    ("zip", "unzip"),
    ("merge", "split"),
    ("connect", "disconnect"),
    ("subscribe", "unsubscribe"),
    ("join", "leave"),
    ("import", "exports"),
    ("boiling", "freezing"),
    ("safe", "unsafe"),
    ("safe", "dangerous"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("like", "dislike"),
    ("agree", "disagree"),
    ("hot", "cold"),
    ("gain", "lose"),
    ("profit", "loss"),
    ("inhale", "exhale"),
    ("mount", "unmount"),
    ("block", "unblock"),
    ("follow", "unfollow"),
    ("archive", "unarchive"),
    ("push", "pull"),
    ("send", "receive"),
    ("deposit", "withdraw"),
    ("borrow", "lend"),
    ("input", "output"),
    ("upgrade", "downgrade"),
    ("encode", "decode"),
    ("serialize", "deserialize"),
    ("price", "weight"),
    ("population", "area"),
    ("cause", "effect"),
    ("causes", "treatment"),
    ("symptoms", "treatment"),
    ("symptoms", "causes"),
    ("pros", "risks"),
    ("early", "late"),
    ("fast", "slow"),
    ("long", "short"),
    ("male", "female"),
    ("men", "women"),
    ("boy", "girl"),
)
_ANTONYM_PAIRS = frozenset(_ANTONYMS) | frozenset((b, a) for a, b in _ANTONYMS)
_STRICT_WH = frozenset(["why", "when", "where", "who"])
_DIRECTION_MARKERS = {
    "from": "from",
    "to": "to",
    "into": "to",
    "toward": "to",
    "towards": "to",
    "than": "than",
    "beat": "obj",
    "beats": "obj",
    "defeated": "obj",
    "vs": "vs",
    "versus": "vs",
    "over": "obj",
}
_VERSION = re.compile(r"^v?\d+(?:\.\d+)+$|^v\d+$")

# the kind of answer a question asks for; "" when generic (what / how / which)
_ASK_PATTERNS = (
    (
        "time",
        re.compile(
            r"^(?:when\b|(?:in |during |by |since )?(?:what|which) (?:year|decade|"
            r"century|date|month|day|era|period|time)\b|how long ago\b)"
        ),
    ),
    (
        "place",
        re.compile(
            r"^(?:where\b|(?:in |on |to )?(?:what|which) (?:country|city|place|"
            r"location|continent|state|region|town|planet|ocean|river|island)\b)"
        ),
    ),
    ("person", re.compile(r"^(?:who|whom|whose)\b")),
    ("reason", re.compile(r"^why\b")),
    ("quantity", re.compile(r"^how (?:many|much|far|tall|big|old|long|fast)\b")),
)


def _ask(tokens: list[str]) -> str:
    text = " ".join(tokens)
    for kind, pattern in _ASK_PATTERNS:
        if pattern.match(text):
            return kind
    return ""


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
    roles: tuple[tuple[str, str], ...]
    ask: str = ""
    # the content words (stemmed) in text order
    order: tuple[str, ...] = ()


def analyse(text: str) -> Parsed:
    """Parse ``text`` into the facts the checks compare."""
    tokens = tokenize(text)
    n = len(tokens)
    # "No, ..." answers a question; "No alternative is mentioned" negates
    interjection = bool(_INTERJECTION.match(text))
    negations = 0
    numbers: set[float] = set()
    versions: set[str] = set()
    dates: set[str] = set()
    units: list[str] = []
    source_units: set[str] = set()
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else ""
        nxt = tokens[i + 1] if i + 1 < n else ""
        if (tok in _NEGATIONS and not (i == 0 and tok == "no" and interjection)) or (
            tok.endswith("-free")
        ):
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
    roles: list[tuple[str, str]] = []
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
                roles.append((_stem(tok), role))
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


def compare(a: Parsed, b: Parsed) -> Checks:
    """Run every structural check on two parsed queries."""
    negation = (a.negations % 2) != (b.negations % 2)
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
    roles_a = dict(a.roles)
    roles_b = dict(b.roles)
    # a swap: two shared words whose roles traded places ("from A to B")
    moved = [
        (roles_a[w], roles_b[w])
        for w in roles_a
        if w in roles_b and roles_a[w] != roles_b[w]
    ]
    direction = short and not reworded and any((rb, ra) in moved for ra, rb in moved)
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
