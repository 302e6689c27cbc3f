"""Pair features for the learned verifier: cosine, structural checks, overlap.

The feature vector of a (query, cached query) pair is computed from the two texts
and the cosine the vector search found; no embedding is recomputed. Word rarity
comes from an inverse-document-frequency table shipped with the weights, so a
changed rare word (a product, a place) weighs more than a changed common one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from stagecache.quality._structural import CHECK_NAMES, Parsed, compare

__all__ = ["FEATURE_NAMES", "pair_features"]

FEATURE_NAMES: tuple[str, ...] = (
    "cosine",
    *(f"check_{name}" for name in CHECK_NAMES),
    "number_one_sided",
    "date_one_sided",
    "entity_one_sided",
    "wh_mismatch",
    "jaccard",
    "idf_overlap",
    "max_idf_only_query",
    "max_idf_only_cached",
    "n_only_query",
    "n_only_cached",
    "len_query",
    "len_cached",
    "len_ratio",
    "first_token_equal",
    "trigram_jaccard",
    "single_substitution",
    "negations_query",
    "negations_cached",
)


def _trigrams(tokens: tuple[str, ...]) -> set[str]:
    text = " ".join(tokens)
    return {text[i : i + 3] for i in range(len(text) - 2)}


def pair_features(
    query: Parsed,
    cached: Parsed,
    similarity: float,
    idf: Mapping[str, float],
    default_idf: float,
) -> npt.NDArray[np.float64]:
    """The feature vector (ordered as :data:`FEATURE_NAMES`) of one pair.

    Args:
        query: the parsed incoming query.
        cached: the parsed query of the cache entry.
        similarity: the cosine the vector search found.
        idf: word stem -> inverse document frequency.
        default_idf: idf of a stem missing from ``idf`` (a rare word).

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
    values = [
        similarity,
        *(float(getattr(checks, name)) for name in CHECK_NAMES),
        float(checks.number_one_sided),
        float(checks.date_one_sided),
        float(checks.entity_one_sided),
        float(checks.wh_mismatch),
        len(shared) / max(len(union), 1),
        w_shared / w_union if w_union else 1.0,
        max((idf.get(w, default_idf) for w in only_q), default=0.0),
        max((idf.get(w, default_idf) for w in only_c), default=0.0),
        float(len(only_q)),
        float(len(only_c)),
        float(lq),
        float(lc),
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
    ]
    return np.asarray(values, dtype=np.float64)
