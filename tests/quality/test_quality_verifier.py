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
    # the raw cosine lives in [cache] threshold, not here
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"similarity_threshold": 0.9}, VerifierConfig)


@pytest.mark.parametrize("kind", ["none", "structural"])
def test_plain_kinds_defer_the_cosine_to_the_cache_threshold(kind: str) -> None:
    v = make_verifier(VerifierConfig(kind=kind))  # type: ignore[arg-type]
    assert v.candidate_threshold is None
    assert v.verify("How do I bake bread?", cand("Bread baking steps", 0.93)).accept


@pytest.mark.parametrize("kind", ["learned", "combined"])
def test_learned_kinds_name_their_candidate_floor(kind: str) -> None:
    v = make_verifier(VerifierConfig(kind=kind))  # type: ignore[arg-type]
    assert isinstance(v, LearnedVerifier)
    assert v.candidate_threshold is not None
    assert 0.5 <= v.candidate_threshold <= v.floor <= 0.95


def test_structural_verifier_vetoes_a_negation() -> None:
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
    w = load_weights()
    strict = w.operating_point("combined", 0.01, None)
    loose = w.operating_point("combined", 0.05, None)
    assert strict[3]["wrong_rate"] <= 0.01
    assert loose[3]["wrong_rate"] <= 0.05
    assert strict[3]["right_rate"] <= loose[3]["right_rate"]
    # an unreachable budget falls back to the strictest calibrated point
    tiny = w.operating_point("combined", 1e-6, None)[3]
    assert tiny["wrong_rate"] == min(e["wrong_rate"] for e in w.calibration["combined"])


def test_a_pinned_candidate_threshold_is_honoured() -> None:
    v = make_verifier(VerifierConfig(candidate_threshold=0.8))
    assert isinstance(v, LearnedVerifier)
    assert v.floor == 0.8
    # the engine still searches down to the model's feature floor (rank context)
    assert v.candidate_threshold is not None and v.candidate_threshold <= 0.8
    verdict = v.verify(
        "What is a good laptop for students?",
        cand("Which laptop should a student buy?", 0.79),
    )
    assert not verdict.accept
    assert verdict.reason == "below candidate threshold"


@pytest.mark.parametrize("score_threshold", [None, 0.5])
def test_a_pinned_candidate_threshold_holds_for_long_texts_too(
    score_threshold: float | None,
) -> None:
    v = make_verifier(
        VerifierConfig(candidate_threshold=0.97, score_threshold=score_threshold)
    )
    assert isinstance(v, LearnedVerifier) and v.long_floor >= 0.97
    verdict = v.verify(LONG_Q, cand(LONG_A, 0.96))
    assert not verdict.accept and verdict.reason == "below candidate threshold"


def test_raw_score_threshold_overrides_the_budget() -> None:
    v = make_verifier(VerifierConfig(score_threshold=0.0, candidate_threshold=0.5))
    assert v.threshold == 0.0
    assert v.verify(
        "What is a good laptop for students?",
        cand("Which laptop should a student buy?", 0.9),
    ).accept


def test_verify_ranked_skips_a_vetoed_best_candidate() -> None:
    v = make_verifier(VerifierConfig())
    cands = [
        cand("How do I uninstall Docker on Ubuntu?", 0.97, "bad"),
        cand("How do I install Docker on Ubuntu?", 0.96, "good"),
    ]
    idx, verdict = v.verify_ranked("How can I install Docker on Ubuntu?", cands)
    assert idx == 1 and verdict is not None and verdict.accept
    assert v.verify_ranked("anything", []) == (None, None)


def test_wrong_feedback_blocks_the_same_hit_again() -> None:
    v = make_verifier(VerifierConfig(kind="none"))
    c = cand("How do I reset my password?", 0.93)
    assert v.verify("How can I reset my password?", c).accept
    v.record_feedback("e1", correct=False)
    assert not v.verify("How can I reset my password?", c).accept
    # a single unconfirmed wrong switches the entry off; other entries still hit
    assert v.verify("How can I reset my password?", cand("x", 0.93, "e2")).accept


def test_wrong_feedback_moves_a_learned_entrys_boundary() -> None:
    v = make_verifier(VerifierConfig(kind="combined"))
    q = "What is a good laptop for students?"
    c = cand("Which laptop should a student buy?", 0.9)
    first = v.verify(q, c)
    if not first.accept:  # the model may already reject it: force a hit
        v = make_verifier(VerifierConfig(score_threshold=0.0, candidate_threshold=0.5))
        first = v.verify(q, c)
    assert first.accept
    v.record_feedback("e1", correct=False)
    assert not v.verify(q, c).accept
    assert v.verify(q, cand(c.query, 0.9, "e2")).accept


def test_right_feedback_lowers_a_learned_entrys_boundary() -> None:
    v = make_verifier(VerifierConfig(score_threshold=0.5, candidate_threshold=0.5))
    assert isinstance(v, LearnedVerifier)
    q = "What is a good laptop for students?"
    c = cand("Which laptop should a student buy?", 0.9)
    s = v.score(q, c)
    v.threshold = s + 0.02  # just above this pair's score
    assert not v.verify(q, c).accept
    v.threshold = s - 0.01
    for _ in range(2):
        assert v.verify(q, c).accept
        v.record_feedback("e1", correct=True)
    v.threshold = s + 0.02
    assert v.verify(q, c).accept  # e1 learned it may go lower
    assert not v.verify(q, cand(c.query, 0.9, "e2")).accept


LONG_Q = (
    "The cache keeps previously downloaded and processed datasets on disk, so"
    " the next load reads them quickly without downloading them again."
)
LONG_A = (
    "The cache stores previously downloaded and processed datasets, allowing"
    " faster access to the data without the need to download it again."
)
LONG_B = (
    "The cache directory can be moved by setting an environment variable"
    " before the library is imported, which changes where datasets are kept."
)


def test_ambiguity_margins_ignore_rivals_with_the_same_text() -> None:
    from stagecache.quality._features import ambiguity_margins

    m = ambiguity_margins([0.95, 0.94, 0.80], ["a", "a", "b"], 0.6)
    assert m == pytest.approx([0.15, 0.14, 0.80 - 0.95])
    assert ambiguity_margins([0.9], ["a"], 0.6) == pytest.approx([0.3])
    assert ambiguity_margins([0.7, 0.65], ["a", "b"], 0.68) == pytest.approx(
        [0.02, 0.65 - 0.7]
    )


def long_verifier(margin: float = 0.05, tau: float = 0.0) -> LearnedVerifier:
    return LearnedVerifier(
        "combined",
        0.7,
        0.6,
        0.9,
        2.0,
        None,
        load_weights(),
        veto=True,
        long_floor=0.85,
        long_margin=margin,
        long_tau=tau,
    )


def test_a_long_query_between_two_entries_is_a_miss() -> None:
    v = long_verifier()
    sim = 0.9
    clear = [cand(LONG_A, sim, "a"), cand(LONG_B, v.candidate_threshold or 0.6, "b")]
    idx, verdict = v.verify_ranked(LONG_Q, clear)
    assert idx == 0 and verdict is not None
    assert verdict.reason == "long text, clear best match"
    close = [cand(LONG_A, sim, "a"), cand(LONG_B, sim - v.long_margin / 2, "b")]
    idx, verdict = v.verify_ranked(LONG_Q, close)
    assert idx is None and verdict is not None and not verdict.accept
    # the same text cached twice (two entries) is not a rival
    twin = [cand(LONG_A, sim, "a"), cand(LONG_A, sim - 0.001, "a2")]
    assert v.verify_ranked(LONG_Q, twin)[0] == 0


def test_a_long_candidate_below_the_long_floor_is_a_miss() -> None:
    v = long_verifier()
    assert v.verify(LONG_Q, cand(LONG_A, 0.87)).accept
    verdict = v.verify(LONG_Q, cand(LONG_A, 0.84))
    assert not verdict.accept and verdict.reason == "below candidate threshold"


def test_a_long_candidate_needs_the_long_score_threshold() -> None:
    v = long_verifier(tau=1.0)
    verdict = v.verify(LONG_Q, cand(LONG_A, 0.9))
    assert not verdict.accept and verdict.reason.startswith("long text, score")


def test_the_default_calibrates_a_long_text_band() -> None:
    v = make_verifier(VerifierConfig(adaptive=False))
    assert isinstance(v, LearnedVerifier)
    assert 0.6 <= v.long_floor <= 1.0 and v.long_margin >= 0 and v.long_tau >= 0
