"""Pair files, the grouped held-out split and the calibration arithmetic of
``stagecache tune``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stagecache.errors import InputError
from stagecache.tuning._data import LabelledPair, dedupe, read_pairs, split_pairs
from stagecache.tuning._report import floor_for, operating, roc_auc


def pair(a: str, b: str, label: int) -> LabelledPair:
    return LabelledPair(a, b, label, "test")


def chain_set() -> list[LabelledPair]:
    """30 pairs: 10 groups of 3 sharing a hub text, plus hubs re-cased."""
    out = []
    for g in range(10):
        hub = f"How do I renew licence number {g}?"
        out += [
            pair(hub, f"How can I renew licence {g}?", 1),
            pair(hub.upper(), f"Renewing licence {g}: how?", 1),  # same text, recased
            pair(hub, f"How do I cancel licence number {g}?", 0),
        ]
    return out


def test_jsonl_and_csv_read_the_same_pairs(tmp_path: Path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"text_a": "a one", "text_b": "b one", "label": 1}\n\n'
        '{"text_a": "a two", "text_b": "b, two", "label": false}\n'
    )
    csv = tmp_path / "p.csv"
    csv.write_text('text_a,text_b,label,note\na one,b one,1,x\na two,"b, two",0,y\n')
    got = [(p.text_a, p.text_b, p.label) for p in read_pairs(jsonl)]
    assert got == [(p.text_a, p.text_b, p.label) for p in read_pairs(csv)]
    assert got == [("a one", "b one", 1), ("a two", "b, two", 0)]
    assert read_pairs(csv)[1].source == f"{csv}:3"


AB = '{"text_a": "a", "text_b": "b", '
HEAD = "text_a,text_b,label\n"


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("p.jsonl", AB + '"label": 1}\n{oops\n', "p.jsonl:2: not valid JSON"),
        ("p.jsonl", AB + '"label": 2}\n', "p.jsonl:1: label: 2 is not a label"),
        ("p.jsonl", AB + '"label": "maybe"}\n', "label: 'maybe' is not a label"),
        ("p.jsonl", '{"text_a": "a", "text_b": "b"}\n', "p.jsonl:1: label: missing"),
        ("p.jsonl", '{"text_a": " ", "text_b": "b", "label": 1}\n', "text_a: empty"),
        ("p.jsonl", '{"text_a": "a", "label": 1}\n', "p.jsonl:1: text_b: missing"),
        ("p.jsonl", '{"text_a": 3, "text_b": "", "label": 1}\n', "text_a: 3 is not"),
        ("p.jsonl", "[1, 2]\n", "p.jsonl:1: a JSON list"),
        ("p.jsonl", "\n\n", "no pairs in the file"),
        ("p.csv", "a,b,label\nx,y,1\n", "p.csv:1: CSV header a,b,label lacks text_a"),
        ("p.csv", HEAD + "x,y,1\nx,,0\n", "p.csv:3: text_b: empty text"),
        ("p.csv", HEAD + "x,y,1,extra\n", "p.csv:2: more fields than the header"),
    ],
)  # fmt: skip
def test_every_bad_line_is_named(
    tmp_path: Path, name: str, body: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(InputError) as caught:
        read_pairs(path)
    assert message in str(caught.value)


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file"):
        read_pairs(tmp_path / "nope.jsonl")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes((HEAD + "caf\xe9,x,1\n").encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_pairs(bad)


def test_the_split_is_grouped_and_deterministic() -> None:
    pairs = chain_set()
    first = split_pairs(pairs, holdout=0.2, seed=7)
    assert split_pairs(list(pairs), holdout=0.2, seed=7) == first
    assert split_pairs(pairs, holdout=0.2, seed=8) != first

    def texts(side: list[LabelledPair]) -> set[str]:
        return {
            " ".join(t.casefold().split()) for p in side for t in (p.text_a, p.text_b)
        }

    assert not texts(first.train) & texts(first.held_out)
    assert len(first.held_out) == 6  # two whole groups of 3
    for side in (first.train, first.held_out):
        assert {p.label for p in side} == {0, 1}


def test_split_refuses_too_few_one_class_and_one_group() -> None:
    few = chain_set()[:9]
    with pytest.raises(InputError, match="9 pairs, too few for a held-out split"):
        split_pairs(few, holdout=0.2, seed=0)
    same = [p for p in chain_set() if p.label == 1]
    with pytest.raises(
        InputError, match=r"every pair has the same label; add pairs with label 0"
    ):
        split_pairs(same, holdout=0.2, seed=0)
    hub = [pair("the one hub", f"other {i}", i % 2) for i in range(12)]
    with pytest.raises(InputError, match="no held-out split keeps both labels"):
        split_pairs(hub, holdout=0.2, seed=0)


def test_dedupe_drops_repeats_in_either_order() -> None:
    a, b = pair("Hi there", "hello", 1), pair("HELLO", "hi  there", 1)
    assert dedupe([a, b, pair("hello", "hi there", 0)]) == [
        a,
        pair("hello", "hi there", 0),
    ]


def test_auc_and_the_floor_meet_the_budget() -> None:
    scores = np.array([0.99, 0.95, 0.93, 0.91, 0.90, 0.85, 0.80, 0.70, 0.60, 0.50])
    labels = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0, 0])
    # 5 positives x 5 negatives: 21 of 25 pairs ordered right
    assert roc_auc(scores, labels) == pytest.approx(21 / 25)
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    floor = floor_for(scores, labels, 0.02)  # 10 lookups: no wrong hit allowed
    assert floor == 0.9301
    op = operating(scores, labels, floor)
    assert (op.hits, op.wrong_hits, op.recall) == (2, 0, 0.4)
    floor = floor_for(scores, labels, 0.1)  # one wrong hit allowed
    assert floor == 0.8501
    op = operating(scores, labels, floor)
    assert (op.hits, op.wrong_hits, op.wrong_hit_rate, op.precision) == (5, 1, 0.1, 0.8)
    assert floor_for(np.array([1.0, 1.0]), np.array([1, 0]), 0.02) == 1.0
