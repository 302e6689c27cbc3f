"""One-time export of a sentence-transformers model to ONNX (fp32 and int8).

This is the only module of the ONNX path that imports torch and transformers, and
only inside :func:`export_onnx`. The result is a self-contained folder that
:class:`~stagecache.embeddings.OnnxEmbedder` runs with ``onnxruntime`` and
``tokenizers`` alone:

    model.onnx          fp32 graph: (input_ids, attention_mask[, token_type_ids])
                        -> last_hidden_state
    model-int8.onnx     dynamic int8 quantisation, per-channel weights
    tokenizer.json      the fast tokenizer
    stagecache_onnx.json  pooling mode, max_seq_length, dim, pad token, inputs

Every file is written to a temporary folder first and the folder renamed into
place, so a concurrent or interrupted export never leaves a half-written model.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from stagecache.errors import ModelNotFound

__all__ = ["EXPORT_VERSION", "META_FILE", "export_onnx", "onnx_file"]

EXPORT_VERSION = 1
META_FILE = "stagecache_onnx.json"
_OPSET = 17
_log = logging.getLogger("stagecache.embeddings")


def onnx_file(quantize: str) -> str:
    """The file name of the graph for ``quantize`` (``"fp32"`` or ``"int8"``)."""
    return "model.onnx" if quantize == "fp32" else "model-int8.onnx"


def _pooling_mode(model_path: Path) -> str:
    for folder in sorted(model_path.glob("*_Pooling")):
        config = json.loads((folder / "config.json").read_text("utf-8"))
        # sentence-transformers >= 6 saves one "pooling_mode" string; earlier
        # versions a flag per mode.
        if config.get("pooling_mode") in ("mean", "cls", "max"):
            return str(config["pooling_mode"])
        for mode in ("mean_tokens", "cls_token", "max_tokens"):
            if config.get(f"pooling_mode_{mode}"):
                return mode.split("_")[0]
        raise ModelNotFound(
            f"{folder}: unsupported pooling mode (OnnxEmbedder supports mean, cls, max)"
        )
    return "mean"


def _max_seq_length(model_path: Path, tokenizer: Any) -> int:
    try:
        config = json.loads(
            (model_path / "sentence_bert_config.json").read_text("utf-8")
        )
        return int(config["max_seq_length"])
    except (OSError, KeyError, ValueError):
        return int(min(getattr(tokenizer, "model_max_length", 512), 512))


def export_onnx(model_path: Path, target: Path) -> Path:
    """Export ``model_path`` to ONNX fp32 and int8 under ``target``.

    Args:
        model_path: a local sentence-transformers model folder.
        target: the folder to create (its parent must be writable).

    Returns:
        ``target``.

    Raises:
        ModelNotFound: torch/transformers are missing, or the model cannot be
            exported.
    """
    try:
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise ModelNotFound(
            f"exporting {model_path} to ONNX needs torch, transformers and onnx at "
            f"export time ({exc}); install them once, or copy a folder exported "
            f"elsewhere to {target}"
        ) from exc

    _log.info(
        "exporting embedding model to ONNX", extra={"model_path": str(model_path)}
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelNotFound(f"{model_path}: no fast tokenizer, cannot export to ONNX")
    model = AutoModel.from_pretrained(
        str(model_path), local_files_only=True, attn_implementation="eager"
    )
    model.eval()
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"] + (
        ["token_type_ids"] if takes_types else []
    )

    class _Wrapper(torch.nn.Module):
        # Keyword arguments only: positional order of forward() changes across
        # transformers versions.
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    sample = tokenizer(
        ["an example", "a longer example sentence"], padding=True, return_tensors="pt"
    )
    args = tuple(sample[name] for name in names)
    axes = {name: {0: "batch", 1: "seq"} for name in [*names, "last_hidden_state"]}

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter warns about its own deprecation and tracing
            # details; they concern this one-off export, not the user.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Wrapper(model),
                args,
                str(tmp / "model.onnx"),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=_OPSET,
                dynamo=False,
            )
            quantize_dynamic(
                str(tmp / "model.onnx"),
                str(tmp / "model-int8.onnx"),
                per_channel=True,
                weight_type=QuantType.QInt8,
            )
        tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        meta = {
            "export_version": EXPORT_VERSION,
            "pooling": _pooling_mode(model_path),
            "max_seq_length": _max_seq_length(model_path, tokenizer),
            "dim": int(model.config.hidden_size),
            "pad_token": tokenizer.pad_token,
            "pad_id": int(tokenizer.pad_token_id or 0),
            "inputs": names,
            "source": str(model_path),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2), "utf-8")
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first; keep its (identical) result.
            if not (target / META_FILE).is_file():
                raise
    except Exception as exc:
        if isinstance(exc, ModelNotFound):
            raise
        raise ModelNotFound(
            f"exporting {model_path} to ONNX failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
