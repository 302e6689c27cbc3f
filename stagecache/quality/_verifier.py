"""The verifiers and their configuration.

A verifier sits between the vector search and the hit: the cache engine offers it
each candidate whose cosine is at least the *candidate threshold*, best first, and
serves the first one it accepts. The candidate threshold can be low (0.6 to 0.75)
because the verifier, not the cosine, decides:

- ``none``: plain cosine rule (``similarity >= similarity_threshold``);
- ``structural``: the cosine rule plus the structural checks (negation, numbers,
  dates, versions, units, entities, direction, different ask) as a veto;
- ``learned``: a gradient-boosted model over pair features scores the candidate;
- ``combined`` (default): structural veto, then the learned score.

The user sets the acceptable wrong-hit rate (``max_wrong_hit_rate``), not a cosine:
the learned kinds pick their candidate floor and score threshold from calibration
tables shipped with the weights (measured out-of-fold on the QQP validation split
replayed as a cache). ``score_threshold`` and ``similarity_threshold`` stay
available for raw control. Feedback (``record_feedback``) moves per-entry and
per-scope boundaries (see :mod:`stagecache.quality._adaptive`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import msgspec

from stagecache._model import Candidate, Verdict
from stagecache.errors import ConfigError
from stagecache.quality._adaptive import AdaptiveThresholds
from stagecache.quality._features import pair_features
from stagecache.quality._learned import Weights, load_weights
from stagecache.quality._structural import Parsed, analyse, compare

__all__ = [
    "LearnedVerifier",
    "PlainVerifier",
    "StructuralVerifier",
    "VerifierConfig",
    "VerifierKind",
    "make_verifier",
]

VerifierKind = Literal["none", "structural", "learned", "combined"]
_KINDS = ("none", "structural", "learned", "combined")


class VerifierConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the cache decides that a candidate is a hit.

    Attributes:
        kind: ``none`` | ``structural`` | ``learned`` | ``combined``.
        max_wrong_hit_rate: the acceptable share of lookups answered wrongly; the
            learned kinds pick their operating point from calibration data to stay
            within it. None: use ``score_threshold``.
        candidate_threshold: cosine below which a candidate is not even verified.
            None: the calibrated floor (learned kinds) or ``similarity_threshold``.
        score_threshold: raw learned-score threshold (0..1); overrides
            ``max_wrong_hit_rate`` when set.
        similarity_threshold: the raw cosine threshold of ``none`` and
            ``structural``.
        adaptive: learn per-entry and per-scope boundaries from feedback.
        feedback_margin: how far above a known wrong hit's score an entry's
            boundary moves.
    """

    kind: VerifierKind = "combined"
    max_wrong_hit_rate: float | None = 0.01
    candidate_threshold: float | None = None
    score_threshold: float | None = None
    similarity_threshold: float = 0.92
    adaptive: bool = True
    feedback_margin: float = 0.05

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(
                f"{self.kind!r} is not one of {', '.join(_KINDS)}",
                field="verifier.kind",
            )
        if self.max_wrong_hit_rate is not None and not (
            0.0 < self.max_wrong_hit_rate < 1.0
        ):
            raise ConfigError(
                f"{self.max_wrong_hit_rate!r} must be between 0 and 1 (exclusive)",
                field="verifier.max_wrong_hit_rate",
            )
        for name in ("candidate_threshold", "score_threshold", "similarity_threshold"):
            value = getattr(self, name)
            if value is not None and not (0.0 <= value <= 1.0):
                raise ConfigError(
                    f"{value!r} must be between 0 and 1", field=f"verifier.{name}"
                )
        if not (0.0 <= self.feedback_margin <= 1.0):
            raise ConfigError(
                f"{self.feedback_margin!r} must be between 0 and 1",
                field="verifier.feedback_margin",
            )
        if self.kind in ("learned", "combined") and (
            self.max_wrong_hit_rate is None and self.score_threshold is None
        ):
            raise ConfigError(
                "set max_wrong_hit_rate or score_threshold for a learned verifier",
                field="verifier.max_wrong_hit_rate",
            )


@lru_cache(maxsize=8192)
def _parse(text: str) -> Parsed:
    return analyse(text)


class _Base:
    """Shared threshold and feedback handling."""

    __slots__ = ("_adaptive", "candidate_threshold", "name", "threshold")

    def __init__(
        self,
        name: str,
        threshold: float,
        candidate_threshold: float,
        adaptive: AdaptiveThresholds | None,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.candidate_threshold = candidate_threshold
        self._adaptive = adaptive

    def _decide(self, candidate: Candidate, score: float, reason: str) -> Verdict:
        if candidate.similarity < self.candidate_threshold:
            return Verdict(False, score, "below candidate threshold")
        t = self.threshold
        if self._adaptive is not None:
            t = self._adaptive.threshold(candidate.entry_id, t)
        if score >= t:
            if self._adaptive is not None:
                self._adaptive.seen(candidate.entry_id, score)
            return Verdict(True, score, reason)
        return Verdict(False, score, f"score {score:.3f} < {t:.3f}")

    def record_feedback(self, entry_id: str, correct: bool) -> None:
        """Learn from a user's judgement of the latest hit of ``entry_id``."""
        if self._adaptive is not None:
            self._adaptive.record(entry_id, correct)

    def forget(self, entry_id: str) -> None:
        """Drop per-entry state (call when an entry is evicted or purged)."""
        if self._adaptive is not None:
            self._adaptive.forget(entry_id)


class PlainVerifier(_Base):
    """The plain cosine rule: accept when ``similarity >= threshold``."""

    __slots__ = ()

    def verify(self, query: str, candidate: Candidate) -> Verdict:
        """Accept or reject one candidate."""
        return self._decide(candidate, candidate.similarity, "similarity")


class StructuralVerifier(_Base):
    """The cosine rule with the structural checks as a veto."""

    __slots__ = ()

    def verify(self, query: str, candidate: Candidate) -> Verdict:
        """Accept or reject one candidate."""
        failed = compare(_parse(query), _parse(candidate.query)).first_failure()
        if failed is not None:
            return Verdict(False, candidate.similarity, f"structural: {failed}")
        return self._decide(candidate, candidate.similarity, "similarity+structural")


class LearnedVerifier(_Base):
    """The learned score, optionally behind the structural veto (``combined``)."""

    __slots__ = ("_veto", "_weights")

    def __init__(
        self,
        name: str,
        threshold: float,
        candidate_threshold: float,
        adaptive: AdaptiveThresholds | None,
        weights: Weights,
        veto: bool,
    ) -> None:
        super().__init__(name, threshold, candidate_threshold, adaptive)
        self._weights = weights
        self._veto = veto

    def score(self, query: str, candidate: Candidate) -> float:
        """The model's probability that ``candidate`` answers ``query`` rightly."""
        w = self._weights
        x = pair_features(
            _parse(query),
            _parse(candidate.query),
            candidate.similarity,
            w.idf,
            w.default_idf,
        )
        return w.model.predict(x)

    def verify(self, query: str, candidate: Candidate) -> Verdict:
        """Accept or reject one candidate."""
        if candidate.similarity < self.candidate_threshold:
            return Verdict(False, 0.0, "below candidate threshold")
        if self._veto:
            failed = compare(_parse(query), _parse(candidate.query)).first_failure()
            if failed is not None:
                return Verdict(False, 0.0, f"structural: {failed}")
        return self._decide(candidate, self.score(query, candidate), self.name)


Verifiers = PlainVerifier | StructuralVerifier | LearnedVerifier


def make_verifier(config: VerifierConfig | None = None) -> Verifiers:
    """Build the verifier a config describes.

    Args:
        config: the verifier settings; None means the defaults (``combined``,
            ``max_wrong_hit_rate=0.01``).

    Returns:
        A verifier with ``name``, ``verify(query, candidate)``,
        ``candidate_threshold`` (the cosine floor the engine should search with),
        ``threshold`` (the score it accepts from) and ``record_feedback``.

    Raises:
        ConfigError: the weights of a learned kind cannot be loaded.
    """
    cfg = config if config is not None else VerifierConfig()
    rate = cfg.max_wrong_hit_rate if cfg.max_wrong_hit_rate is not None else 0.01
    adaptive = (
        AdaptiveThresholds(rate, margin=cfg.feedback_margin) if cfg.adaptive else None
    )
    if cfg.kind in ("none", "structural"):
        floor = (
            cfg.candidate_threshold
            if cfg.candidate_threshold is not None
            else cfg.similarity_threshold
        )
        cls = PlainVerifier if cfg.kind == "none" else StructuralVerifier
        return cls(cfg.kind, cfg.similarity_threshold, floor, adaptive)
    weights = load_weights()
    if cfg.score_threshold is not None:
        floor = cfg.candidate_threshold if cfg.candidate_threshold is not None else 0.7
        threshold = cfg.score_threshold
    else:
        assert cfg.max_wrong_hit_rate is not None  # checked by the config
        floor, threshold, _ = weights.operating_point(
            cfg.kind, cfg.max_wrong_hit_rate, cfg.candidate_threshold
        )
    if not math.isfinite(threshold):
        threshold = 1.0
    return LearnedVerifier(
        cfg.kind, threshold, floor, adaptive, weights, veto=cfg.kind == "combined"
    )
