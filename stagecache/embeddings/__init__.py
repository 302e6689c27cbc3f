"""Embedders: local models, OpenAI-compatible servers, and the embedding cache.

Every embedder follows :class:`stagecache.types.Embedder`: ``model_id``, ``dim`` and
``async embed(texts) -> float32 (n, dim)`` with L2-normalised rows. They also have
``async warm_up()`` (heavy loading happens there or on first use, never at import
or in ``__init__``) and ``async aclose()``, and work as ``async with`` blocks.

Shared rules (see :func:`check_texts` and :func:`validate_vectors`): an empty or
whitespace-only text, a non-``str`` item or invalid Unicode raises
:class:`~stagecache.errors.InputError`; an over-long text is clipped and logged with
``truncated=True``; bad vectors from a provider (NaN, inf, wrong shape) raise
:class:`~stagecache.errors.EmbeddingError`. ``embed([])`` returns a ``(0, dim)``
array.

Model ids: ``sentence-transformers/all-MiniLM-L6-v2`` for the default model on torch
and on ONNX fp32 (identical vectors up to float rounding), with ``#onnx-int8``
appended for the quantised ONNX graph (different vectors: never mixed in a cache).
"""

from __future__ import annotations

from stagecache.embeddings._cache import CachedEmbedder, CacheStats, normalize_text
from stagecache.embeddings._config import (
    EmbedderConfig,
    OnnxConfig,
    OpenAIConfig,
    SentenceTransformersConfig,
    embedder_config,
    make_embedder,
)
from stagecache.embeddings._micro import MicroBatcher
from stagecache.embeddings._onnx import OnnxEmbedder
from stagecache.embeddings._openai import OpenAIEmbedder
from stagecache.embeddings._paths import DEFAULT_MODEL, cache_root
from stagecache.embeddings._sentence_transformers import SentenceTransformerEmbedder
from stagecache.embeddings._validation import check_texts, validate_vectors

__all__ = [
    "DEFAULT_MODEL",
    "CacheStats",
    "CachedEmbedder",
    "EmbedderConfig",
    "MicroBatcher",
    "OnnxConfig",
    "OnnxEmbedder",
    "OpenAIConfig",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "SentenceTransformersConfig",
    "cache_root",
    "check_texts",
    "embedder_config",
    "make_embedder",
    "normalize_text",
    "validate_vectors",
]
