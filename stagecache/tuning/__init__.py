"""Fine-tuning an embedder for cache equivalence (the ``tune`` extra).

:func:`train_embedder` trains a sentence-transformers model on labelled
:class:`TrainingPair` rows (one epoch of online contrastive loss by default) and
writes a folder that :class:`~stagecache.embeddings.OnnxEmbedder` loads offline.
Importing this package is cheap; torch, ``datasets`` and ``accelerate`` are
imported by the training call only.
"""

from __future__ import annotations

from stagecache.tuning._pairs import TrainingPair, check_pairs, read_pairs, write_pairs
from stagecache.tuning._train import train_embedder

__all__ = ["TrainingPair", "check_pairs", "read_pairs", "train_embedder", "write_pairs"]
