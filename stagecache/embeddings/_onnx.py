"""A sentence-transformers model run by onnxruntime, without torch.

The model is exported once (see :mod:`stagecache.embeddings._onnx_export`, the only
place that needs torch) into ``<cache>/onnx/<name>-<fingerprint>/`` and from then
on runs with ``tokenizers`` + ``onnxruntime``: tokenise (truncate to
``max_seq_length``, pad to the longest text of the batch), run the graph, pool as
the sentence-transformers model does (mean over the attention mask by default),
L2-normalise.

Model ids: the fp32 graph computes the same function as the torch model (cosine
>= 0.9999 per row, checked by the tests), so it shares the torch model's id and its
cached vectors. The int8 graph is measurably different (mean cosine ~0.99), so its
id gets the suffix ``#onnx-int8`` and it never mixes with fp32 rows in a cache.

Threads do not spin between calls: by default onnxruntime's intra-op threads keep
spinning on the CPU after each run, waiting for the next one (about a core for
about a second here after each embedding). In a server that embeds one query per
request, that spinning takes the CPU the rest of the request needs: through the
proxy it doubled the CPU of a streamed miss and delayed its first chunk
(benchmarks/results/streaming.md). ``spinning=True`` restores onnxruntime's
default (back-to-back batch jobs may gain a little from it).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import anyio
import numpy as np

from stagecache.embeddings._micro import MicroBatcher
from stagecache.embeddings._onnx_export import (
    EXPORT_VERSION,
    META_FILE,
    export_onnx,
    onnx_file,
)
from stagecache.embeddings._paths import (
    cache_root,
    fingerprint,
    model_id_for,
    resolve_model,
)
from stagecache.embeddings._validation import (
    CHARS_PER_TOKEN,
    check_texts,
    empty_vectors,
    validate_vectors,
)
from stagecache.errors import ConfigError, EmbeddingError, ModelNotFound
from stagecache.types import Vectors

__all__ = ["OnnxEmbedder"]

_log = logging.getLogger("stagecache.embeddings")
Quantize = Literal["fp32", "int8"]

#: The onnxruntime session settings that let its thread pools spin when idle.
SPINNING_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


class _Runtime:
    """What a loaded ONNX model needs at run time (no torch anywhere)."""

    __slots__ = ("dim", "inputs", "max_seq_length", "pooling", "session", "tokenizer")

    def __init__(
        self, folder: Path, quantize: Quantize, threads: int | None, spinning: bool
    ) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ModelNotFound(
                f"OnnxEmbedder needs onnxruntime and tokenizers: pip install "
                f"'stagecache[onnx]' ({exc})"
            ) from exc
        meta = json.loads((folder / META_FILE).read_text("utf-8"))
        self.dim = int(meta["dim"])
        self.max_seq_length = int(meta["max_seq_length"])
        self.pooling = str(meta["pooling"])
        self.inputs: list[str] = list(meta["inputs"])
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        tokenizer.enable_padding(
            pad_id=int(meta["pad_id"]), pad_token=str(meta["pad_token"])
        )
        self.tokenizer = tokenizer
        graph = folder / onnx_file(quantize)
        if not graph.is_file():
            raise ModelNotFound(
                f"{folder} has no {graph.name}; this export offers "
                f"{sorted(p.name for p in folder.glob('*.onnx'))}: pick that quantize"
            )
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        for key in SPINNING_KEYS:
            options.add_session_config_entry(key, "1" if spinning else "0")
        self.session = ort.InferenceSession(
            str(graph),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )

    def encode(self, texts: list[str], model_id: str) -> Vectors:
        encodings = self.tokenizer.encode_batch(texts)
        for i, encoding in enumerate(encodings):
            if encoding.overflowing:
                _log.info(
                    "embedding input truncated to the model's token limit",
                    extra={
                        "truncated": True,
                        "index": i,
                        "model_id": model_id,
                        "max_tokens": self.max_seq_length,
                    },
                )
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.asarray(
                [e.type_ids for e in encodings], dtype=np.int64
            )
        hidden = self.session.run(["last_hidden_state"], feeds)[0]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            masked = np.where(mask[:, :, None] > 0, hidden, -1e9)
            pooled = masked.max(axis=1)
        else:
            weights = mask[:, :, None].astype(np.float32)
            summed = (hidden * weights).sum(axis=1)
            pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: Vectors = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return out


class OnnxEmbedder:
    """Embeds with an ONNX export of a sentence-transformers model, without torch.

    Args:
        model: None for the packaged default (``all-MiniLM-L6-v2``), a local
            sentence-transformers folder, or a folder that already holds an export
            (``stagecache.tuning.train_embedder`` and ``stagecache tune`` write one).
        quantize: ``"int8"`` (dynamic per-channel quantisation: ~2x faster than
            fp32, mean cosine ~0.99 to torch) or ``"fp32"`` (same vectors as torch).
        cache_dir: the stagecache cache directory holding the export (default
            ``$STAGECACHE_CACHE_DIR`` or ``~/.cache/stagecache``).
        max_batch: the most texts per model call.
        batch_window_ms: how long concurrent calls are gathered into one batch.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
        spinning: let onnxruntime's idle threads spin between calls (its own
            default); off here, so an embedding leaves no core busy after it.
        model_id: overrides the id used in cache keys.
    """

    __slots__ = (
        "_batcher",
        "_load_lock",
        "_model_arg",
        "_model_id",
        "_runtime",
        "cache_dir",
        "quantize",
        "spinning",
        "threads",
    )

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        quantize: Quantize = "int8",
        cache_dir: str | os.PathLike[str] | None = None,
        max_batch: int = 64,
        batch_window_ms: float = 2.0,
        threads: int | None = None,
        spinning: bool = False,
        model_id: str | None = None,
    ) -> None:
        if quantize not in ("fp32", "int8"):
            raise ConfigError(
                f"{quantize!r} is not one of 'fp32', 'int8'", field="quantize"
            )
        if importlib.util.find_spec("onnxruntime") is None:
            raise ConfigError(
                "the ONNX embedder needs onnxruntime, which is not installed: pip "
                "install 'stagecache[onnx]', or use kind = \"sentence_transformers\" "
                "(the default)",
                field="embedder.kind",
            )
        self._model_arg = model
        self.quantize: Quantize = quantize
        self.cache_dir = cache_dir
        self.threads = threads
        self.spinning = spinning
        base = model_id or model_id_for(model)
        self._model_id = base if quantize == "fp32" or model_id else f"{base}#onnx-int8"
        self._runtime: _Runtime | None = None
        self._load_lock = threading.Lock()
        self._batcher = MicroBatcher(
            self._encode, window_ms=batch_window_ms, max_batch=max_batch
        )

    @property
    def model_id(self) -> str:
        """The stable model id (``...#onnx-int8`` for the quantised graph)."""
        return self._model_id

    @property
    def dim(self) -> int:
        """The vector dimension (loads the model if needed)."""
        return self._load().dim

    @property
    def batcher(self) -> MicroBatcher:
        """The micro-batcher in front of the model (``batcher.calls`` counts calls)."""
        return self._batcher

    def export_dir(self) -> Path:
        """The folder holding (or about to hold) this model's ONNX export."""
        resolved = resolve_model(self._model_arg, cache_dir=self.cache_dir)
        if resolved.path is None:
            raise ModelNotFound(
                f"OnnxEmbedder needs a local model folder, got {resolved.name!r}; pass "
                f"the folder saved by SentenceTransformer.save(), or model=None"
            )
        if (resolved.path / META_FILE).is_file():
            # Already an ONNX export (the folder written by
            # stagecache.tuning.train_embedder): loaded in place, never re-exported.
            return resolved.path
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", resolved.path.name)[:60]
        digest = fingerprint(resolved.path)
        root = cache_root(self.cache_dir) / "onnx"
        return root / f"{slug}-{digest}-v{EXPORT_VERSION}"

    def _load(self) -> _Runtime:
        if self._runtime is not None:
            return self._runtime
        with self._load_lock:
            if self._runtime is None:
                folder = self.export_dir()
                if not (folder / META_FILE).is_file():
                    model_path = resolve_model(
                        self._model_arg, cache_dir=self.cache_dir
                    ).path
                    assert model_path is not None
                    export_onnx(model_path, folder)
                try:
                    self._runtime = _Runtime(
                        folder, self.quantize, self.threads, self.spinning
                    )
                except (OSError, ValueError, KeyError) as exc:
                    raise ModelNotFound(
                        f"cannot load the ONNX export in {folder} ({exc}); delete the "
                        f"folder to export again"
                    ) from exc
            return self._runtime

    def session_options(self) -> dict[str, str]:
        """The spinning settings of the loaded onnxruntime session, as onnxruntime
        reports them (``"1"``: its default, spinning; loads the model if needed)."""
        options = self._load().session.get_session_options()
        found: dict[str, str] = {}
        for key in SPINNING_KEYS:
            try:
                found[key] = options.get_session_config_entry(key)
            except RuntimeError:  # never set: onnxruntime's default
                found[key] = "1"
        return found

    def _encode(self, texts: list[str]) -> Vectors:
        runtime = self._load()
        try:
            return runtime.encode(texts, self._model_id)
        except Exception as exc:
            raise EmbeddingError(
                f"{self._model_id}: onnxruntime failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def warm_up(self) -> None:
        """Export the model if needed, then load it (in a worker thread)."""
        await anyio.to_thread.run_sync(self._load)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` into L2-normalised float32 rows.

        Args:
            texts: non-empty strings; over-long ones are clipped and truncated to
                the model's token limit (logged with ``truncated=True``).

        Returns:
            An array of shape ``(len(texts), dim)``.

        Raises:
            InputError: for empty, whitespace-only or invalid-Unicode texts.
            ModelNotFound: the model or its export cannot be loaded.
            EmbeddingError: onnxruntime failed or returned bad vectors.
        """
        if self._runtime is None:
            await self.warm_up()
        runtime = self._load()
        items = check_texts(
            texts,
            max_chars=runtime.max_seq_length * CHARS_PER_TOKEN,
            model_id=self._model_id,
        )
        if not items:
            return empty_vectors(runtime.dim)
        out = await self._batcher(items)
        return validate_vectors(out, len(items), runtime.dim, self._model_id)

    async def aclose(self) -> None:
        """Drop the onnxruntime session."""
        self._runtime = None

    async def __aenter__(self) -> OnnxEmbedder:
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
        return f"OnnxEmbedder({self._model_id!r}, quantize={self.quantize!r})"
