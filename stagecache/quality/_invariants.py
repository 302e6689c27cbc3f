"""Hard invariants every verifier honours before any model runs.

- **Exact repeat**: a candidate whose normalised text (NFC, casefold, whitespace
  collapsed, trailing punctuation stripped) equals the query's is always accepted.
  A cache that does not hit on an exact repeat is broken.
- **Trivial equivalence**: two queries that differ only in auxiliary or function
  words ("how do I" / "how can I" / "how to", "what's" / "what is", "please",
  "can you tell me") and keep the same content words in the same order are the
  same question; they are accepted when the cosine is high and no structural check
  fails (the structural veto still wins: a changed number or negation is never a
  trivial rewording).

Tense-carrying auxiliaries ("did", "was", "will") are *not* function words here:
"who was the president" and "who is the president" have different answers.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from stagecache.quality._structural import tokenize

__all__ = [
    "FUNCTION_WORDS",
    "TRIVIAL_MIN_COSINE",
    "content_sequence",
    "normalise_text",
    "trivially_equivalent",
]

# the cosine a trivially equivalent pair must still reach (MiniLM puts such pairs
# at 0.95..1.0; 0.85 leaves room for longer queries)
TRIVIAL_MIN_COSINE = 0.85

FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "do",
        "does",
        "can",
        "could",
        "would",
        "should",
        "might",
        "may",
        "i",
        "me",
        "my",
        "you",
        "your",
        "we",
        "our",
        "us",
        "please",
        "kindly",
        "is",
        "are",
        "be",
        "to",
        "just",
        "possible",
        "some",
        "any",
    ]
)
_FILLERS = tuple(
    re.compile(p)
    for p in (
        r"\b(?:can|could|would|will) you (?:please )?(?:tell|show|explain to) me\b",
        r"\b(?:please )?tell me\b",
        r"\bi (?:want|would like|need|'d like|d like) to know\b",
        r"\bdo you know\b",
        r"\bi(?:'m| am) wondering\b",
        r"\bi wonder\b",
        r"\bis (?:it|there a way|there any way) (?:possible )?(?:to|for me to)\b",
    )
)
_TRAILING = re.compile(r"[\s?!.。？！,;:…]+$")
_SPACES = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """NFC, casefold, collapse whitespace, strip trailing punctuation."""
    out = unicodedata.normalize("NFC", text).casefold()
    out = _SPACES.sub(" ", out).strip()
    return _TRAILING.sub("", out)


@lru_cache(maxsize=8192)
def content_sequence(text: str) -> tuple[str, ...]:
    """The words of ``text`` in order, fillers and function words dropped."""
    low = unicodedata.normalize("NFC", text).casefold().replace("\u2019", "'")
    for pattern in _FILLERS:
        low = pattern.sub(" ", low)
    return tuple(t for t in tokenize(low) if t not in FUNCTION_WORDS)


def trivially_equivalent(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ only in function words and fillers."""
    if normalise_text(a) == normalise_text(b):
        return True
    ca = content_sequence(a)
    return bool(ca) and ca == content_sequence(b)
