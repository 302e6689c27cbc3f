"""Rule-made rewordings (positives) and near-misses (negatives) of a text.

Every rule takes a text and a seeded ``random.Random`` and returns the changed text,
or None when it does not apply. Negative rules change what a cached answer would be
about (a number, a date, a unit, negation, an antonym, an entity, the roles of two
entities, the scope); positive rules change the wording only (templates, phrase
equivalences, WordNet synonyms of monosemous words, contractions, clause order).

WordNet comes from Debian's ``wordnet-base`` (``/usr/share/wordnet``), read by nltk
from a copy laid out as ``nltk_data/corpora/wordnet`` plus the ``lexnames`` file
Debian leaves out (see :func:`wordnet`).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from _pair_lexicon import (
    ANTONYMS,
    AUX,
    CONTRACTIONS,
    ENTITIES,
    LEXNAMES,
    MONTHS,
    NEG_CONTRACT,
    PHRASES,
    PREFIXES,
    QUANTIFIERS,
    SCOPE_SUFFIXES,
    STOP,
    SUBJ,
    TEMPLATES,
    UNITS,
    WEEKDAYS,
)

Rule = Callable[[str, random.Random], str | None]

_POS_NUM = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


@cache
def wordnet() -> Any:
    """nltk's WordNet reader on Debian's WordNet 3.0 files (copied once)."""
    source = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
    if not (source / "data.noun").is_file():
        raise SystemExit(
            f"WordNet not found in {source}: apt-get install -y wordnet-base "
            f"wordnet-sense-index (or set WORDNET_DIR)"
        )
    root = Path(__file__).resolve().parent / ".cache" / "nltk_data"
    target = root / "corpora" / "wordnet"
    if not (target / "lexnames").is_file():
        target.mkdir(parents=True, exist_ok=True)
        for file in source.iterdir():
            if file.is_file():
                shutil.copy(file, target / file.name)
        assert len(LEXNAMES) == 45
        (target / "lexnames").write_text(
            "".join(
                f"{i:02d}\t{name}\t{_POS_NUM[name.split('.')[0]]}\n"
                for i, name in enumerate(LEXNAMES)
            )
        )
    import nltk

    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    from nltk.corpus import wordnet as wn

    wn.ensure_loaded()
    return wn


_WORD = re.compile(r"[A-Za-z][A-Za-z+']*")


def _sub_word(text: str, old: str, new: str, *, flags: int = re.IGNORECASE) -> str:
    def keep_case(m: re.Match[str]) -> str:
        got = m.group(0)
        return new[:1].upper() + new[1:] if got[:1].isupper() else new

    return re.sub(
        rf"(?<![\w+]){re.escape(old)}(?![\w+])", keep_case, text, count=1, flags=flags
    )


def _has(text: str, word: str, flags: int = re.IGNORECASE) -> bool:
    return re.search(rf"(?<![\w+]){re.escape(word)}(?![\w+])", text, flags) is not None


def _swap_pairs(
    text: str, rng: random.Random, pairs: list[tuple[str, str]]
) -> str | None:
    options = [(a, b) for a, b in pairs if _has(text, a)] + [
        (b, a) for a, b in pairs if _has(text, b)
    ]
    if not options:
        return None
    old, new = options[rng.randrange(len(options))]
    out = _sub_word(text, old, new)
    return out if out != text else None


# --- negative rules ------------------------------------------------------------


def neg_number(text: str, rng: random.Random) -> str | None:
    numbers = list(re.finditer(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\w)", text))
    if not numbers:
        return None
    m = numbers[rng.randrange(len(numbers))]
    value = m.group(0)
    if "." in value:
        new = f"{float(value) * rng.choice((2, 3, 0.5)):g}"
    else:
        n = int(value)
        if 1900 <= n <= 2100:
            new = str(n + rng.choice((-10, -5, -2, -1, 1, 2, 5)))
        elif n < 10:
            new = str(rng.choice([k for k in range(1, 13) if k != n]))
        else:
            new = str(
                max(1, n + rng.choice((-1, 1)) * max(1, n // rng.choice((2, 3, 4))))
            )
    if new == value:
        return None
    return text[: m.start()] + new + text[m.end() :]


def neg_date(text: str, rng: random.Random) -> str | None:
    for names in (MONTHS, WEEKDAYS):
        found = [w for w in names if _has(text, w, 0)]
        if found:
            old = found[0]
            return _sub_word(
                text, old, rng.choice([w for w in names if w != old]), flags=0
            )
    return None


def neg_unit(text: str, rng: random.Random) -> str | None:
    return _swap_pairs(text, rng, UNITS)


def neg_negation(text: str, rng: random.Random) -> str | None:
    words = text.split()
    for i, w in enumerate(words):
        bare = w.lower().strip("?,.!")
        if bare in NEG_CONTRACT:
            repl = NEG_CONTRACT[bare]
            words[i] = (repl.capitalize() if w[:1].isupper() else repl) + w[len(bare) :]
            return " ".join(words)
        if bare in ("not", "never") and i > 0:
            return " ".join(words[:i] + words[i + 1 :])
    for i, w in enumerate(words):
        if w.lower() in AUX:
            j = (
                i + 2
                if i + 1 < len(words) and words[i + 1].lower() in SUBJ[:9]
                else i + 1
            )
            if i == 0 and j == i + 1 and len(words) > 2:
                j = i + 2
            return " ".join([*words[:j], "not", *words[j:]])
    return None


@cache
def _wn_antonym(word: str) -> str | None:
    wn = wordnet()
    for synset in wn.synsets(word)[:3]:
        for lemma in synset.lemmas():
            if lemma.name().lower() != word:
                continue
            for ant in lemma.antonyms():
                name = ant.name()
                if "_" not in name and name.isalpha():
                    return str(name)
    return None


def neg_antonym(text: str, rng: random.Random) -> str | None:
    out = _swap_pairs(text, rng, ANTONYMS)
    if out is not None:
        return out
    words = [m.group(0) for m in _WORD.finditer(text)]
    candidates = [
        w for w in words if w.lower() not in STOP and len(w) > 3 and w.islower()
    ]
    rng.shuffle(candidates)
    for w in candidates[:6]:
        ant = _wn_antonym(w.lower())
        if ant:
            return _sub_word(text, w, ant, flags=0)
    return None


def neg_entity(text: str, rng: random.Random) -> str | None:
    kinds = sorted(ENTITIES)
    rng.shuffle(kinds)
    for kind in kinds:
        found = [e for e in ENTITIES[kind] if _has(text, e, 0)]
        if found:
            old = found[0]
            new = rng.choice([e for e in ENTITIES[kind] if e != old and e not in found])
            return _sub_word(text, old, new, flags=0)
    return None


def neg_roles(text: str, rng: random.Random) -> str | None:
    m = re.search(r"\bfrom ([\w+#.]+) to ([\w+#.]+)\b", text)
    if m and m.group(1).lower() != m.group(2).lower():
        a, b = m.group(1), m.group(2)
        return text[: m.start()] + f"from {b} to {a}" + text[m.end() :]
    m = re.search(
        r"\b([\w+#]+) (is|are) (\w+er|more \w+|less \w+) than ([\w+#]+)", text
    )
    if m and m.group(1).lower() != m.group(4).lower():
        swapped = f"{m.group(4)} {m.group(2)} {m.group(3)} than {m.group(1)}"
        return text[: m.start()] + swapped + text[m.end() :]
    names = [e for kind in sorted(ENTITIES) for e in ENTITIES[kind] if _has(text, e, 0)]
    if len(names) >= 2:
        a, b = names[0], names[1]
        tmp = "\x00"
        out = _sub_word(
            _sub_word(_sub_word(text, a, tmp, flags=0), b, a, flags=0), tmp, b, flags=0
        )
        return out if out != text else None
    return None


def neg_scope(text: str, rng: random.Random) -> str | None:
    out = _swap_pairs(text, rng, QUANTIFIERS)
    if out is not None:
        return out
    core = text.rstrip(" ?.!")
    if not core or len(core.split()) > 40:
        return None
    tail = text[len(core) :]
    present = [s for s in SCOPE_SUFFIXES if core.endswith(s)]
    if present:
        return (
            core[: -len(present[0])]
            + rng.choice([s for s in SCOPE_SUFFIXES if s != present[0]])
            + tail
        )
    return f"{core} {rng.choice(SCOPE_SUFFIXES)}{tail}"


NEGATIVE_RULES: dict[str, Rule] = {
    "number": neg_number,
    "date": neg_date,
    "unit": neg_unit,
    "negation": neg_negation,
    "antonym": neg_antonym,
    "entity": neg_entity,
    "roles": neg_roles,
    "scope": neg_scope,
}


_DETERMINERS = frozenset(
    [
        "the",
        "a",
        "an",
        "my",
        "your",
        "his",
        "her",
        "our",
        "their",
        "its",
        "this",
        "that",
        "these",
        "those",
        "some",
    ]
)
_CLAUSE_HEADS = frozenset(
    ["of", "for", "about", "on", "with", "in", "to", "from", "at", "by"]
)


def neg_followup(text: str, rng: random.Random) -> str | None:
    """A follow-up that leans on a conversation: the question's topic (its trailing
    noun phrase) replaced by a pronoun ("... learn Python?" -> "... learn it?"), or
    dropped with the clause that carried it ("... for beginners?" -> "...?").
    Asked alone it names no topic, so it must not hit the full question."""
    core = text.strip().rstrip(" ?.!")
    end = text.strip()[len(core) :].strip() or "?"
    words = core.split()
    if not 4 <= len(words) <= 30:
        return None
    wn = wordnet()
    j = len(words)
    while j > 0:
        word = words[j - 1].strip(",;:'\"")
        low = word.lower()
        if not word.isalpha() or low in STOP or low in _DETERMINERS:
            break
        modifier = j < len(words) and bool(wn.synsets(low, pos="a"))
        if not word[:1].isupper() and not wn.synsets(low, pos="n") and not modifier:
            break
        j -= 1
    k = j - 1 if j > 0 and words[j - 1].lower() in _DETERMINERS else j
    if j == len(words) or k < 2:
        return None
    if words[k - 1].lower() in _CLAUSE_HEADS and rng.random() < 0.5:
        out = " ".join(words[: k - 1])
    else:
        last = words[-1].lower()
        plural = last.endswith("s") and not last.endswith("ss")
        pronoun = "them" if plural else rng.choice(("it", "it", "that", "this one"))
        out = " ".join([*words[:k], pronoun])
    if len(out.split()) < 3 or out.lower() == core.lower():
        return None
    return out + end


# --- positive rules ------------------------------------------------------------


def pos_template(text: str, rng: random.Random) -> str | None:
    options = [(p, r) for p, r in TEMPLATES if re.match(p, text)]
    if not options:
        return None
    pattern, repl = options[rng.randrange(len(options))]
    return re.sub(pattern, repl, text, count=1)


def pos_phrase(text: str, rng: random.Random) -> str | None:
    return _swap_pairs(text, rng, PHRASES)


def pos_contraction(text: str, rng: random.Random) -> str | None:
    return _swap_pairs(text, rng, CONTRACTIONS)


def pos_prefix(text: str, rng: random.Random) -> str | None:
    if len(text) < 2 or not text[0].isupper() or text[:2].isupper():
        return None
    if any(text.lower().startswith(p.lower()) for p in PREFIXES):
        return None
    return rng.choice(PREFIXES) + text[0].lower() + text[1:]


def pos_casing(text: str, rng: random.Random) -> str | None:
    out = text.rstrip("?.! ")
    out = out.lower() if rng.random() < 0.5 else out
    return out if out != text else None


@cache
def _wn_synonym(word: str) -> str | None:
    wn = wordnet()
    synsets = wn.synsets(word)
    if len(synsets) != 1:
        return None
    for lemma in synsets[0].lemmas():
        name = lemma.name()
        if (
            name.lower() != word
            and "_" not in name
            and name.isalpha()
            and name.islower()
        ) and len(wn.synsets(name)) == 1:
            return str(name)
    return None


def pos_synonym(text: str, rng: random.Random) -> str | None:
    words = [m.group(0) for m in _WORD.finditer(text)]
    candidates = [w for w in words if w.islower() and len(w) > 3 and w not in STOP]
    rng.shuffle(candidates)
    for w in candidates[:8]:
        syn = _wn_synonym(w)
        if syn:
            return _sub_word(text, w, syn, flags=0)
    return None


def pos_clauses(text: str, rng: random.Random) -> str | None:
    sentences = re.split(r"(?<=[.?!])\s+", text.strip())
    if len(sentences) >= 2:
        order = list(range(len(sentences)))
        while order == sorted(order):
            rng.shuffle(order)
        return " ".join(sentences[i] for i in order)
    m = re.match(r"^(If|When|Once|After|Before) ([^,]{5,80}), (.+?)([.?!]?)$", text)
    if m:
        rest = m.group(3)
        return (
            f"{rest[0].upper()}{rest[1:]} {m.group(1).lower()} {m.group(2)}{m.group(4)}"
        )
    return None


POSITIVE_RULES: dict[str, Rule] = {
    "template": pos_template,
    "phrase": pos_phrase,
    "contraction": pos_contraction,
    "prefix": pos_prefix,
    "casing": pos_casing,
    "synonym": pos_synonym,
    "clauses": pos_clauses,
}


def apply_any(
    text: str,
    rng: random.Random,
    rules: dict[str, Rule],
    names: list[str] | None = None,
) -> tuple[str, str] | None:
    """Apply the first rule (in a random order) that changes ``text``."""
    order = list(names if names is not None else rules)
    rng.shuffle(order)
    for name in order:
        out = rules[name](text, rng)
        if out is not None and out.strip() and out != text:
            return name, re.sub(r"\s+", " ", out).strip()
    return None


def reword(
    text: str, rng: random.Random, steps: int = 2, names: list[str] | None = None
) -> str | None:
    """Up to ``steps`` positive rewrites (of the rules ``names``, default all);
    None when none applies."""
    out = text
    for _ in range(steps):
        got = apply_any(out, rng, POSITIVE_RULES, names)
        if got is None:
            break
        out = got[1]
    return out if out != text else None
