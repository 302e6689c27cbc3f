"""Fine-tune a sentence-transformers embedder on labelled pairs, export to ONNX.

The recipe of LangCache-Embed (arXiv 2504.02268): one epoch of
``OnlineContrastiveLoss`` (hard positives and hard negatives of each batch), batch
32, learning rate 2e-5, gradient norm capped at 0.5. Training runs on torch with
``sentence-transformers``' trainer (needs the ``tune`` extra: ``datasets`` and
``accelerate``); the result is a folder that is both a sentence-transformers model
and an ONNX export (``model-int8.onnx``, ``model.onnx``, ``tokenizer.json``,
``stagecache_onnx.json``), so :class:`~stagecache.embeddings.OnnxEmbedder` loads it
offline without exporting again.

Runs are deterministic for a given seed, thread count and library versions: the
seed drives weights, shuffling and dropout, and torch runs on a fixed number of
intra-op threads (float sums depend on how work is split).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stagecache.embeddings._onnx_export import META_FILE, export_onnx
from stagecache.embeddings._paths import resolve_model
from stagecache.errors import ConfigError, InputError, ModelNotFound
from stagecache.tuning._pairs import TrainingPair, check_pairs

__all__ = ["TUNE_EXTRA", "cpu_run_arguments", "train_embedder"]

TUNE_EXTRA = "pip install 'stagecache[tune]'"
_log = logging.getLogger("stagecache.tuning")


def _check_args(
    epochs: int,
    batch_size: int,
    learning_rate: float,
    max_grad_norm: float,
    max_steps: int | None,
    threads: int,
    warmup_ratio: float,
) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("warmup_ratio", 0 <= warmup_ratio < 1, "a number in [0, 1)"),
        ("epochs", epochs >= 1, "an integer >= 1"),
        ("batch_size", batch_size >= 2, "an integer >= 2 (the loss compares pairs)"),
        ("learning_rate", 0 < learning_rate < 1, "a number in (0, 1), e.g. 2e-5"),
        ("max_grad_norm", max_grad_norm > 0, "a number > 0, e.g. 0.5"),
        ("max_steps", max_steps is None or max_steps >= 1, "None or an integer >= 1"),
        ("threads", threads >= 1, "an integer >= 1"),
    ]
    for field, ok, want in checks:
        if not ok:
            raise ConfigError(f"{field} must be {want}", field=field)


def _base_path(base: Path | None) -> Path:
    if base is None:
        path = resolve_model(None).path
        assert path is not None
        return path
    if not (base / "modules.json").is_file() and not (base / "config.json").is_file():
        raise ModelNotFound(
            f"base {base} is not a sentence-transformers folder (no modules.json); "
            f"pass None for all-MiniLM-L6-v2 or a folder saved by "
            f"SentenceTransformer.save()"
        )
    return base


def _progress_callback(base: type[Any]) -> Any:
    """A trainer callback that logs the loss through the ``stagecache`` logger."""

    class _Progress(base):  # type: ignore[misc]
        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any
        ) -> None:
            if logs and "loss" in logs:
                _log.info(
                    "training step %d/%d loss %.4f",
                    state.global_step,
                    state.max_steps,
                    float(logs["loss"]),
                )

    return _Progress()


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _anchor_data(model: Any, texts: list[str]) -> Any:
    """The anchor texts with the base model's embeddings as regression targets."""
    from datasets import Dataset

    targets = model.encode(
        texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False
    )
    return Dataset.from_dict({"text": texts, "label": [list(v) for v in targets]})


def _anchor_loss(model: Any, weight: float, dim: int) -> Any:
    """MSE to the base embeddings, scaled so that for unit vectors it reads
    ``weight * 2 * (1 - cos)``: comparable to the contrastive loss."""
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.losses import MSELoss
    except ImportError:  # 3.x - 5.x
        from sentence_transformers.losses import MSELoss  # type: ignore[no-redef]

    class _Scaled(MSELoss):
        def forward(self, features: Any, labels: Any) -> Any:
            return super().forward(features, labels) * (weight * dim)

    return _Scaled(model)


def cpu_run_arguments(
    *, seed: int, max_steps: int | None, warmup_steps: int
) -> dict[str, Any]:
    """The trainer settings every training run here shares (sentence-transformers'
    training arguments, embedder or cross-encoder): seeded, on the CPU, no
    checkpoints, no reporting, no progress bars, no loader workers.

    ``warmup_steps`` is a step count, not ``warmup_ratio``: transformers 5
    deprecates the ratio.
    """
    return {
        "max_steps": max_steps if max_steps is not None else -1,
        "warmup_steps": warmup_steps,
        "seed": seed,
        "data_seed": seed,
        "save_strategy": "no",
        "report_to": "none",
        "logging_steps": 50,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "use_cpu": True,
    }


def train_embedder(
    pairs: Sequence[TrainingPair],
    *,
    out_dir: Path,
    base: Path | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 2e-5,
    max_grad_norm: float = 0.5,
    seed: int = 0,
    max_steps: int | None = None,
    warmup_ratio: float = 0.1,
    threads: int = 2,
    anchors: Sequence[str] = (),
    anchor_weight: float = 1.0,
) -> Path:
    """Fine-tune an embedder on ``pairs`` and export it for :class:`OnnxEmbedder`.

    Args:
        pairs: labelled pairs (1: equivalent, 0: must not hit); both labels should
            occur, the loss learns from the hardest of each batch.
        out_dir: the folder to create (replaced if it exists); its parent must be
            writable.
        base: the sentence-transformers folder to start from (None: the packaged
            all-MiniLM-L6-v2, read from its copy in the stagecache cache).
        epochs: passes over ``pairs``.
        batch_size: pairs per step.
        learning_rate: peak AdamW learning rate (linear warm-up and decay).
        max_grad_norm: gradient norm clipping.
        seed: seeds weights, shuffling and dropout.
        max_steps: stop after this many steps (None: ``epochs`` full passes).
        warmup_ratio: share of steps with a rising learning rate.
        threads: torch intra-op threads during training (fixed for determinism).
        anchors: texts whose embeddings are held near the base model's
            (distillation from the base): their batches, mixed with the pairs'
            in proportion, add ``anchor_weight * 2 * (1 - cos(tuned, base))``
            to the loss, so the model moves on what the pairs teach and keeps
            the base's geometry elsewhere. Empty: no anchoring.
        anchor_weight: the weight of the anchor loss (> 0).

    Returns:
        ``out_dir``: a sentence-transformers model folder holding its ONNX export
        (``OnnxEmbedder(out_dir)`` loads it as is).

    Raises:
        InputError: a malformed pair.
        ConfigError: a hyper-parameter out of range (naming it).
        ModelNotFound: the training libraries or the base model are missing.
    """
    rows = check_pairs(pairs)
    _check_args(
        epochs,
        batch_size,
        learning_rate,
        max_grad_norm,
        max_steps,
        threads,
        warmup_ratio,
    )
    if not (isinstance(anchor_weight, int | float) and 0 < anchor_weight < math.inf):
        raise ConfigError(
            "anchor_weight must be a finite number > 0, e.g. 1.0", field="anchor_weight"
        )
    for i, text in enumerate(anchors):
        if not isinstance(text, str):
            raise InputError(
                f"anchors[{i}]: {type(text).__name__} is not a string; pass the "
                f"anchor texts as a list of strings"
            )
    keep = sorted({t for t in anchors if t.strip()})
    base_path = _base_path(base)
    try:
        import torch
        from datasets import Dataset
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )
        from transformers.trainer_callback import PrinterCallback, TrainerCallback

        try:  # sentence-transformers >= 6
            from sentence_transformers.sentence_transformer.losses import (
                OnlineContrastiveLoss,
            )
        except ImportError:  # 3.x - 5.x
            from sentence_transformers.losses import (  # type: ignore[no-redef]
                OnlineContrastiveLoss,
            )
    except ImportError as exc:
        raise ModelNotFound(
            f"training an embedder needs torch, sentence-transformers, datasets and "
            f"accelerate ({exc}): {TUNE_EXTRA}"
        ) from exc
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tune-", dir=out_dir.parent))
    old_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        _seed_everything(seed)
        model = SentenceTransformer(str(base_path), device="cpu", local_files_only=True)
        data = Dataset.from_dict(
            {
                "sentence1": [p.text_a for p in rows],
                "sentence2": [p.text_b for p in rows],
                "label": [int(p.label) for p in rows],
            }
        )
        steps_per_epoch = -(-len(rows) // batch_size) + -(-len(keep) // batch_size)
        total_steps = max_steps or epochs * steps_per_epoch
        args = SentenceTransformerTrainingArguments(
            output_dir=str(work / "trainer"),
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            max_grad_norm=max_grad_norm,
            **cpu_run_arguments(
                seed=seed,
                max_steps=max_steps,
                warmup_steps=int(warmup_ratio * total_steps),
            ),
        )
        train_data: Any = data
        loss: Any = OnlineContrastiveLoss(model)
        if keep:
            held = _anchor_data(model, keep)
            dim = len(held[0]["label"])
            train_data = {"pairs": data, "anchors": held}
            loss = {"pairs": loss, "anchors": _anchor_loss(model, anchor_weight, dim)}
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=train_data,
            loss=loss,
        )
        # The library never writes to stdout: the trainer's printer of loss
        # dictionaries goes (training progress is logged by transformers' logger).
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_progress_callback(TrainerCallback))
        _log.info(
            "training embedder",
            extra={"pairs": len(rows), "base": str(base_path), "seed": seed},
        )
        result: Any = trainer.train()
        _log.info(
            "training done",
            extra={
                "steps": int(result.global_step),
                "loss": float(result.training_loss),
            },
        )
        model_dir = work / "model"
        model.save(str(model_dir))
        export_onnx(model_dir, work / "onnx")
        for file in (work / "onnx").iterdir():
            # The ONNX files sit beside the sentence-transformers files; the
            # fast tokenizer file is the same one either way.
            os.replace(file, model_dir / file.name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(model_dir, out_dir)
    finally:
        torch.set_num_threads(old_threads)
        shutil.rmtree(work, ignore_errors=True)
    assert (out_dir / META_FILE).is_file()
    return out_dir
