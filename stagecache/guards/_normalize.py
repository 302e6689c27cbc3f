"""Text normalisation shared by the injection rules: one canonical view of a text.

Attackers hide override phrases from naive matching with fullwidth or accented
letters, Cyrillic and Greek look-alikes, zero-width characters, Unicode tag
characters ("ASCII smuggling") and leetspeak, or spell words out letter by letter
("I g n o r e", "i.g.n.o.r.e"). The rules match a canonical view instead: NFKD with
combining marks dropped, invisible and bidi controls removed, look-alikes mapped to
Latin, lower case; and, when the text spells words out, a view with the spelled-out
letters joined. The views exist only for matching; the user's text is never
rewritten.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

__all__ = [
    "BIDI_CONTROLS",
    "INVISIBLE",
    "canonical",
    "decode_tag_runs",
    "has_bidi_controls",
    "hidden_text_score",
    "leet_view",
    "rot13",
    "spaced_view",
]

# Zero-width and other format characters that render as nothing. Stripped before
# matching so "ig\u200bnore" reads "ignore". The soft hyphen is here too: it is
# invisible unless a line breaks at it.
INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e"
    "\u200f\u2060\u2061\u2062\u2063\u2064\u206a\u206b\u206c\u206d\u206e\u206f"
    "\u3164\ufeff\uffa0"
)
# Explicit embeddings, overrides and isolates ("Trojan Source"): they reorder how
# text is displayed, so what a reviewer sees is not what the model reads. Typed
# right-to-left text does not need them (the bidi algorithm is implicit).
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"

_STRIP: dict[int, None] = dict.fromkeys(map(ord, INVISIBLE + BIDI_CONTROLS))
# Tag characters are read separately (decode_tag_runs); inside a word they only
# split it.
_STRIP.update(dict.fromkeys(range(0xE0000, 0xE0080)))
_BIDI_RE = re.compile(f"[{BIDI_CONTROLS}]")
_COMBINING_RE = re.compile(
    "[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"
)
# Unicode tags U+E0020..U+E007E mirror printable ASCII and render as nothing.
_TAG_RUN_RE = re.compile("[\U000e0020-\U000e007e]+")
# Zero-width characters between two ASCII letters: a word split so that a filter
# misses it. Persian and Indic text use ZWNJ/ZWJ between non-ASCII letters, which
# this deliberately does not count.
_SPLIT_WORD_RE = re.compile("[A-Za-z][\u200b\u200c\u200d\u2060\ufeff]+(?=[A-Za-z])")

# Look-alikes NFKD leaves alone: Cyrillic and Greek letters that render like Latin
# ones (lower case only: the text is lower-cased first), plus a few Latin variants.
_HOMOGLYPHS = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h",
        "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s",
        "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q",
        "ԝ": "w", "ь": "b", "ѵ": "v", "α": "a", "β": "b", "γ": "y", "ε": "e",
        "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
        "υ": "u", "χ": "x", "ω": "w", "ı": "i", "ɑ": "a", "ɡ": "g", "ɩ": "i",
        "ʏ": "y", "ᴀ": "a", "ᴇ": "e", "ɪ": "i", "ᴏ": "o", "ʀ": "r", "ꜱ": "s",
        "ᴛ": "t", "ᴜ": "u", "ɢ": "g", "ɴ": "n", "ᴍ": "m", "ᴅ": "d", "ᴄ": "c",
        # Armenian.
        "օ": "o", "ս": "u", "ց": "g", "հ": "h", "ո": "n", "զ": "q", "ա": "w",
        "ւ": "l", "ք": "p",
    }
    # Cherokee capitals (lower-cased: Python maps them to the small Cherokee
    # letters), and the negative squared and regional-indicator letters.
    | {
        up.lower(): latin
        for up, latin in zip(
            "ᎠᎡᎢᎥᎩᎪᎫᎬᎳᎷᎻᏀᏃᏒᏚᏞᏟᏢᏦᏙᏴᏫ", "drtiyajewmhgzrslcpkvbo", strict=True
        )
    }
    | {chr(0x1F170 + i): chr(0x61 + i) for i in range(26)}
    | {chr(0x1F1E6 + i): chr(0x61 + i) for i in range(26)}
)  # fmt: skip
# Digits and symbols used as letters. Applied as a second view only, so that
# ordinary numbers never change what the plain view matches.
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t",
                       "@": "a", "$": "s", "!": "i", "|": "l"})  # fmt: skip
# A word that mixes letters and leet characters ("1gn0re", "!gnore", "a||"); plain
# numbers ("3.11") do not make a leet view worth computing.
_LEET_WORD_RE = re.compile(r"[a-z][013457@$!|]|[013457@$!|][a-z]")
# Three or more single letters or digits, each separated from the next by one to
# three non-word characters: "i g n o r e", "i.g.n.o.r.e", "i-g-n-o-r-e".
_SPACED_RUN_RE = re.compile(r"(?<![^\W_])[^\W_](?:[\W_]{1,3}[^\W_](?![^\W_])){2,}")
_SPACED_SEP_RE = re.compile(r"[\W_]{1,3}")
_ROT13 = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM",
)


def canonical(text: str) -> str:
    """The view the rules match: compatibility-folded, visible, Latin, lower case.

    Args:
        text: any user-supplied text.

    Returns:
        The canonical view (may differ in length from ``text``).
    """
    if text.isascii():
        # The common case: nothing to fold, no look-alikes, no invisible characters.
        return text.lower()
    folded = unicodedata.normalize("NFKD", text.translate(_STRIP))
    folded = _COMBINING_RE.sub("", folded)
    return folded.lower().translate(_HOMOGLYPHS)


def leet_view(view: str) -> str | None:
    """``view`` with leetspeak digits read as letters, or None if it has none."""
    if _LEET_WORD_RE.search(view) is None:
        return None
    return view.translate(_LEET)


def spaced_view(view: str) -> str | None:
    """``view`` with words spelled out letter by letter joined, or None if none is.

    In each run of single characters the most frequent separator is read as the
    gap between letters and dropped; any other separator is a gap between words:
    ``"i g n o r e  a l l"`` reads ``"ignore all"``, ``"i-g-n-o-r-e a-l-l"`` reads
    ``"ignore all"``. With one separator throughout (``"i g n o r e a l l"``) the
    letters run together (``"ignoreall"``): the scanner matches this view with
    patterns whose word gaps are optional.

    Args:
        view: a canonical view (see :func:`canonical`).
    """
    if _SPACED_RUN_RE.search(view) is None:
        return None
    return _SPACED_RUN_RE.sub(_join_run, view)


def _join_run(match: re.Match[str]) -> str:
    run = match.group()
    separators = _SPACED_SEP_RE.findall(run)
    letters = _SPACED_SEP_RE.split(run)
    gap = Counter(separators).most_common(1)[0][0]  # ties: the first one seen
    out = [letters[0]]
    for separator, letter in zip(separators, letters[1:], strict=True):
        out.append(letter if separator == gap else " " + letter)
    return "".join(out)


def rot13(text: str) -> str:
    """ROT13 of ``text`` (its own inverse)."""
    return text.translate(_ROT13)


def decode_tag_runs(text: str) -> list[str]:
    """The ASCII hidden in runs of Unicode tag characters, one string per run."""
    if text.isascii():
        return []
    return [
        "".join(chr(ord(ch) - 0xE0000) for ch in m.group())
        for m in _TAG_RUN_RE.finditer(text)
    ]


def has_bidi_controls(text: str) -> bool:
    """Whether ``text`` holds explicit bidi embeddings, overrides or isolates."""
    return not text.isascii() and _BIDI_RE.search(text) is not None


def hidden_text_score(text: str) -> int:
    """How many places hide text: words split by zero-width characters, plus the
    number of characters hidden in Unicode tag runs longer than a flag sequence.
    """
    if text.isascii():
        return 0
    score = sum(1 for _ in _SPLIT_WORD_RE.finditer(text))
    # A subdivision flag (England, Scotland) uses up to 7 tag characters; anything
    # longer carries a message.
    score += sum(
        len(m.group()) for m in _TAG_RUN_RE.finditer(text) if len(m.group()) > 7
    )
    return score
