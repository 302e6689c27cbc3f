"""The cosine rules and what every verifier shares: the hard floor, feedback and
``verify_ranked``.

- :class:`PlainVerifier` (``none``): accept what the engine offers.
- :class:`StructuralVerifier` (``structural``): the same behind the structural veto.
- :class:`UncalibratedVerifier`: a learned kind whose calibration does not fit the
  pipeline's embedder (``stagecache.quality._calibration``): the structural veto and
  cosine >= the floor in force, reported as ``uncalibrated``.

Every verifier refuses a candidate below the user's ``[cache] threshold``
(``hard_floor``) before any rule, and reports the floor of the rule that decided
(``Verdict.floor``). See :mod:`stagecache.quality._verifier` for the whole story.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from stagecache._model import Candidate, Verdict
from stagecache.cache._settings import DEFAULT_THRESHOLD
from stagecache.quality._adaptive import AdaptiveThresholds
from stagecache.quality._features import (
    RankContext,
    ambiguity_margins,
    rank_contexts,
)
from stagecache.quality._invariants import normalise_text
from stagecache.quality._structural import Parsed, analyse, compare

__all__ = [
    "UNCALIBRATED_FLOOR",
    "PlainVerifier",
    "StructuralVerifier",
    "UncalibratedVerifier",
    "VerifierBase",
]

#: The cosine floor of a learned kind that has no calibration for the pipeline's
#: embedder, when ``[cache] threshold`` is not set: with no measured wrong-hit rate
#: to stand on, it errs towards misses.
UNCALIBRATED_FLOOR = 0.95


@lru_cache(maxsize=8192)
def _parse(text: str) -> Parsed:
    return analyse(text)


@lru_cache(maxsize=8192)
def _norm(text: str) -> str:
    return normalise_text(text)


def _exact(query: str, candidate: Candidate) -> bool:
    return _norm(query) == _norm(candidate.query)


class _Base:
    """Shared feedback handling, the hard floor and ``verify_ranked``.

    Attributes:
        name: the kind.
        threshold: the learned-score threshold (0 for the cosine rules).
        candidate_threshold: the cosine the engine searches down to (None: the
            floor in force).
        hard_floor: the user's ``[cache] threshold`` (None: not set).
        default_floor: the floor in force when ``[cache] threshold`` is not set.
        calibration: the embedder id of the calibration in use, ``uncalibrated``,
            or ``none`` (the cosine rules use none).
    """

    __slots__ = (
        "_adaptive",
        "calibration",
        "candidate_threshold",
        "default_floor",
        "hard_floor",
        "name",
        "threshold",
    )

    def __init__(
        self,
        name: str,
        threshold: float,
        candidate_threshold: float | None,
        adaptive: AdaptiveThresholds | None,
        *,
        hard_floor: float | None = None,
        default_floor: float = DEFAULT_THRESHOLD,
        calibration: str = "none",
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.candidate_threshold = candidate_threshold
        self._adaptive = adaptive
        self.hard_floor = hard_floor
        self.default_floor = default_floor
        self.calibration = calibration

    def effective_floor(self, threshold: float | None) -> float:
        """The cosine floor in force given the cache's ``threshold`` (None: unset).

        The cosine rules use the threshold in place of their default; see
        :class:`LearnedVerifier` for the learned kinds.
        """
        return self.default_floor if threshold is None else threshold

    def _boundary(self, entry_id: str, base: float) -> float:
        if self._adaptive is None:
            return base
        return self._adaptive.threshold(entry_id, base)

    def _accept(
        self, candidate: Candidate, score: float, reason: str, floor: float | None
    ) -> Verdict:
        if self._adaptive is not None:
            self._adaptive.seen(candidate.entry_id, score)
        return Verdict(True, score, reason, self._floor(floor))

    def _floor(self, floor: float | None) -> float | None:
        """A rule's floor raised to the hard floor (None: the floor in force)."""
        if self.hard_floor is None:
            return floor
        return self.hard_floor if floor is None else max(floor, self.hard_floor)

    def verify(self, query: str, candidate: Candidate) -> Verdict:
        """Accept or reject one candidate (no rank context)."""
        return self._checked(query, candidate, None)

    def _checked(
        self,
        query: str,
        candidate: Candidate,
        context: RankContext | None,
        margin: float | None = None,
    ) -> Verdict:
        """The hard floor first: nothing below it hits, whatever the rules say."""
        t = self.hard_floor
        if t is not None and candidate.similarity < t:
            return Verdict(
                False,
                candidate.similarity,
                f"below threshold: cosine {candidate.similarity:.3f} < {t:.3f}",
                t,
            )
        return self._verify(query, candidate, context, margin)

    def _verify(
        self,
        query: str,
        candidate: Candidate,
        context: RankContext | None,
        margin: float | None = None,
    ) -> Verdict:
        raise NotImplementedError

    def verify_ranked(
        self, query: str, candidates: Sequence[Candidate]
    ) -> tuple[int | None, Verdict | None]:
        """Pick the first acceptable candidate of one lookup (best first).

        Returns:
            ``(index, verdict)`` of the accepted candidate, or ``(None, verdict of
            the last rejected candidate)`` (``(None, None)`` when there were none).
        """
        floor = self.candidate_threshold if self.candidate_threshold is not None else 0
        sims = [c.similarity for c in candidates]
        contexts = rank_contexts(sims, floor)
        margins = ambiguity_margins(sims, [_norm(c.query) for c in candidates], floor)
        verdict: Verdict | None = None
        for i, (cand, ctx) in enumerate(zip(candidates, contexts, strict=True)):
            verdict = self._checked(query, cand, ctx, margins[i])
            if verdict.accept:
                return i, verdict
        return None, verdict

    def record_feedback(self, entry_id: str, correct: bool) -> None:
        """Learn from a user's judgement of the latest hit of ``entry_id``."""
        if self._adaptive is not None:
            self._adaptive.record(entry_id, correct)

    def forget(self, entry_id: str) -> None:
        """Drop per-entry state (call when an entry is evicted or purged)."""
        if self._adaptive is not None:
            self._adaptive.forget(entry_id)


class PlainVerifier(_Base):
    """The plain cosine rule: accept what the engine offers (the floor in force).

    Feedback still works per entry: after a wrong hit an entry only answers
    candidates more similar than that hit by ``feedback_margin``.
    """

    __slots__ = ()

    def _verify(
        self,
        query: str,
        candidate: Candidate,
        context: RankContext | None,
        margin: float | None = None,
    ) -> Verdict:
        if _exact(query, candidate):
            return self._accept(candidate, candidate.similarity, "exact repeat", None)
        t = self._boundary(candidate.entry_id, 0.0)
        if candidate.similarity < t:
            return Verdict(
                False, candidate.similarity, f"feedback: similarity < {t:.3f}", t
            )
        return self._accept(candidate, candidate.similarity, "similarity", None)


class StructuralVerifier(PlainVerifier):
    """The plain rule with the structural checks as a veto."""

    __slots__ = ()

    def _verify(
        self,
        query: str,
        candidate: Candidate,
        context: RankContext | None,
        margin: float | None = None,
    ) -> Verdict:
        if _exact(query, candidate):
            return self._accept(candidate, candidate.similarity, "exact repeat", None)
        failed = compare(_parse(query), _parse(candidate.query)).first_failure()
        if failed is not None:
            return Verdict(
                False, candidate.similarity, f"structural: {failed}", self._floor(None)
            )
        return super()._verify(query, candidate, context, margin)


class UncalibratedVerifier(StructuralVerifier):
    """A learned kind without a calibration for the pipeline's embedder.

    Another model's floors mean nothing for this one's cosines, so the rule is the
    structural veto and cosine >= the floor in force (``[cache] threshold``, else
    ``UNCALIBRATED_FLOOR``); its verdicts' reasons start with ``uncalibrated``.
    """

    __slots__ = ()

    def _verify(
        self,
        query: str,
        candidate: Candidate,
        context: RankContext | None,
        margin: float | None = None,
    ) -> Verdict:
        verdict = super()._verify(query, candidate, context, margin)
        if verdict.reason.startswith("structural") or not verdict.accept:
            return verdict
        sim, floor = candidate.similarity, self.effective_floor(self.hard_floor)
        if sim < floor:
            return Verdict(
                False, sim, f"uncalibrated: cosine {sim:.3f} < {floor:.3f}", floor
            )
        return Verdict(
            True, sim, f"uncalibrated: cosine {sim:.3f} >= {floor:.3f}", floor
        )


VerifierBase = _Base
