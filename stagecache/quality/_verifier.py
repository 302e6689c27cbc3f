"""The verifiers and their configuration.

The engine searches the index down to a cosine floor and offers the candidates it
found, best first; the verifier picks the one that really answers the query (or
none). Two numbers govern a hit, and each means what it says:

- ``[verifier] max_wrong_hit_rate`` (the knob): the share of wrong hits you accept;
  a calibrated verifier picks its operating point from it.
- ``[cache] threshold`` (optional): a hard cosine floor. When set, no verifier
  accepts a candidate below it, ever (exact repeats included); the learned kinds
  keep their calibrated decision above it. When not set, the floor in force is the
  verifier's own (``effective_floor``): the calibrated floor of a learned
  kind, ``DEFAULT_THRESHOLD`` (0.92) for ``none`` and ``structural``,
  ``UNCALIBRATED_FLOOR`` (0.95) for a learned kind without a calibration for the
  pipeline's embedder. What outcomes, spans and metrics report as the threshold is
  that floor in force.

The kinds:

- ``none``: accept every candidate the engine offers (the plain cosine rule);
  ``candidate_threshold = None`` (the engine searches down to the floor in force).
- ``structural``: the same, with the structural checks (negation, numbers, dates,
  versions, units, entities, direction, different ask) as a veto.
- ``learned``: a banded decision with a gradient-boosted pair model in the middle
  band; ``candidate_threshold`` is the model's feature floor (0.6, so the rank
  context matches training) and ``floor`` the calibrated acceptance floor.
- ``combined`` (default): ``learned`` behind the structural veto.

Calibration is per embedder (:mod:`stagecache.quality._calibration`): the learned
kinds use the weights fitted for the pipeline's embedder. Without such weights they
do not apply another model's floors: they fall back to the rule ``uncalibrated``
(the structural veto, and cosine >= ``[cache] threshold``, else >=
``UNCALIBRATED_FLOOR``), with one warning in the log.

Every calibrated kind honours the hard invariants
(:mod:`stagecache.quality._invariants`): an exact repeat (normalised text equal) is
always accepted, and a trivially equivalent rewording at a high cosine is accepted
unless a structural check fails (both above a user-set threshold only). The banded
decision of the learned kinds, in order:

1. exact repeat: accept;
2. a structural check fails: reject (``combined``);
3. trivially equivalent and cosine >= ``TRIVIAL_MIN_COSINE``: accept;
4. cosine < floor (``long_floor`` for long texts, see 6): reject;
5. cosine >= ``high`` (calibrated; may be off): accept;
6. both texts long (>= ``LONG_TOKENS`` tokens, outside the short questions the
   model mostly saw): accept from the calibrated ``long_floor`` when the candidate
   stands at least ``long_margin`` above its closest rival (a different entry;
   :func:`~stagecache.quality._features.ambiguity_margins`: a long query about as
   close to two entries cannot tell which one answers it) and the learned score
   reaches ``long_tau``;
7. otherwise the learned score must reach ``tau``.

Every verdict carries the cosine floor of the rule that decided (``Verdict.floor``:
the threshold, the band's floor, ``high`` for the high band) and the score (the
learned score, or the cosine for the cosine rules). ``(floor, high, tau)`` and the
long-text band come from calibration tables shipped with the weights, measured
out-of-fold on the QQP validation split replayed as a cache. Feedback
(``record_feedback``) moves per-entry and per-scope boundaries (see
:mod:`stagecache.quality._adaptive`).
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import msgspec

from stagecache._model import Candidate, Verdict
from stagecache._validate import Unit, check_numbers
from stagecache.cache._settings import DEFAULT_THRESHOLD
from stagecache.errors import ConfigError
from stagecache.quality._adaptive import AdaptiveThresholds
from stagecache.quality._calibration import (
    DEFAULT_EMBEDDER,
    calibrated_embedders,
    load_calibrations,
    weights_for,
)
from stagecache.quality._features import (
    RankContext,
    pair_features,
)
from stagecache.quality._invariants import (
    TRIVIAL_MIN_COSINE,
    trivially_equivalent,
)
from stagecache.quality._learned import Weights
from stagecache.quality._rules import (
    UNCALIBRATED_FLOOR,
    PlainVerifier,
    StructuralVerifier,
    UncalibratedVerifier,
    VerifierBase,
    _exact,
    _parse,
)
from stagecache.quality._rules import _norm as _norm  # benchmarks/quality.py
from stagecache.quality._structural import compare

__all__ = [
    "DEFAULT_THRESHOLD",
    "LONG_COSINE",
    "LONG_TOKENS",
    "UNCALIBRATED_FLOOR",
    "LearnedVerifier",
    "PlainVerifier",
    "StructuralVerifier",
    "UncalibratedVerifier",
    "VerifierConfig",
    "VerifierKind",
    "make_verifier",
]

VerifierKind = Literal["none", "structural", "learned", "combined"]
_KINDS = ("none", "structural", "learned", "combined")
LONG_TOKENS = 15
LONG_COSINE = 0.92

_log = logging.getLogger("stagecache.quality")


class VerifierConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the cache decides that a candidate is a hit.

    Attributes:
        kind: ``none`` | ``structural`` | ``learned`` | ``combined``.
        max_wrong_hit_rate: the acceptable share of lookups answered wrongly; the
            learned kinds pick their operating point from calibration data to stay
            within it. Ignored by ``none`` and ``structural`` (their cosine is the
            cache threshold).
        candidate_threshold: learned kinds only: pin the cosine floor the engine
            searches down to (None: the calibrated floor).
        score_threshold: learned kinds only: raw learned-score threshold (0..1);
            overrides ``max_wrong_hit_rate`` and switches the high band off.
        adaptive: learn per-entry and per-scope boundaries from feedback.
        feedback_margin: how far above a known wrong hit's score an entry's
            boundary moves.
        calibration: learned kinds only: use the calibration fitted for this
            embedder id instead of the pipeline embedder's own (a local copy of a
            calibrated model has its folder as id); None: the pipeline's embedder.
    """

    kind: VerifierKind = "combined"
    max_wrong_hit_rate: Annotated[float, msgspec.Meta(gt=0, lt=1)] | None = 0.02
    candidate_threshold: Unit | None = None
    score_threshold: Unit | None = None
    adaptive: bool = True
    feedback_margin: Unit = 0.05
    calibration: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(
                f"{self.kind!r} is not one of {', '.join(_KINDS)}",
                field="verifier.kind",
            )
        # Every number, by the code that checks every config section.
        check_numbers(self, prefix="verifier")
        if self.kind in ("learned", "combined") and (
            self.max_wrong_hit_rate is None and self.score_threshold is None
        ):
            raise ConfigError(
                "set max_wrong_hit_rate or score_threshold for a learned verifier",
                field="verifier.max_wrong_hit_rate",
            )


class LearnedVerifier(VerifierBase):
    """The banded decision: invariants, veto, high band, learned score."""

    __slots__ = (
        "_veto",
        "_weights",
        "floor",
        "high",
        "long_floor",
        "long_margin",
        "long_tau",
    )

    def __init__(
        self,
        name: str,
        threshold: float,
        candidate_threshold: float,
        floor: float,
        high: float,
        adaptive: AdaptiveThresholds | None,
        weights: Weights,
        veto: bool,
        long_floor: float = LONG_COSINE,
        long_margin: float = 0.0,
        long_tau: float = 0.0,
        *,
        hard_floor: float | None = None,
        calibration: str = DEFAULT_EMBEDDER,
    ) -> None:
        # The lowest cosine any band accepts (exact repeats aside; a trivial
        # rewording is accepted from TRIVIAL_MIN_COSINE whatever the floor): the
        # floor in force when no threshold is set.
        lowest = min(floor, long_floor, TRIVIAL_MIN_COSINE)
        super().__init__(
            name,
            threshold,
            candidate_threshold,
            adaptive,
            hard_floor=hard_floor,
            default_floor=lowest,
            calibration=calibration,
        )
        self.floor = floor
        self.high = high
        self.long_floor = long_floor
        self.long_margin = long_margin
        self.long_tau = long_tau
        self._weights = weights
        self._veto = veto

    def effective_floor(self, threshold: float | None) -> float:
        """The calibrated floor, raised to ``threshold`` when one is set (the
        threshold is a floor on top of the budget's decision, never below it)."""
        if threshold is None:
            return self.default_floor
        return max(threshold, self.default_floor)

    def score(
        self,
        query: str,
        candidate: Candidate,
        context: RankContext | None = None,
        equivalent: bool | None = None,
    ) -> float:
        """The model's probability that ``candidate`` answers ``query`` rightly."""
        w = self._weights
        if context is None:
            context = (candidate.similarity, self.candidate_threshold or 0.0, 0)
        if equivalent is None:
            equivalent = trivially_equivalent(query, candidate.query)
        x = pair_features(
            _parse(query),
            _parse(candidate.query),
            candidate.similarity,
            w.idf,
            w.default_idf,
            context,
            equivalent,
        )
        return w.model.predict(x)

    def _verify(
        self,
        query: str,
        candidate: Candidate,
        context: RankContext | None,
        margin: float | None = None,
    ) -> Verdict:
        sim = candidate.similarity
        if _exact(query, candidate):
            return self._accept(candidate, 1.0, "exact repeat", None)
        pq, pc = _parse(query), _parse(candidate.query)
        checks = compare(pq, pc)
        failed = checks.first_failure()
        if self._veto and failed is not None:
            return Verdict(False, 0.0, f"structural: {failed}", self._floor(None))
        equivalent = trivially_equivalent(query, candidate.query)
        trivial = equivalent and sim >= TRIVIAL_MIN_COSINE and failed is None
        long = min(len(pq.tokens), len(pc.tokens)) >= LONG_TOKENS
        band = self.long_floor if long else self.floor
        if not trivial and sim < band:
            return Verdict(False, 0.0, "below candidate threshold", self._floor(band))
        score = self.score(query, candidate, context, equivalent)
        t = self._boundary(candidate.entry_id, self.threshold)
        # feedback raised this entry's boundary above the model's score: no band
        # overrides it
        blocked = t > self.threshold and score < t
        if not blocked:
            if trivial:
                return self._accept(
                    candidate, score, "trivially equivalent", TRIVIAL_MIN_COSINE
                )
            if sim >= self.high:
                return self._accept(candidate, score, "high cosine", self.high)
            if long:
                return self._long(candidate, score, margin, band)
        if score >= t:
            return self._accept(candidate, score, self.name, band)
        return Verdict(False, score, f"score {score:.3f} < {t:.3f}", self._floor(band))

    def _long(
        self, candidate: Candidate, score: float, margin: float | None, band: float
    ) -> Verdict:
        """Step 6: a long text needs a clear best match and ``long_tau``."""
        if margin is None:  # the only candidate
            margin = candidate.similarity - (self.candidate_threshold or 0.0)
        floor = self._floor(band)
        if margin < self.long_margin:
            return Verdict(
                False,
                score,
                f"long text, ambiguous: {margin:.3f} above the runner-up",
                floor,
            )
        if score < self.long_tau:
            return Verdict(
                False, score, f"long text, score {score:.3f} < {self.long_tau}", floor
            )
        return self._accept(candidate, score, "long text, clear best match", band)


Verifiers = PlainVerifier | StructuralVerifier | UncalibratedVerifier | LearnedVerifier


def make_verifier(
    config: VerifierConfig | None = None,
    *,
    embedder_id: str | None = None,
    threshold: float | None = None,
) -> Verifiers:
    """Build the verifier a config describes, for one embedder and threshold.

    Args:
        config: the verifier settings; None means the defaults (``combined``,
            ``max_wrong_hit_rate=0.02``).
        embedder_id: the ``model_id`` of the pipeline's embedder, which picks the
            calibration of the learned kinds; None: the default embedder
            (all-MiniLM-L6-v2). ``config.calibration`` overrides it.
        threshold: the cache's ``[cache] threshold`` when the user set it: a hard
            cosine floor no kind accepts below (None: not set).

    Returns:
        A verifier with ``name``, ``verify(query, candidate)``,
        ``verify_ranked(query, candidates)``, ``candidate_threshold`` (the cosine
        floor the engine should search down to, or None for the floor in force),
        ``effective_floor(threshold)``, ``threshold``, ``calibration`` and
        ``record_feedback``.

    Raises:
        ConfigError: the weights of a learned kind cannot be loaded, or
            ``config.calibration`` names no calibrated embedder.
    """
    cfg = config if config is not None else VerifierConfig()
    rate = cfg.max_wrong_hit_rate if cfg.max_wrong_hit_rate is not None else 0.01
    adaptive = (
        AdaptiveThresholds(rate, margin=cfg.feedback_margin) if cfg.adaptive else None
    )
    if cfg.kind == "none":
        return PlainVerifier("none", 0.0, None, adaptive, hard_floor=threshold)
    if cfg.kind == "structural":
        return StructuralVerifier(
            "structural", 0.0, None, adaptive, hard_floor=threshold
        )
    embedder = cfg.calibration or embedder_id or DEFAULT_EMBEDDER
    calibrations = load_calibrations()
    weights = weights_for(embedder, calibrations)
    if weights is None:
        known = ", ".join(calibrated_embedders(calibrations)) or "none"
        if cfg.calibration is not None:
            raise ConfigError(
                f"no calibration is fitted for {cfg.calibration!r}; calibrated "
                f"embedders: {known}",
                field="verifier.calibration",
            )
        _log.warning(
            "verifier %s: no calibration for the embedder %r (calibrated: %s); "
            "rule 'uncalibrated': the structural veto and cosine >= %.3f",
            cfg.kind,
            embedder,
            known,
            UNCALIBRATED_FLOOR if threshold is None else threshold,
        )
        return UncalibratedVerifier(
            cfg.kind,
            0.0,
            None,
            adaptive,
            hard_floor=threshold,
            default_floor=UNCALIBRATED_FLOOR,
            calibration="uncalibrated",
        )
    return _learned(cfg, weights, adaptive, threshold, embedder)


def _learned(
    cfg: VerifierConfig,
    weights: Weights,
    adaptive: AdaptiveThresholds | None,
    threshold: float | None,
    embedder: str,
) -> LearnedVerifier:
    if cfg.score_threshold is not None:
        floor = (
            cfg.candidate_threshold
            if cfg.candidate_threshold is not None
            else weights.feature_floor
        )
        tau, high = cfg.score_threshold, 2.0
        long_floor, long_margin, long_tau = LONG_COSINE, 0.0, cfg.score_threshold
        if cfg.candidate_threshold is not None:  # a pinned floor holds for all texts
            long_floor = max(long_floor, floor)
    else:
        assert cfg.max_wrong_hit_rate is not None  # checked by the config
        floor, high, tau, row = weights.operating_point(
            cfg.kind, cfg.max_wrong_hit_rate, cfg.candidate_threshold
        )
        long_floor = row.get("long_floor", LONG_COSINE)
        if cfg.candidate_threshold is not None:  # a pinned floor holds for all texts
            long_floor = max(long_floor, floor)
        long_margin = row.get("long_margin", 0.0)
        long_tau = row.get("long_tau", 0.0)
    # The engine searches down to the model's feature floor (or a lower pinned
    # floor) so that the rank context (runner-up, close candidates) is the one the
    # model was trained on; the calibrated floor is applied here.
    search = min(floor, weights.feature_floor)
    return LearnedVerifier(
        cfg.kind,
        tau,
        search,
        floor,
        high,
        adaptive,
        weights,
        veto=cfg.kind == "combined",
        long_floor=long_floor,
        long_margin=long_margin,
        long_tau=long_tau,
        hard_floor=threshold,
        calibration=weights.embedders[0] if weights.embedders else embedder,
    )
