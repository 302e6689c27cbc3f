"""Answer quality: decide whether a vector-search candidate really answers a query.

A semantic cache that returns a wrong answer is worse than no cache. The verifiers
here sit between the vector search and the hit (see :mod:`stagecache.types`,
``Verifier``): hard invariants (exact repeats and trivial rewordings hit), cheap
structural checks as a veto, a banded decision with a learned pair model shipped as
JSON weights (numpy inference), an operating point chosen from a user-set
``max_wrong_hit_rate``, and per-entry boundaries learned from feedback.

Contract with the cache engine:

- ``verifier.candidate_threshold: float | None``: the cosine floor the engine
  searches down to. When it is None (kinds ``none`` and ``structural``, and a
  learned kind without a calibration for the embedder) the engine uses the floor
  in force, ``verifier.effective_floor([cache] threshold)``: the threshold when
  set, else 0.92 (0.95 uncalibrated); these kinds accept every candidate offered
  (the structural veto aside). The calibrated learned kinds set it to the model's
  feature floor (0.6) so that they see the same rank context as in training;
  their calibrated floors (``verifier.floor``, 0.6 to 0.9) are applied inside.
- ``verifier.hard_floor``: the user's ``[cache] threshold`` (``make_verifier(...,
  threshold=)``): no kind accepts below it; the engine checks it again for any
  verifier. ``verifier.calibration``: the embedder id of the calibration in use,
  ``uncalibrated`` or ``none``.
- ``Verdict.floor``: the cosine floor of the rule that decided.
- ``verifier.verify(query, candidate) -> Verdict``: one candidate, no rank context.
- ``verifier.verify_ranked(query, candidates) -> (index | None, Verdict | None)``:
  every candidate at or above the floor, best first; returns the index of the
  accepted one (or None and the last rejection). The learned kinds use the other
  candidates (gap to the best and to the next one, how many are close): the engine
  should call it when present, and serve ``candidates[index]``.
- ``verifier.record_feedback(entry_id, correct)`` / ``forget(entry_id)``.

Example::

    from stagecache.quality import VerifierConfig, make_verifier

    verifier = make_verifier(
        VerifierConfig(max_wrong_hit_rate=0.02),
        embedder_id=embedder.model_id,  # picks the calibration
        threshold=None,                 # or a hard cosine floor
    )
    verifier.candidate_threshold      # search the index down to this cosine
    index, verdict = verifier.verify_ranked(query, candidates)
    verifier.record_feedback(candidates[index].entry_id, correct=False)
"""

from __future__ import annotations

from stagecache.quality._adaptive import AdaptiveThresholds
from stagecache.quality._calibration import (
    DEFAULT_EMBEDDER,
    calibrated_embedders,
    load_calibrations,
    load_weights,
    weights_for,
)
from stagecache.quality._structural import CHECK_NAMES, Checks, analyse, compare
from stagecache.quality._verifier import (
    DEFAULT_THRESHOLD,
    UNCALIBRATED_FLOOR,
    LearnedVerifier,
    PlainVerifier,
    StructuralVerifier,
    UncalibratedVerifier,
    VerifierConfig,
    VerifierKind,
    make_verifier,
)

__all__ = [
    "CHECK_NAMES",
    "DEFAULT_EMBEDDER",
    "DEFAULT_THRESHOLD",
    "UNCALIBRATED_FLOOR",
    "AdaptiveThresholds",
    "Checks",
    "LearnedVerifier",
    "PlainVerifier",
    "StructuralVerifier",
    "UncalibratedVerifier",
    "VerifierConfig",
    "VerifierKind",
    "analyse",
    "calibrated_embedders",
    "compare",
    "load_calibrations",
    "load_weights",
    "make_verifier",
    "weights_for",
]
