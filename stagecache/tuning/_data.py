"""An operator's labelled pairs for ``stagecache tune``: reading, checking, splitting.

Two file formats, chosen by the suffix (``.jsonl``/``.ndjson``/``.json``: JSON lines;
``.csv``: CSV), else by the first character (``{``: JSON lines):

- JSON lines, one object a line: ``{"text_a": ..., "text_b": ..., "label": 1}``;
- CSV with a header naming at least ``text_a``, ``text_b`` and ``label``.

``label`` is 1 (the cached answer of one text answers the other: a right hit) or 0
(it does not: a wrong hit); ``true``/``false`` are accepted too. Every problem is an
:class:`~stagecache.errors.InputError` naming the file, the line and the fix.

The held-out split is deterministic (a hash of the seed and the texts, no random
state) and grouped: pairs that share a text (after casefolding and folding white
space) are connected, and a connected group goes whole to one side, so no text the
model trained on is scored in the calibration.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from stagecache.errors import InputError

__all__ = [
    "LabelledPair",
    "Split",
    "check_classes",
    "dedupe",
    "read_pairs",
    "split_pairs",
]

#: Fewest pairs a held-out split is made from.
MIN_PAIRS = 10
#: Fewest pairs of each class on each side of the split.
MIN_PER_CLASS = 1

_JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}
_FORMAT_HINT = (
    'one JSON object a line: {"text_a": "...", "text_b": "...", "label": 1}, '
    "or a CSV file with the header text_a,text_b,label"
)


class LabelledPair(msgspec.Struct, frozen=True):
    """Two texts and whether one's cached answer answers the other.

    Attributes:
        text_a: the first text (for feedback: the query that got the hit).
        text_b: the second text (for feedback: the cached entry's query).
        label: 1 same meaning (a right hit), 0 different (a wrong hit).
        source: where it came from (``file:line`` or ``feedback:ENTRY_ID``).
    """

    text_a: str
    text_b: str
    label: int
    source: str


class Split(msgspec.Struct, frozen=True):
    """A grouped held-out split: ``train`` and ``held_out`` share no text."""

    train: list[LabelledPair]
    held_out: list[LabelledPair]


def _label(value: Any, where: str) -> int:
    """0 or 1 from a JSON or CSV label value."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return 1 if value.strip().lower() in _TRUE else 0
    raise InputError(
        f"{where}: label: {value!r} is not a label; use 1 (same meaning, a right "
        "hit) or 0 (different, a wrong hit)"
    )


def _text(value: Any, field: str, where: str) -> str:
    """A non-blank text field."""
    if value is None:
        raise InputError(f"{where}: {field}: missing; every pair needs {field}")
    if not isinstance(value, str):
        raise InputError(f"{where}: {field}: {value!r} is not a string")
    if not value.strip():
        raise InputError(f"{where}: {field}: empty text; remove the pair or fill it")
    return value


def _pair(row: dict[str, Any], where: str) -> LabelledPair:
    return LabelledPair(
        _text(row.get("text_a"), "text_a", where),
        _text(row.get("text_b"), "text_b", where),
        _label(row.get("label"), where) if "label" in row else _missing_label(where),
        where,
    )


def _missing_label(where: str) -> NoReturn:
    raise InputError(f"{where}: label: missing; add 1 (same meaning) or 0 (different)")


def _json_lines(path: Path, lines: Iterable[str]) -> list[LabelledPair]:
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{where}: not valid JSON ({exc.msg}, column {exc.colno}); "
                f"expected {_FORMAT_HINT}"
            ) from None
        if not isinstance(row, dict):
            raise InputError(
                f"{where}: a JSON {type(row).__name__}; expected {_FORMAT_HINT}"
            )
        pairs.append(_pair(row, where))
    return pairs


_QQP_COLUMNS = {"question1": "text_a", "question2": "text_b", "is_duplicate": "label"}


def _csv_rows(path: Path, text: str) -> list[LabelledPair]:
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    if "text_a" not in header and set(_QQP_COLUMNS) <= set(header):
        # Quora Question Pairs' own header (question1,question2,is_duplicate).
        header = reader.fieldnames = [_QQP_COLUMNS.get(h, h) for h in header]
    missing = [name for name in ("text_a", "text_b", "label") if name not in header]
    if missing:
        raise InputError(
            f"{path}:1: CSV header {','.join(header) or '(empty)'} lacks "
            f"{', '.join(missing)}; expected {_FORMAT_HINT}"
        )
    pairs = []
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:
                raise InputError(f"{where}: more fields than the header names")
            pairs.append(_pair(row, where))
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: bad CSV ({exc})") from None
    return pairs


def read_pairs(path: str | Path) -> list[LabelledPair]:
    """The labelled pairs of one file (JSON lines or CSV; see the module docs).

    Raises:
        InputError: a missing or unreadable file, a bad line (named by number),
            or a file without any pair.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"{file}: no such file; pass a file of labelled pairs"
        ) from None
    except OSError as exc:
        raise InputError(f"{file}: cannot be read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{file}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    suffix = file.suffix.lower()
    is_json = suffix in _JSON_SUFFIXES or (
        suffix != ".csv" and text.lstrip().startswith("{")
    )
    pairs = _json_lines(file, text.splitlines()) if is_json else _csv_rows(file, text)
    if not pairs:
        raise InputError(f"{file}: no pairs in the file; expected {_FORMAT_HINT}")
    return pairs


def _norm(text: str) -> str:
    """The form under which two texts count as the same text."""
    return " ".join(text.casefold().split())


def _groups(pairs: Sequence[LabelledPair]) -> list[list[int]]:
    """Indexes of ``pairs`` connected through a shared (normalised) text."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for pair in pairs:
        a, b = find(_norm(pair.text_a)), find(_norm(pair.text_b))
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault(find(_norm(pair.text_a)), []).append(i)
    return list(groups.values())


def _classes(pairs: Iterable[LabelledPair]) -> tuple[int, int]:
    """(positives, negatives)."""
    labels = [p.label for p in pairs]
    return sum(labels), len(labels) - sum(labels)


def check_classes(pairs: Sequence[LabelledPair], what: str) -> None:
    """Refuse a set too small to split or with one class only."""
    positives, negatives = _classes(pairs)
    if len(pairs) < MIN_PAIRS:
        raise InputError(
            f"{what}: {len(pairs)} pairs, too few for a held-out split; give at "
            f"least {MIN_PAIRS} (a few hundred calibrate well)"
        )
    if not positives or not negatives:
        which = "label 1 (same meaning)" if not positives else "label 0 (different)"
        raise InputError(
            f"{what}: every pair has the same label; add pairs with {which}: the "
            "model learns the difference and the report needs both to calibrate"
        )


def split_pairs(pairs: Sequence[LabelledPair], *, holdout: float, seed: int) -> Split:
    """Split ``pairs`` into train and held-out, grouped by shared text.

    Groups are ordered by a hash of ``seed`` and their first text, and go to the
    held-out side in that order until it holds ``holdout`` of the pairs; a class
    the held-out side lacks is then taken from the next group that has it, while
    the train side keeps both classes.

    Raises:
        InputError: too few pairs, one class only, or no split that leaves both
            classes on both sides (the pairs share texts too much).
    """
    if not 0.0 < holdout < 1.0:
        raise InputError(f"holdout: {holdout} is not between 0 and 1 (try 0.2)")
    check_classes(pairs, "pairs")
    groups = _groups(pairs)

    def key(group: list[int]) -> bytes:
        first = min(_norm(pairs[i].text_a) for i in group)
        return hashlib.blake2b(f"{seed}\0{first}".encode(), digest_size=16).digest()

    groups.sort(key=key)
    target = max(1, round(holdout * len(pairs)))
    held: set[int] = set()
    for group in groups:
        if len(held) >= target:
            break
        if len(held) + len(group) <= max(target, len(pairs) // 2):
            held.update(group)
    for label in (0, 1):
        if any(pairs[i].label == label for i in held):
            continue
        for group in groups:
            if group[0] in held or not any(pairs[i].label == label for i in group):
                continue
            rest = [p for i, p in enumerate(pairs) if i not in held and i not in group]
            if all(_classes(rest)):
                held.update(group)
                break
    train = [p for i, p in enumerate(pairs) if i not in held]
    held_out = [p for i, p in enumerate(pairs) if i in held]
    if not all(_classes(train)) or not all(_classes(held_out)):
        raise InputError(
            f"pairs: no held-out split keeps both labels on both sides "
            f"({len(groups)} groups of pairs sharing a text); add pairs on texts "
            "of their own"
        )
    return Split(train, held_out)


def dedupe(pairs: Iterable[LabelledPair]) -> list[LabelledPair]:
    """``pairs`` without repeats (same two texts in either order, same label)."""
    seen: set[tuple[str, str, int]] = set()
    out = []
    for p in pairs:
        a, b = sorted((_norm(p.text_a), _norm(p.text_b)))
        if (a, b, p.label) not in seen:
            seen.add((a, b, p.label))
            out.append(p)
    return out
