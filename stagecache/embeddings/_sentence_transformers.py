"""The default local embedder: a sentence-transformers model on torch.

Loading is lazy (``warm_up()`` or the first ``embed``): importing
sentence-transformers alone takes seconds, and ``import stagecache`` must stay cheap.
Loading is strictly offline (``local_files_only``). Encoding runs in a worker thread
through a :class:`~stagecache.embeddings.MicroBatcher`, so concurrent requests share
one ``encode`` call and the event loop never blocks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import anyio
import numpy as np

from stagecache.embeddings._micro import MicroBatcher
from stagecache.embeddings._paths import (
    ResolvedModel,
    model_id_for,
    read_max_seq_length,
    resolve_model,
)
from stagecache.embeddings._validation import (
    CHARS_PER_TOKEN,
    check_texts,
    empty_vectors,
    validate_vectors,
)
from stagecache.errors import EmbeddingError, ModelNotFound
from stagecache.types import Vectors

__all__ = ["SentenceTransformerEmbedder"]


class SentenceTransformerEmbedder:
    """Embeds with a sentence-transformers model, offline, off the event loop.

    Args:
        model: None for the packaged default (``all-MiniLM-L6-v2``), a local
            sentence-transformers directory, or a hub name already in the local
            Hugging Face cache.
        device: the torch device (``"cpu"``, ``"cuda"``, ...).
        max_batch: the most texts per ``encode`` call.
        batch_window_ms: how long concurrent calls are gathered into one batch.
        normalize: L2-normalise in the model (rows are normalised anyway; False
            leaves it to the output check, which is equivalent).
        model_id: overrides the id used in cache keys (default: the hub name, or the
            absolute path of a local directory).
        cache_dir: the stagecache cache directory (default model copy lives there).
        dim: the dimension, if known before loading (else read at load).
    """

    __slots__ = (
        "_batcher",
        "_dim",
        "_load_lock",
        "_model",
        "_model_arg",
        "_model_id",
        "_resolved",
        "cache_dir",
        "device",
        "max_seq_length",
        "normalize",
    )

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        max_batch: int = 64,
        batch_window_ms: float = 2.0,
        normalize: bool = True,
        model_id: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        dim: int | None = None,
    ) -> None:
        self._model_arg = model
        self._model_id = model_id or model_id_for(model)
        self._resolved: ResolvedModel | None = None
        self.device = device
        self.normalize = normalize
        self.cache_dir = cache_dir
        self._dim = dim
        self._model: Any = None
        self._load_lock = threading.Lock()
        self.max_seq_length = 512
        self._batcher = MicroBatcher(
            self._encode, window_ms=batch_window_ms, max_batch=max_batch
        )

    @property
    def model_id(self) -> str:
        """The stable model id used in cache keys."""
        return self._model_id

    @property
    def dim(self) -> int:
        """The vector dimension (loads the model if it is not known yet)."""
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

    @property
    def batcher(self) -> MicroBatcher:
        """The micro-batcher in front of the model (``batcher.calls`` counts calls)."""
        return self._batcher

    def _resolve(self) -> ResolvedModel:
        if self._resolved is None:
            self._resolved = resolve_model(
                self._model_arg, cache_dir=self.cache_dir, model_id=self._model_id
            )
        return self._resolved

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is not None:
                return self._model
            resolved = self._resolve()
            if resolved.path is not None and not any(
                (resolved.path / name).is_file()
                for name in ("modules.json", "config.json")
            ):
                raise ModelNotFound(
                    f"{resolved.name} is an ONNX export without torch weights; load "
                    f'it with OnnxEmbedder ([embedder] kind = "onnx")'
                )
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ModelNotFound(
                    "sentence-transformers is not installed: pip install "
                    "sentence-transformers (or use OnnxEmbedder, which needs only "
                    "onnxruntime and tokenizers once exported)"
                ) from exc
            source = str(resolved.path) if resolved.path is not None else resolved.name
            try:
                model = SentenceTransformer(
                    source, device=self.device, local_files_only=True
                )
            except Exception as exc:  # many shapes: OSError, HF errors, ValueError
                raise ModelNotFound(
                    f"cannot load embedding model {source!r} offline "
                    f"({type(exc).__name__}: {exc}); pass a local "
                    f"sentence-transformers folder, or model=None for the packaged "
                    f"default"
                ) from exc
            self.max_seq_length = int(
                model.max_seq_length or read_max_seq_length(resolved.path)
            )
            get_dim = getattr(model, "get_embedding_dimension", None)
            if get_dim is None:  # sentence-transformers < 5
                get_dim = model.get_sentence_embedding_dimension
            dim = get_dim()
            if dim is None:
                dim = int(model.encode(["dimension probe"]).shape[1])
            self._dim = int(dim)
            self._model = model
            return model

    def _encode(self, texts: list[str]) -> Vectors:
        model = self._load()
        try:
            out = model.encode(
                texts,
                batch_size=len(texts),
                convert_to_numpy=True,
                normalize_embeddings=self.normalize,
                show_progress_bar=False,
            )
        except Exception as exc:
            raise EmbeddingError(
                f"{self.model_id}: encode failed: {type(exc).__name__}: {exc}"
            ) from exc
        return np.asarray(out, dtype=np.float32)

    async def warm_up(self) -> None:
        """Load the model (in a worker thread)."""
        await anyio.to_thread.run_sync(self._load)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` into L2-normalised float32 rows.

        Args:
            texts: non-empty strings; over-long ones are clipped (see
                :func:`~stagecache.embeddings.check_texts`).

        Returns:
            An array of shape ``(len(texts), dim)``.

        Raises:
            InputError: for empty, whitespace-only or invalid-Unicode texts.
            ModelNotFound: the model cannot be loaded offline.
            EmbeddingError: the model failed or returned bad vectors.
        """
        if self._model is None:
            await self.warm_up()
        items = check_texts(
            texts,
            max_chars=self.max_seq_length * CHARS_PER_TOKEN,
            model_id=self.model_id,
        )
        if not items:
            return empty_vectors(self.dim)
        out = await self._batcher(items)
        return validate_vectors(out, len(items), self.dim, self.model_id)

    async def aclose(self) -> None:
        """Drop the model (frees its memory once nothing else refers to it)."""
        self._model = None

    async def __aenter__(self) -> SentenceTransformerEmbedder:
        await self.warm_up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model_id!r}, device={self.device!r})"
