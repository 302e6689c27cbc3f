"""Labelled text pairs, the input of every training run, checked at the boundary."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec

from stagecache.errors import InputError
from stagecache.tuning._data import read_pairs as read_labelled

__all__ = ["TrainingPair", "check_pairs", "read_pairs", "write_pairs"]


class TrainingPair(msgspec.Struct, frozen=True):
    """Two texts and whether a cached answer for one is right for the other.

    Attributes:
        text_a: the cached text (or either text: the loss is symmetric).
        text_b: the query text.
        label: 1 when they are equivalent for caching, 0 when they must not hit.
    """

    text_a: str
    text_b: str
    label: int


def check_pairs(pairs: Sequence[TrainingPair]) -> list[TrainingPair]:
    """Validate ``pairs`` for training.

    Raises:
        InputError: no pairs, a text that is not a non-empty string, a label that
            is not 0 or 1 (naming the row and the field).
    """
    if len(pairs) == 0:
        raise InputError("pairs: no training pairs; pass at least one labelled pair")
    out: list[TrainingPair] = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, TrainingPair):
            raise InputError(
                f"pairs[{i}]: {type(pair).__name__} is not a TrainingPair; build "
                f"rows with TrainingPair(text_a, text_b, label)"
            )
        for field in ("text_a", "text_b"):
            value = getattr(pair, field)
            if not isinstance(value, str) or not value.strip():
                raise InputError(
                    f"pairs[{i}].{field}: {value!r} is not a non-empty string"
                )
        if pair.label not in (0, 1) or isinstance(pair.label, bool):
            raise InputError(
                f"pairs[{i}].label: {pair.label!r} is not 0 or 1 "
                f"(1: equivalent for caching, 0: must not hit)"
            )
        out.append(pair)
    return out


def write_pairs(pairs: Iterable[TrainingPair], path: Path) -> int:
    """Write ``pairs`` as JSON lines (``text_a``, ``text_b``, ``label``); the count."""
    encoder = msgspec.json.Encoder()
    n = 0
    with path.open("wb") as fh:
        for pair in pairs:
            fh.write(encoder.encode(pair) + b"\n")
            n += 1
    return n


def read_pairs(path: str | Path) -> list[TrainingPair]:
    """Read pairs from JSON lines (as :func:`write_pairs` writes) or a CSV file
    with the header ``text_a,text_b,label``: the reader of ``stagecache tune``
    (:func:`stagecache.tuning._data.read_pairs`), checked for training.

    Raises:
        InputError: a missing or unreadable file, a malformed line (naming it).
    """
    return check_pairs(
        [TrainingPair(p.text_a, p.text_b, p.label) for p in read_labelled(path)]
    )
