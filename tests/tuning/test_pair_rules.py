"""The rule-made training pairs of benchmarks/build_pair_model.py (needs WordNet)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _pair_rules as R  # noqa: E402


def need_wordnet() -> None:
    pytest.importorskip(
        "nltk", reason="the bench extra: pip install 'stagecache[bench]'"
    )
    if not Path("/usr/share/wordnet/data.noun").is_file():
        pytest.skip("WordNet: apt-get install -y wordnet-base wordnet-sense-index")


def rng() -> random.Random:
    return random.Random(0)


@pytest.mark.parametrize(
    ("rule", "text", "want"),
    [
        (R.neg_number, "What is a 15% tip?", "What is a "),
        (
            R.neg_negation,
            "Is it safe to eat raw eggs?",
            "Is it not safe to eat raw eggs?",
        ),
        (R.neg_negation, "Why doesn't my laptop charge?", "Why does my laptop charge?"),
        (R.neg_roles, "Flights from Paris to Rome", "Flights from Rome to Paris"),
        (R.neg_unit, "How many km is a marathon?", "How many miles is a marathon?"),
        (R.neg_date, "Is the office open on Monday?", "Is the office open on "),
    ],
)
def test_negative_rules_change_what_the_text_is_about(
    rule: R.Rule, text: str, want: str
) -> None:
    out = rule(text, rng())
    assert out is not None and out != text
    assert out.startswith(want)
    assert rule("plain words only here", rng()) is None


def test_negation_rule_does_not_fire_on_contractions_as_rewordings() -> None:
    assert R.pos_contraction("Why do I not sleep?", rng()) is None
    assert R.pos_contraction("It is not raining", rng()) in (
        "It's not raining",
        "It isn't raining",
    )


def test_rewording_keeps_entities_numbers_and_negation() -> None:
    need_wordnet()
    text = "How do I convert 5 km to miles in Python without numpy?"
    for seed in range(20):
        out = R.reword(text, random.Random(seed), steps=3)
        if out is None:
            continue
        for kept in ("5", "km", "miles", "Python", "without", "numpy"):
            assert kept.lower() in out.lower(), (seed, out)


def write_val(folder: Path, duplicate: str, near_miss: str) -> None:
    """A small qqp_pairs_val.csv: 60 rows of each template ({i} = the row)."""
    rows = ["question1,question2,is_duplicate"]
    for i in range(60):
        rows.append(f"How do I learn Python in {i} days?,{duplicate.format(i=i)},1")
        rows.append(f"Is it safe to travel to India in {i}?,{near_miss.format(i=i)},0")
    (folder / "qqp_pairs_val.csv").write_text("\n".join(rows) + "\n")


KW = {"qqp_negatives": 20, "short": 40, "long_qqp": 20, "long_wordnet": 20}


def test_pair_set_is_deterministic_and_never_reads_evaluation_sets(
    tmp_path: Path,
) -> None:
    need_wordnet()
    import _pair_data as P

    write_val(tmp_path, "How can I learn Python fast?", "Is Paris safe?")
    one = P.build_pairs(tmp_path, seed=3, **KW)
    two = P.build_pairs(tmp_path, seed=3, **KW)
    assert one.pairs == two.pairs
    assert {p.label for p in one.pairs} == {0, 1}
    assert any(len(p.text_a.split()) >= 25 for p in one.pairs)  # long texts too
    # only the val file was there to read: the test/mock/contextual files were not
    assert sorted(x.name for x in tmp_path.iterdir()) == ["qqp_pairs_val.csv"]


@pytest.mark.parametrize(
    ("text", "forms"),
    [
        (
            "What is the best way to learn Python?",
            {
                "What is the best way to learn it?",
                "What is the best way to learn that?",
                "What is the best way to learn this one?",
            },
        ),
        (
            "How can I learn to relax?",
            None,  # no trailing noun phrase to drop: no follow-up
        ),
        (
            "What is the best coaching institute for CAT preparation?",
            {
                "What is the best coaching institute?",
                "What is the best coaching institute for it?",
                "What is the best coaching institute for that?",
                "What is the best coaching institute for this one?",
            },
        ),
    ],
)
def test_a_followup_names_no_topic(text: str, forms: set[str] | None) -> None:
    need_wordnet()
    outs = {R.neg_followup(text, random.Random(seed)) for seed in range(12)}
    if forms is None:
        assert outs == {None}
    else:
        assert outs <= forms and outs, outs


def test_followup_negatives_do_not_change_the_other_sources(tmp_path: Path) -> None:
    need_wordnet()
    import _pair_data as P

    write_val(tmp_path, "How can I learn Python?", "Is Paris safe?")
    without = P.build_pairs(tmp_path, seed=3, **KW)
    with_them = P.build_pairs(tmp_path, seed=3, followups=30, **KW)
    added = {p for p in with_them.pairs} - {p for p in without.pairs}
    assert set(without.pairs) <= set(with_them.pairs)
    assert added and all(p.label == 0 for p in added)
    assert with_them.counts["short_neg_followup"] + with_them.counts[
        "short_neg_followup_other"
    ] == len(added)


def test_held_out_rows_reach_no_training_pair(tmp_path: Path) -> None:
    need_wordnet()
    import _pair_data as P

    write_val(tmp_path, "How can I learn Rust {i}?", "Is Paris safe {i}?")
    plain = P.build_pairs(tmp_path, seed=3, **KW)
    assert plain.heldout == []
    held = P.build_pairs(tmp_path, seed=3, holdout=0.3, **KW)
    again = P.build_pairs(tmp_path, seed=5, holdout=0.3, **KW)
    assert 15 <= len(held.heldout) <= 60
    assert held.heldout == again.heldout  # by the row, whatever the seed
    questions = {q for a, b, _ in held.heldout for q in (a, b)}
    for pair in held.pairs:
        for q in questions:  # not as a pair, not inside a long joined text
            assert q not in pair.text_a and q not in pair.text_b, (q, pair)
