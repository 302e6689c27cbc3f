"""Pair features for the learned verifier: cosine, structural checks, overlap, rank.

The feature vector of a (query, cached query) pair is computed from the two texts,
the cosine the vector search found and, when the engine offers every candidate at
once (``verify_ranked``), how the candidate sits among the others: a query that is
close to several different entries is ambiguous. No embedding is recomputed. Word
rarity comes from an inverse-document-frequency table shipped with the weights, so
a changed rare word (a product, a place) weighs more than a changed common one.

The features are chosen to carry over between domains (short questions, long
declarative answers): overlap *shares* and structural agreement rather than raw
lengths or word identities.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from stagecache.quality._structural import CHECK_NAMES, Parsed, compare

__all__ = [
    "FEATURE_NAMES",
    "RankContext",
    "ambiguity_margins",
    "pair_features",
    "rank_contexts",
]

FEATURE_NAMES: tuple[str, ...] = (
    "cosine",
    *(f"check_{name}" for name in CHECK_NAMES),
    "number_one_sided",
    "date_one_sided",
    "entity_one_sided",
    "wh_mismatch",
    "jaccard",
    "containment",
    "idf_overlap",
    "idf_diff",
    "max_idf_only_query",
    "max_idf_only_cached",
    "frac_only_query",
    "frac_only_cached",
    "len_ratio",
    "first_token_equal",
    "trigram_jaccard",
    "single_substitution",
    "negations_query",
    "negations_cached",
    "content_equal",
    "gap_top",
    "gap_next",
    "n_close",
)

# (cosine of the best candidate, cosine of the next one, how many other candidates
# lie within CLOSE of this one)
RankContext = tuple[float, float, int]
CLOSE = 0.02


def rank_contexts(similarities: list[float], floor: float) -> list[RankContext]:
    """The rank context of every candidate of one lookup (best first).

    Candidates below ``floor`` are not seen by the verifier, so a missing runner-up
    reads as one at ``floor``.
    """
    sims = [s for s in similarities]
    top = sims[0] if sims else floor
    out: list[RankContext] = []
    for j, s in enumerate(sims):
        nxt = sims[j + 1] if j + 1 < len(sims) else floor
        nxt = max(nxt, floor)
        close = sum(1 for k, o in enumerate(sims) if k != j and abs(o - s) <= CLOSE)
        out.append((top, nxt, close))
    return out


def ambiguity_margins(
    similarities: list[float], texts: list[str], floor: float
) -> list[float]:
    """How far each candidate stands above its closest rival (best first).

    A rival is another candidate with a different (normalised) text: two entries
    of the same question are not a choice. A candidate with no rival above
    ``floor`` stands ``similarity - floor`` clear. A query about as close to two
    different entries as to one cannot tell which one answers it (the ratio test
    of feature matching).
    """
    out: list[float] = []
    for j, (s, t) in enumerate(zip(similarities, texts, strict=True)):
        rivals = [
            o
            for k, (o, u) in enumerate(zip(similarities, texts, strict=True))
            if k != j and u != t
        ]
        out.append(s - max(max(rivals, default=floor), floor))
    return out


def _trigrams(tokens: tuple[str, ...]) -> set[str]:
    text = " ".join(tokens)
    return {text[i : i + 3] for i in range(len(text) - 2)}


def pair_features(
    query: Parsed,
    cached: Parsed,
    similarity: float,
    idf: Mapping[str, float],
    default_idf: float,
    context: RankContext | None = None,
    content_equal: bool = False,
) -> npt.NDArray[np.float64]:
    """The feature vector (ordered as :data:`FEATURE_NAMES`) of one pair.

    Args:
        query: the parsed incoming query.
        cached: the parsed query of the cache entry.
        similarity: the cosine the vector search found.
        idf: word stem -> inverse document frequency.
        default_idf: idf of a stem missing from ``idf`` (a rare word).
        context: the candidate's rank context; None reads as the only candidate.
        content_equal: the two texts are trivially equivalent.

    Returns:
        A float64 vector of ``len(FEATURE_NAMES)`` values.
    """
    checks = compare(query, cached)
    only_q = query.stems - cached.stems
    only_c = cached.stems - query.stems
    shared = query.stems & cached.stems
    union = query.stems | cached.stems
    w_shared = sum(idf.get(w, default_idf) for w in shared)
    w_union = sum(idf.get(w, default_idf) for w in union)
    lq, lc = len(query.tokens), len(cached.tokens)
    tq, tc = _trigrams(query.tokens), _trigrams(cached.tokens)
    nq, nc = max(len(query.stems), 1), max(len(cached.stems), 1)
    top, nxt, close = context if context is not None else (similarity, 0.0, 0)
    values = [
        similarity,
        *(float(getattr(checks, name)) for name in CHECK_NAMES),
        float(checks.number_one_sided),
        float(checks.date_one_sided),
        float(checks.entity_one_sided),
        float(checks.wh_mismatch),
        len(shared) / max(len(union), 1),
        len(shared) / min(nq, nc),
        w_shared / w_union if w_union else 1.0,
        min(w_union - w_shared, 30.0),
        max((idf.get(w, default_idf) for w in only_q), default=0.0),
        max((idf.get(w, default_idf) for w in only_c), default=0.0),
        len(only_q) / nq,
        len(only_c) / nc,
        min(lq, lc) / max(lq, lc, 1),
        float(
            bool(query.tokens)
            and bool(cached.tokens)
            and query.tokens[0] == cached.tokens[0]
        ),
        len(tq & tc) / max(len(tq | tc), 1),
        float(len(only_q) == 1 and len(only_c) == 1),
        float(query.negations),
        float(cached.negations),
        float(content_equal),
        top - similarity,
        similarity - nxt,
        float(close),
    ]
    return np.asarray(values, dtype=np.float64)
