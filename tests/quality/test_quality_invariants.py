"""Hard invariants every verifier kind honours: exact repeats always hit, trivial
rewordings hit at a high cosine, and the structural veto beats the cosine."""

from __future__ import annotations

import pytest

from stagecache._model import Candidate
from stagecache.quality import VerifierConfig, make_verifier
from stagecache.quality._invariants import normalise_text, trivially_equivalent

KINDS = ("none", "structural", "learned", "combined")


def verifier(kind: str, rate: float = 0.01):  # type: ignore[no-untyped-def]
    return make_verifier(
        VerifierConfig(kind=kind, max_wrong_hit_rate=rate)  # type: ignore[arg-type]
    )


def cand(query: str, similarity: float, entry_id: str = "e1") -> Candidate:
    return Candidate(entry_id=entry_id, query=query, similarity=similarity)


def test_normalise_text() -> None:
    assert normalise_text("  How do I\tRESET my password?? ") == (
        "how do i reset my password"
    )
    assert normalise_text("Cafe\u0301!") == normalise_text("Café")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rate", [0.005, 0.01, 0.05])
@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("How do I reset my password?", "How do I reset my password?"),
        ("how do i reset my password", "How do I reset my password?"),
        ("Is it not safe to eat raw eggs?", "is it  NOT safe to eat raw eggs"),
        ("What is 15% tip on $80?", "What is 15% tip on $80?"),
    ],
)
def test_an_exact_repeat_is_always_accepted(
    kind: str, rate: float, query: str, cached: str
) -> None:
    assert verifier(kind, rate).verify(query, cand(cached, 0.999)).accept


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reset my password?", "How can I reset my password?"),
        ("How to reset my password", "How do I reset my password?"),
        ("What's the capital of France?", "What is the capital of France?"),
        ("Please tell me how to boil an egg", "How do I boil an egg?"),
        (
            "Can you tell me what the capital of Peru is?",
            "What is the capital of Peru?",
        ),
    ],
)
def test_function_word_rewordings_are_trivially_equivalent(a: str, b: str) -> None:
    assert trivially_equivalent(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Who was the president of France?", "Who is the president of France?"),
        ("How do I reset my password?", "Why do I reset my password?"),
        ("How do I reset my password?", "How do I reset my email password?"),
        ("Is a dog bigger than a cat?", "Is a cat bigger than a dog?"),
    ],
)
def test_content_changes_are_not_trivially_equivalent(a: str, b: str) -> None:
    assert not trivially_equivalent(a, b)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("How can I reset my password?", "How do I reset my password?"),
        ("how to reset my password", "How do I reset my password?"),
        ("What's the capital of France?", "What is the capital of France?"),
    ],
)
def test_a_trivial_rewording_at_high_cosine_is_accepted(
    kind: str, query: str, cached: str
) -> None:
    assert verifier(kind).verify(query, cand(cached, 0.97)).accept


@pytest.mark.parametrize("kind", ["structural", "combined"])
@pytest.mark.parametrize(
    ("query", "cached", "check"),
    [
        ("Is it not safe to eat raw eggs?", "Is it safe to eat raw eggs?", "negation"),
        ("What is 20% tip on $80?", "What is 15% tip on $80?", "number"),
        ("What changed in Django 5.0?", "What changed in Django 4.2?", "version"),
        ("Convert EUR to USD", "Convert USD to EUR", "direction"),
    ],
)
def test_the_structural_veto_wins_even_at_cosine_099(
    kind: str, query: str, cached: str, check: str
) -> None:
    v = verifier(kind)
    verdict = v.verify(query, cand(cached, 0.99))
    assert not verdict.accept
    assert verdict.reason == f"structural: {check}"
    idx, ranked = v.verify_ranked(query, [cand(cached, 0.99)])
    assert idx is None and ranked is not None and not ranked.accept
