"""The verifiers: config validation, learned scoring, the calibrated operating point
and feedback."""

from __future__ import annotations

import pytest

from stagecache._model import Candidate
from stagecache.errors import ConfigError
from stagecache.quality import (
    LearnedVerifier,
    VerifierConfig,
    load_weights,
    make_verifier,
)
from stagecache.quality._features import FEATURE_NAMES
from stagecache.types import Verifier


def cand(query: str, similarity: float, entry_id: str = "e1") -> Candidate:
    return Candidate(entry_id=entry_id, query=query, similarity=similarity)


def test_every_kind_satisfies_the_verifier_protocol() -> None:
    for kind in ("none", "structural", "learned", "combined"):
        v = make_verifier(VerifierConfig(kind=kind))  # type: ignore[arg-type]
        assert isinstance(v, Verifier)
        assert v.name == kind


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("verifier.max_wrong_hit_rate", {"max_wrong_hit_rate": 1.5}),
        ("verifier.candidate_threshold", {"candidate_threshold": -0.1}),
        ("verifier.score_threshold", {"score_threshold": 2.0}),
        ("verifier.similarity_threshold", {"similarity_threshold": 1.2}),
        ("verifier.max_wrong_hit_rate", {"max_wrong_hit_rate": None}),
    ],
)
def test_invalid_config_names_the_field(field: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=field):
        VerifierConfig(**kwargs)  # type: ignore[arg-type]


def test_config_rejects_unknown_fields() -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"kind": "combined", "treshold": 0.9}, VerifierConfig)


def test_plain_verifier_is_the_cosine_rule() -> None:
    v = make_verifier(VerifierConfig(kind="none", similarity_threshold=0.9))
    assert v.verify("q", cand("q2", 0.91)).accept
    assert not v.verify("q", cand("q2", 0.89)).accept


def test_structural_verifier_vetoes_a_negation_above_threshold() -> None:
    v = make_verifier(VerifierConfig(kind="structural"))
    verdict = v.verify(
        "Is it not safe to eat raw eggs?", cand("Is it safe to eat raw eggs?", 0.97)
    )
    assert not verdict.accept
    assert verdict.reason == "structural: negation"


def test_learned_weights_load_and_match_the_feature_list() -> None:
    w = load_weights()
    assert w.features == FEATURE_NAMES
    assert len(w.idf) > 1000


def test_learned_score_prefers_a_paraphrase_to_a_near_miss() -> None:
    v = make_verifier(VerifierConfig(kind="learned"))
    assert isinstance(v, LearnedVerifier)
    cached = "How do I reset my Gmail password?"
    same = v.score("How can I reset my Gmail password?", cand(cached, 0.97))
    other = v.score("How do I reset my Outlook password?", cand(cached, 0.85))
    assert 0.0 <= other < same <= 1.0


def test_operating_point_follows_the_wrong_hit_budget() -> None:
    strict = make_verifier(VerifierConfig(max_wrong_hit_rate=0.005))
    loose = make_verifier(VerifierConfig(max_wrong_hit_rate=0.05))
    assert strict.threshold > loose.threshold
    _, _, row = load_weights().operating_point("combined", 0.01, None)
    assert row["wrong_rate"] <= 0.01


def test_candidate_threshold_is_separate_from_acceptance() -> None:
    v = make_verifier(VerifierConfig(candidate_threshold=0.8))
    assert v.candidate_threshold == 0.8
    verdict = v.verify(
        "How can I reset my password?", cand("How do I reset my password?", 0.79)
    )
    assert not verdict.accept
    assert verdict.reason == "below candidate threshold"


def test_raw_score_threshold_overrides_the_budget() -> None:
    v = make_verifier(VerifierConfig(score_threshold=0.0, candidate_threshold=0.5))
    assert v.threshold == 0.0
    assert v.verify(
        "How can I reset my password?", cand("How do I reset my password?", 0.9)
    ).accept


def test_wrong_feedback_blocks_the_same_hit_again() -> None:
    v = make_verifier(VerifierConfig(kind="none", similarity_threshold=0.9))
    c = cand("How do I reset my password?", 0.93)
    assert v.verify("How can I reset my password?", c).accept
    v.record_feedback("e1", correct=False)
    assert not v.verify("How can I reset my password?", c).accept
    # other entries are unaffected by one entry's boundary (only a small scope step)
    assert v.verify("How can I reset my password?", cand("x", 0.95, "e2")).accept


def test_right_feedback_lowers_an_entrys_boundary() -> None:
    v = make_verifier(
        VerifierConfig(kind="none", similarity_threshold=0.9, candidate_threshold=0.8)
    )
    v.record_feedback("e1", True)  # nothing seen yet: only the scope offset moves
    for s in (0.93, 0.91):
        assert v.verify("q", cand("q2", s)).accept
        v.record_feedback("e1", correct=True)
    assert v.verify("q", cand("q2", 0.895)).accept
    assert not v.verify("q", cand("q2", 0.895, "e2")).accept
