"""The learned verifier's model: a gradient-boosted tree ensemble run in numpy.

The weights ship as JSON in ``stagecache/quality/data/verifier*.json`` (one file
per embedder, see :mod:`stagecache.quality._calibration`); the shipped one was
fitted by ``benchmarks/train_verifier.py`` (scikit-learn at training time only) on
the QQP validation split replayed as a cache and on the training part of the
adversarial set. Inference walks every tree at once, one depth level per step, so a
lookup costs a handful of numpy operations whatever the number of trees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GBDT", "Weights"]


class GBDT:
    """A binary gradient-boosted tree ensemble (log-loss), evaluated in numpy."""

    __slots__ = (
        "_depth",
        "_feature",
        "_init",
        "_left",
        "_right",
        "_rows",
        "_threshold",
        "_value",
    )

    def __init__(
        self,
        init: float,
        feature: npt.NDArray[np.int64],
        threshold: npt.NDArray[np.float64],
        left: npt.NDArray[np.int64],
        right: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
    ) -> None:
        self._init = init
        self._feature = feature
        self._threshold = threshold
        self._left = left
        self._right = right
        self._value = value
        self._rows = np.arange(feature.shape[0])
        self._depth = math.ceil(math.log2(feature.shape[1] + 1))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GBDT:
        """Build from the exported JSON (trees padded to one node count)."""
        trees = data["trees"]
        lr = float(data["learning_rate"])
        width = max(len(t["feature"]) for t in trees)
        n = len(trees)
        feature = np.zeros((n, width), np.int64)
        threshold = np.zeros((n, width))
        left = np.full((n, width), -1, np.int64)
        right = np.full((n, width), -1, np.int64)
        value = np.zeros((n, width))
        for k, t in enumerate(trees):
            m = len(t["feature"])
            feature[k, :m] = np.maximum(np.asarray(t["feature"]), 0)
            threshold[k, :m] = t["threshold"]
            left[k, :m] = t["left"]
            right[k, :m] = t["right"]
            value[k, :m] = np.asarray(t["value"]) * lr
        return cls(float(data["init"]), feature, threshold, left, right, value)

    def raw(self, x: npt.NDArray[np.float64]) -> float:
        """The log-odds of one feature vector."""
        node = np.zeros(self._feature.shape[0], np.int64)
        rows = self._rows
        for _ in range(self._depth):
            f = self._feature[rows, node]
            go_left = x[f] <= self._threshold[rows, node]
            nxt = np.where(go_left, self._left[rows, node], self._right[rows, node])
            node = np.where(nxt >= 0, nxt, node)
        return self._init + float(self._value[rows, node].sum())

    def predict(self, x: npt.NDArray[np.float64]) -> float:
        """The probability that the pair is a right hit."""
        return 1.0 / (1.0 + math.exp(-self.raw(x)))


class Weights:
    """Everything a ``verifier*.json`` ships: model, idf table, calibration tables,
    and the embedders it was fitted for (``embedders``; ``source`` is the file)."""

    __slots__ = (
        "calibration",
        "default_idf",
        "embedders",
        "feature_floor",
        "features",
        "idf",
        "model",
        "source",
    )

    def __init__(
        self,
        data: Mapping[str, Any],
        *,
        embedders: tuple[str, ...] = (),
        source: str = "",
    ) -> None:
        self.embedders = embedders
        self.source = source
        self.features: tuple[str, ...] = tuple(data["features"])
        self.model = GBDT.from_dict(data["model"])
        self.idf: dict[str, float] = dict(data["idf"])
        self.default_idf = float(data["default_idf"])
        self.calibration: dict[str, list[dict[str, float]]] = data["calibration"]
        self.feature_floor = float(data.get("feature_floor", 0.6))

    def operating_point(
        self, kind: str, max_wrong_hit_rate: float, floor: float | None
    ) -> tuple[float, float, float, dict[str, float]]:
        """Pick the floor, high band and score threshold for a wrong-hit budget.

        Among the calibrated (floor, high, tau) points whose wrong-hit rate on the
        calibration data is within ``max_wrong_hit_rate``, take the one with the most
        right hits. A given ``floor`` restricts the choice to the nearest calibrated
        floor.

        Returns:
            ``(floor, high, tau, calibration row)``.
        """
        table = self.calibration[kind]
        if floor is not None:
            nearest = min({e["floor"] for e in table}, key=lambda f: abs(f - floor))
            table = [e for e in table if e["floor"] == nearest] or table
        ok = [e for e in table if e["wrong_rate"] <= max_wrong_hit_rate]
        if not ok:
            # nothing meets the budget: the strictest point we have
            best = min(table, key=lambda e: (e["wrong_rate"], -e["tau"]))
        else:
            best = max(ok, key=lambda e: (e["right_rate"], e["tau"]))
        chosen_floor = best["floor"] if floor is None else floor
        return chosen_floor, best["high"], best["tau"], best
