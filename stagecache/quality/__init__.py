"""Answer quality: decide whether a vector-search candidate really answers a query.

A semantic cache that returns a wrong answer is worse than no cache. The verifiers
here sit between the vector search and the hit (see :mod:`stagecache.types`,
``Verifier``): cheap structural checks, a learned pair model shipped as JSON
weights (numpy inference), an operating point chosen from a user-set
``max_wrong_hit_rate``, and per-entry boundaries learned from feedback.

Example::

    from stagecache.quality import VerifierConfig, make_verifier

    verifier = make_verifier(VerifierConfig(max_wrong_hit_rate=0.01))
    verifier.candidate_threshold      # search the index down to this cosine
    verdict = verifier.verify(query, candidate)
    verifier.record_feedback(candidate.entry_id, correct=False)
"""

from __future__ import annotations

from stagecache.quality._adaptive import AdaptiveThresholds
from stagecache.quality._learned import load_weights
from stagecache.quality._structural import CHECK_NAMES, Checks, analyse, compare
from stagecache.quality._verifier import (
    LearnedVerifier,
    PlainVerifier,
    StructuralVerifier,
    VerifierConfig,
    VerifierKind,
    make_verifier,
)

__all__ = [
    "CHECK_NAMES",
    "AdaptiveThresholds",
    "Checks",
    "LearnedVerifier",
    "PlainVerifier",
    "StructuralVerifier",
    "VerifierConfig",
    "VerifierKind",
    "analyse",
    "compare",
    "load_weights",
    "make_verifier",
]
