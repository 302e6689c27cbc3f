"""Input and output checks shared by every embedder.

Inputs (:func:`check_texts`):

- ``texts`` must be a sequence of ``str``; a bare ``str`` (a sequence of characters,
  almost always a bug) and ``bytes`` items raise :class:`~stagecache.errors.InputError`
  (decode bytes yourself: the embedder cannot know their encoding).
- An empty or whitespace-only text raises :class:`~stagecache.errors.InputError`: it
  has no meaning to embed, and models return a near-arbitrary vector for it.
- A text that is not valid Unicode (a lone surrogate, e.g. from
  ``bytes.decode(errors="surrogateescape")``) raises
  :class:`~stagecache.errors.InputError`.
- A text longer than ``max_chars`` is clipped to ``max_chars`` characters and a log
  record with ``truncated=True`` is written. Local models then truncate to their own
  token limit (``max_seq_length``), so clipping at a generous multiple of it changes
  nothing but spares the tokenizer a megabyte of text.

Outputs (:func:`validate_vectors`): the provider's array must be finite, of shape
``(n, dim)``, with no all-zero row; rows are L2-normalised here when they are not.
Anything else raises :class:`~stagecache.errors.EmbeddingError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from stagecache.errors import EmbeddingError, InputError
from stagecache.types import Vectors

__all__ = ["check_texts", "empty_vectors", "validate_vectors"]

_log = logging.getLogger("stagecache.embeddings")

# Local models truncate at max_seq_length tokens; one WordPiece/BPE token almost never
# spans more than this many characters, so clipping here never changes a vector.
CHARS_PER_TOKEN = 32


def check_texts(
    texts: Sequence[str], *, max_chars: int | None, model_id: str
) -> list[str]:
    """Validate ``texts`` and clip over-long ones.

    Args:
        texts: the texts to embed.
        max_chars: texts longer than this are clipped (and logged with
            ``truncated=True``); None never clips.
        model_id: the embedder's model id, for messages and logs.

    Returns:
        The texts as a new list, over-long ones clipped.

    Raises:
        InputError: for a bare string, a non-``str`` item, an empty or
            whitespace-only text, or a text that is not valid Unicode.
    """
    if isinstance(texts, (str, bytes, bytearray)):
        raise InputError(
            f"embed() takes a sequence of strings, got a single "
            f"{type(texts).__name__}: wrap it in a list"
        )
    out: list[str] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            hint = (
                " (decode it to str first)"
                if isinstance(text, (bytes, bytearray))
                else ""
            )
            raise InputError(
                f"texts[{i}]: expected str, got {type(text).__name__}{hint}"
            )
        if not text or text.isspace():
            raise InputError(
                f"texts[{i}]: empty or whitespace-only text cannot be embedded"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"texts[{i}]: not valid Unicode (a lone surrogate at position "
                f"{exc.start}); decode the source bytes with a strict error handler"
            ) from exc
        if max_chars is not None and len(text) > max_chars:
            _log.warning(
                "embedding input clipped",
                extra={
                    "truncated": True,
                    "index": i,
                    "chars": len(text),
                    "max_chars": max_chars,
                    "model_id": model_id,
                },
            )
            text = text[:max_chars]
        out.append(text)
    return out


def empty_vectors(dim: int) -> Vectors:
    """A ``(0, dim)`` float32 array: the answer to ``embed([])``."""
    return np.zeros((0, dim), dtype=np.float32)


def validate_vectors(arr: object, n: int, dim: int | None, model_id: str) -> Vectors:
    """Check a provider's output and return it as L2-normalised float32 rows.

    Args:
        arr: what the provider returned (array-like).
        n: the number of texts sent (expected rows).
        dim: the expected dimension, or None to accept the provider's.
        model_id: the model id, for messages.

    Returns:
        A C-contiguous float32 array of shape ``(n, dim)``, rows of unit norm.

    Raises:
        EmbeddingError: wrong shape, row count or dimension, NaN or inf, a zero row.
    """
    try:
        out: npt.NDArray[np.float32] = np.ascontiguousarray(arr, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(
            f"{model_id}: provider returned data that is not a numeric matrix: {exc}"
        ) from exc
    if out.ndim != 2:
        raise EmbeddingError(
            f"{model_id}: expected a 2-d array of vectors, got shape {out.shape}"
        )
    if out.shape[0] != n:
        raise EmbeddingError(
            f"{model_id}: expected {n} vectors (one per text), got {out.shape[0]}"
        )
    if dim is not None and out.shape[1] != dim:
        raise EmbeddingError(
            f"{model_id}: expected vectors of dimension {dim}, got {out.shape[1]}"
        )
    if n == 0:
        return out
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise EmbeddingError(f"{model_id}: vector {bad} contains NaN or inf")
    norms = np.linalg.norm(out, axis=1)
    if (norms == 0).any():
        bad = int(np.flatnonzero(norms == 0)[0])
        raise EmbeddingError(f"{model_id}: vector {bad} is all zeros")
    if np.abs(norms - 1.0).max() > 1e-4:
        out = np.ascontiguousarray(out / norms[:, None], dtype=np.float32)
    return out
