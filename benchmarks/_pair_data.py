"""The training pairs of the pair model: QQP val plus rule-made pairs, short and long.

Deterministic for a seed. Sources: ``qqp_pairs_val.csv`` (shared data, allowed for
fitting) and WordNet 3.0 (glosses, synonyms, antonyms). Never the evaluation sets
(``qqp_pairs_test``, ``gptcache_mock_data``, ``contextual_queries``,
``benchmarks/data/*``).

Composition (defaults, ~15k pairs, about half positive):
- QQP val: every duplicate pair and a sample of the near-miss pairs;
- short rule pairs on QQP val questions: a negative rule (number, date, unit,
  negation, antonym, entity, roles, scope), half of them also reworded so the
  contradiction hides behind other wording; positives from rewording rules;
- long pairs (so the model does not forget long texts): (a) 2-4 QQP val duplicate
  pairs joined into one text per side (positive; the order of the parts may
  change), with one part swapped for a QQP near-miss or broken by a negative rule
  (negative); (b) WordNet statements ("A <lemma> is <gloss>. <example>"), reworded
  (positive) or contradicted (negative rule or a sibling's gloss).
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _pair_rules as R

from stagecache.tuning import TrainingPair


@dataclass
class Built:
    pairs: list[TrainingPair]
    counts: Counter[str]
    # QQP val rows kept out of every source (``holdout``): calibration data
    heldout: list[tuple[str, str, int]] = field(default_factory=list)


def _qqp_val(data: Path) -> list[tuple[str, str, int]]:
    with (data / "qqp_pairs_val.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [
        (r["question1"].strip(), r["question2"].strip(), int(r["is_duplicate"]))
        for r in rows
        if r["question1"].strip() and r["question2"].strip()
    ]


def _negative(text: str, rng: random.Random, hide: float) -> tuple[str, str] | None:
    got = R.apply_any(text, rng, R.NEGATIVE_RULES)
    if got is None:
        return None
    name, out = got
    if rng.random() < hide:
        reworded = R.reword(out, rng, steps=1)
        out = reworded or out
    return name, out


def _short_pairs(
    questions: list[str], rng: random.Random, n: int, counts: Counter[str]
) -> list[TrainingPair]:
    out: list[TrainingPair] = []
    n_neg = int(n * 0.62)
    pool = list(questions)
    rng.shuffle(pool)
    i = 0
    while len(out) < n_neg and i < len(pool):
        q = pool[i]
        i += 1
        got = _negative(q, rng, hide=0.5)
        if got:
            counts[f"short_neg_{got[0]}"] += 1
            a, b = (q, got[1]) if rng.random() < 0.5 else (got[1], q)
            out.append(TrainingPair(a, b, 0))
    while len(out) < n and i < len(pool):
        q = pool[i]
        i += 1
        reworded = R.reword(q, rng, steps=rng.choice((1, 2, 3)))
        if reworded:
            counts["short_pos_reword"] += 1
            out.append(TrainingPair(q, reworded, 1))
    return out


def _followups(
    questions: list[str],
    near: list[tuple[str, str]],
    rng: random.Random,
    n: int,
    counts: Counter[str],
) -> list[TrainingPair]:
    """Negatives shaped like the follow-ups of a conversation, which name no topic:
    a question vs itself with the topic dropped or a pronoun in its place
    (``followup``), and a question vs a QQP near-miss of it (same topic, another
    aspect) with its topic dropped (``followup_other``: "How do I learn Python?" /
    "How long does it take to learn it?"). Their own random stream, so the other
    sources stay the same whatever ``n`` is."""
    out: list[TrainingPair] = []
    pool = list(questions)
    rng.shuffle(pool)
    for q in pool:
        if len(out) >= n:
            break
        if near and rng.random() < 0.5:
            q, other = near[rng.randrange(len(near))]
            followup = R.neg_followup(other, rng)
            source = "short_neg_followup_other"
        else:
            followup = R.neg_followup(q, rng)
            source = "short_neg_followup"
        if followup:
            counts[source] += 1
            a, b = (q, followup) if rng.random() < 0.5 else (followup, q)
            out.append(TrainingPair(a, b, 0))
    return out


def _join(parts: list[str]) -> str:
    fixed = []
    for p in parts:
        p = p.strip()
        fixed.append(p if p[-1:] in "?.!" else p + ".")
    return " ".join(fixed)


def _long_qqp(
    rows: list[tuple[str, str, int]], rng: random.Random, n: int, counts: Counter[str]
) -> list[TrainingPair]:
    dups = [(a, b) for a, b, y in rows if y == 1]
    near: dict[str, list[str]] = {}
    for a, b, y in rows:
        if y == 0:
            near.setdefault(a, []).append(b)
    with_near = [(a, b) for a, b in dups if a in near]
    out: list[TrainingPair] = []
    while len(out) < n:
        k = rng.choice((2, 3, 3, 4))
        chosen = [dups[rng.randrange(len(dups))] for _ in range(k)]
        left = [a for a, _ in chosen]
        right = [b for _, b in chosen]
        if rng.random() < 0.5:
            # positive: the same questions reworded by people, maybe reordered
            if rng.random() < 0.3:
                rng.shuffle(right)
            counts["long_qqp_pos"] += 1
            out.append(TrainingPair(_join(left), _join(right), 1))
            continue
        j = rng.randrange(k)
        if rng.random() < 0.4 and with_near:
            a, b = with_near[rng.randrange(len(with_near))]
            left[j] = a
            right[j] = rng.choice(near[a])
            counts["long_qqp_neg_nearmiss"] += 1
        else:
            got = _negative(right[j], rng, hide=0.3)
            if got is None:
                continue
            right[j] = got[1]
            counts[f"long_qqp_neg_{got[0]}"] += 1
        out.append(TrainingPair(_join(left), _join(right), 0))
    return out


def _statement(lemma: str, gloss: str, example: str | None, style: int) -> str:
    art = "An" if lemma[:1].lower() in "aeiou" else "A"
    if style == 0:
        text = f"{art} {lemma} is {gloss}."
    elif style == 1:
        text = f"The word {lemma} refers to {gloss}."
    else:
        text = f"By {lemma} we mean {gloss}."
    if example:
        text += f" For example: {example[0].upper()}{example[1:]}."
    return text


def short_statements(n: int, seed: int = 0) -> list[tuple[str, str, int]]:
    """``n`` short answer-like statement pairs (text a, text b, label) from WordNet.

    The learned verifier's data is QQP questions; these give it statements too
    (most under ``LONG_TOKENS`` tokens: the short path, where its score decides).
    Text a: "A <lemma> is <gloss>." Positive: the same gloss under another frame
    ("... is called a <lemma>", "By <lemma> we mean ..."), maybe another lemma of
    the synset, with WordNet synonyms for some words. Negative: a sibling's gloss in the
    same frame as a, or the gloss broken by a negative rule. Deterministic for a
    seed; WordNet only (no evaluation set).
    """
    rng = random.Random(seed)
    wn = R.wordnet()
    synsets = sorted(
        (
            s
            for s in wn.all_synsets("n")
            if 4 <= len(s.definition().split()) <= 10 and s.hypernyms()
        ),
        key=lambda s: s.name(),
    )
    out: list[tuple[str, str, int]] = []
    while len(out) < n:
        s = synsets[rng.randrange(len(synsets))]
        lemmas = [ln.name().replace("_", " ") for ln in s.lemmas()]
        gloss = s.definition()
        a = _short_statement(lemmas[0], gloss, 0)
        if rng.random() < 0.5:
            b = _short_statement(rng.choice(lemmas), gloss, rng.choice((1, 2, 3)))
            out.append((a, _synonyms(b, rng, 2), 1))
            continue
        if rng.random() < 0.5:
            other = _sibling_gloss(s, rng)
            if other is None:
                continue
            out.append((a, _short_statement(lemmas[0], other, 0), 0))
            continue
        got = _negative(gloss, rng, hide=0.0)
        if got is not None:
            b = _short_statement(lemmas[0], got[1], rng.choice((0, 1, 2, 3)))
            out.append((a, _synonyms(b, rng, 1), 0))
    return out


def _sibling_gloss(synset: Any, rng: random.Random) -> str | None:
    """The definition of a random sibling (another hyponym of a hypernym)."""
    siblings = sorted(
        (h for p in synset.hypernyms() for h in p.hyponyms() if h != synset),
        key=lambda x: x.name(),
    )
    if not siblings:
        return None
    return str(siblings[rng.randrange(len(siblings))].definition())


def _synonyms(text: str, rng: random.Random, steps: int) -> str:
    # the question rules (prefixes such as "Please tell me:", templates) would
    # make a statement a question; a statement is reworded word by word
    return R.reword(text, rng, steps, names=["synonym"]) or text


def _short_statement(lemma: str, gloss: str, style: int) -> str:
    art = "an" if lemma[:1].lower() in "aeiou" else "a"
    if style == 3:
        return f"{gloss[0].upper()}{gloss[1:]} is called {art} {lemma}."
    return _statement(lemma, gloss, None, style)


def _long_wordnet(
    rng: random.Random, n: int, counts: Counter[str]
) -> list[TrainingPair]:
    wn = R.wordnet()
    synsets = [
        s
        for s in wn.all_synsets("n")
        if len(s.definition().split()) >= 8 and s.examples() and s.hypernyms()
    ]
    synsets.sort(key=lambda s: s.name())
    out: list[TrainingPair] = []
    while len(out) < n:
        s = synsets[rng.randrange(len(synsets))]
        lemmas = [ln.name().replace("_", " ") for ln in s.lemmas()]
        gloss = s.definition()
        example = s.examples()[0]
        a = _statement(lemmas[0], gloss, example, 0)
        if rng.random() < 0.5:
            b = _statement(rng.choice(lemmas), gloss, example, rng.choice((1, 2)))
            b = R.reword(b, rng, steps=2) or b
            counts["long_wn_pos"] += 1
            out.append(TrainingPair(a, b, 1))
            continue
        if rng.random() < 0.5:
            other = _sibling_gloss(s, rng)
            if other is None:
                continue
            b = _statement(lemmas[0], other, example, rng.choice((0, 1, 2)))
            counts["long_wn_neg_sibling"] += 1
        else:
            got = _negative(gloss, rng, hide=0.0)
            if got is None:
                continue
            b = _statement(lemmas[0], got[1], example, rng.choice((0, 1, 2)))
            b = R.reword(b, rng, steps=1) or b
            counts[f"long_wn_neg_{got[0]}"] += 1
        out.append(TrainingPair(a, b, 0))
    return out


def build_pairs(
    data: Path,
    *,
    seed: int = 0,
    qqp_negatives: int = 3500,
    short: int = 3500,
    long_qqp: int = 2300,
    long_wordnet: int = 1200,
    followups: int = 0,
    holdout: float = 0.0,
) -> Built:
    """All training pairs, shuffled; ``counts`` says how many each source gave.

    ``holdout``: the share of QQP val rows (chosen by a hash of the row, so the
    same rows for any seed) kept out of every source, questions included, and
    returned as ``heldout`` for calibration. 0 leaves the pairs as they were.
    """
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    rows = _qqp_val(data)
    held: list[tuple[str, str, int]] = []
    if holdout > 0:
        held = [r for r in rows if _held(r, holdout)]
        seen = {q for a, b, _ in held for q in (a, b)}
        rows = [r for r in rows if not _held(r, holdout) and not {r[0], r[1]} & seen]
    pos = [TrainingPair(a, b, 1) for a, b, y in rows if y == 1]
    neg = [TrainingPair(a, b, 0) for a, b, y in rows if y == 0]
    neg = rng.sample(neg, min(qqp_negatives, len(neg)))
    counts["qqp_val_pos"] = len(pos)
    counts["qqp_val_neg"] = len(neg)
    questions = sorted(
        {q for a, b, _ in rows for q in (a, b) if 3 <= len(q.split()) <= 30}
    )
    pairs = pos + neg
    pairs += _short_pairs(questions, rng, short, counts)
    pairs += _long_qqp(rows, rng, long_qqp, counts)
    pairs += _long_wordnet(rng, long_wordnet, counts)
    near = [(a, b) for a, b, y in rows if y == 0]
    pairs += _followups(questions, near, random.Random(seed + 1), followups, counts)
    pairs = [
        p
        for p in pairs
        if p.text_a.strip()
        and p.text_b.strip()
        and (p.label == 1 or p.text_a != p.text_b)
    ]
    rng.shuffle(pairs)
    return Built(pairs, counts, held)


def _held(row: tuple[str, str, int], share: float) -> bool:
    digest = hashlib.sha256(f"{row[0]}\n{row[1]}".encode()).digest()
    return int.from_bytes(digest[:4], "big") < share * 2**32


if __name__ == "__main__":
    import sys

    import _quality_data as D

    built = build_pairs(D.DATA)
    for key, value in sorted(built.counts.items()):
        print(f"{key:32s} {value}")
    print("total", len(built.pairs), "positive", sum(p.label for p in built.pairs))
    if len(sys.argv) > 1:
        r = random.Random(1)
        for p in r.sample(built.pairs, int(sys.argv[1])):
            print(p.label, "|", p.text_a, "|", p.text_b)
    _ = re
