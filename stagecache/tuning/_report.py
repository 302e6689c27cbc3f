"""The calibration report of ``stagecache tune``: base and tuned embedder on the
held-out pairs.

Every held-out pair is read as a lookup: ``text_b`` is cached, ``text_a`` is
asked, and the cache hits when their cosine reaches the threshold. At threshold
``t``:

- ``precision``: right hits / hits; ``recall``: right hits / label-1 pairs;
- ``wrong_hit_rate``: wrong hits / all pairs, the share of lookups answered
  wrongly, which is what ``[verifier] max_wrong_hit_rate`` bounds.

The **floor** of a model is the lowest cosine (so the most hits) whose
wrong-hit rate on the held-out pairs stays within the budget; the tuned model's
floor becomes the ``[cache] threshold`` of the written config. ROC AUC (how well
the cosine alone separates the two labels, 0.5 = chance) is computed from ranks
with ties averaged (the Mann-Whitney statistic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from stagecache.tuning._data import LabelledPair
from stagecache.types import Embedder

__all__ = [
    "ModelScores",
    "Operating",
    "cosines",
    "floor_for",
    "model_scores",
    "operating",
    "roc_auc",
]

Floats = npt.NDArray[np.float64]
#: Thresholds listed in the report's table (the floors are added).
GRID = (*(round(0.5 + 0.05 * i, 2) for i in range(10)), 0.97, 0.99)


class Operating(msgspec.Struct, frozen=True):
    """What a cosine threshold does on the held-out pairs."""

    threshold: float
    hits: int
    right_hits: int
    wrong_hits: int
    precision: float | None
    recall: float
    wrong_hit_rate: float


class ModelScores(msgspec.Struct, frozen=True):
    """One model on the held-out pairs."""

    model_id: str
    auc: float
    floor: float
    at_floor: Operating
    table: list[Operating]


async def cosines(embedder: Embedder, pairs: Sequence[LabelledPair]) -> Floats:
    """The cosine of every pair under ``embedder`` (rows are L2-normalised)."""
    texts = sorted({t for p in pairs for t in (p.text_a, p.text_b)})
    index = {t: i for i, t in enumerate(texts)}
    vectors = np.asarray(await embedder.embed(texts), dtype=np.float64)
    a = vectors[[index[p.text_a] for p in pairs]]
    b = vectors[[index[p.text_b] for p in pairs]]
    found: Floats = np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0)
    return found


def roc_auc(scores: Floats, labels: npt.NDArray[np.int64]) -> float:
    """ROC AUC of ``scores`` for ``labels`` (1 positive), ties counted half."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        raise ValueError("ROC AUC needs both labels")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = float(ranks[labels == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def operating(
    scores: Floats, labels: npt.NDArray[np.int64], threshold: float
) -> Operating:
    """Hits, precision, recall and wrong-hit rate at ``threshold``."""
    hit = scores >= threshold
    right = int((hit & (labels == 1)).sum())
    wrong = int((hit & (labels == 0)).sum())
    hits = right + wrong
    return Operating(
        threshold=round(threshold, 4),
        hits=hits,
        right_hits=right,
        wrong_hits=wrong,
        precision=round(right / hits, 4) if hits else None,
        recall=round(right / max(1, int(labels.sum())), 4),
        wrong_hit_rate=round(wrong / len(labels), 4),
    )


def floor_for(
    scores: Floats, labels: npt.NDArray[np.int64], max_wrong_hit_rate: float
) -> float:
    """The lowest threshold (4 decimals, rounded up) whose wrong-hit rate on the
    pairs is within ``max_wrong_hit_rate``; 1.0 when only exact cosines are safe."""
    allowed = math.floor(max_wrong_hit_rate * len(labels) + 1e-9)
    negatives = np.sort(scores[labels == 0])[::-1]  # highest first
    if allowed >= len(negatives):
        return round(max(0.0, float(scores.min())), 4)
    # Hits must stop just above the (allowed+1)-th highest negative cosine.
    cut = float(negatives[allowed])
    floor = (math.floor(cut * 10_000 + 1e-6) + 1) / 10_000  # strictly above it
    return min(1.0, floor)


def model_scores(
    model_id: str,
    scores: Floats,
    pairs: Sequence[LabelledPair],
    max_wrong_hit_rate: float,
) -> ModelScores:
    """AUC, floor and the threshold table of one model's held-out cosines."""
    labels = np.asarray([p.label for p in pairs], dtype=np.int64)
    floor = floor_for(scores, labels, max_wrong_hit_rate)
    return ModelScores(
        model_id=model_id,
        auc=round(roc_auc(scores, labels), 4),
        floor=floor,
        at_floor=operating(scores, labels, floor),
        table=[operating(scores, labels, t) for t in GRID],
    )
