"""Calibrations per embedder: which shipped verifier weights fit the pipeline's model.

A learned verifier is only as good as its calibration, and a calibration holds for
the embedder it was fitted with: cosines of another model are on another scale (a
hash embedder's 0.87 says nothing about MiniLM's 0.87). Every file
``stagecache/quality/data/verifier*.json`` is one complete set of weights (model,
idf table, operating-point tables) and names the embedder it was fitted for:

- ``embedder``: the embedder's ``model_id`` as the pipeline reports it (a string,
  or a list of strings for several ids of the same model), e.g.
  ``"sentence-transformers/all-MiniLM-L6-v2"``;
- older files carry only ``embedding_model`` (``"all-MiniLM-L6-v2"``): a bare name
  is read as ``sentence-transformers/<name>``, the way sentence-transformers itself
  resolves it.

An embedder id matches a file when it is one of the file's ids, or when the part
before a ``#`` is (``...all-MiniLM-L6-v2#onnx-int8`` is an int8 export of the same
weights, which shares the calibration). One file per embedder; when two claim the
same id the first by file name wins. ``benchmarks/train_verifier.py`` writes the
field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from stagecache.errors import ConfigError
from stagecache.quality._learned import Weights

__all__ = [
    "DEFAULT_EMBEDDER",
    "calibrated_embedders",
    "embedders_of",
    "load_calibrations",
    "load_weights",
    "weights_for",
]

_log = logging.getLogger("stagecache.quality")

#: The pipeline's default embedder (``stagecache.embeddings.DEFAULT_MODEL``): what
#: ``make_verifier`` assumes when it is not told which embedder runs.
DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def embedders_of(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The embedder ids a weights file was fitted for (empty: none stated)."""
    named = data.get("embedder")
    if isinstance(named, str):
        return (named,)
    if isinstance(named, list) and all(isinstance(n, str) for n in named):
        return tuple(named)
    legacy = data.get("embedding_model")
    if isinstance(legacy, str) and legacy:
        return (legacy if "/" in legacy else f"sentence-transformers/{legacy}",)
    return ()


def _files(directory: Traversable) -> list[Traversable]:
    return sorted(
        (
            f
            for f in directory.iterdir()
            if f.name.startswith("verifier") and f.name.endswith(".json")
        ),
        key=lambda f: f.name,
    )


def _read(file: Traversable) -> Weights:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return Weights(data, embedders=embedders_of(data), source=file.name)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"cannot load the learned verifier's weights {file.name}: {exc}",
            field="verifier.kind",
        ) from exc


def load_calibrations(directory: Traversable | None = None) -> tuple[Weights, ...]:
    """Every ``verifier*.json`` of ``directory`` (default: the shipped ones).

    Raises:
        ConfigError: a file is unreadable.
    """
    if directory is None:
        return _shipped()
    return tuple(_read(f) for f in _files(directory))


@cache
def _shipped() -> tuple[Weights, ...]:
    folder = resources.files("stagecache.quality").joinpath("data")
    found = tuple(_read(f) for f in _files(folder))
    for w in found:
        if not w.embedders:
            _log.warning("quality: %s names no embedder; it is used for none", w.source)
    return found


def _matches(weights: Weights, embedder_id: str) -> bool:
    return embedder_id in weights.embedders or (
        "#" in embedder_id and embedder_id.split("#", 1)[0] in weights.embedders
    )


def weights_for(
    embedder_id: str, calibrations: tuple[Weights, ...] | None = None
) -> Weights | None:
    """The weights calibrated for ``embedder_id``, or None (uncalibrated)."""
    for weights in calibrations if calibrations is not None else load_calibrations():
        if _matches(weights, embedder_id):
            return weights
    return None


def calibrated_embedders(calibrations: tuple[Weights, ...] | None = None) -> list[str]:
    """Every embedder id some calibration was fitted for."""
    found = calibrations if calibrations is not None else load_calibrations()
    return [e for w in found for e in w.embedders]


def load_weights() -> Weights:
    """The weights of the default embedder (all-MiniLM-L6-v2), loaded once.

    Raises:
        ConfigError: the weights file is missing or unreadable.
    """
    weights = weights_for(DEFAULT_EMBEDDER)
    if weights is None:
        raise ConfigError(
            f"no shipped verifier weights are calibrated for {DEFAULT_EMBEDDER}",
            field="verifier.kind",
        )
    return weights
