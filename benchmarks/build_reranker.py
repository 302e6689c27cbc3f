"""Train a cross-encoder from all-MiniLM-L6-v2's weights and export it (ONNX int8).

    python benchmarks/build_reranker.py              # pairs, training, export
    python benchmarks/build_reranker.py --max-steps 5 --out /tmp/r   # smoke run

A cross-encoder reads the query and a cached text together (one forward over
both) and says whether the cached answer answers the query: a reranker over the
few candidates the vector search returns, the option of issue 15 that the
fine-tuned embedder did not cover (benchmarks/results/pair_model.md).

Training data: the pair model's recipe (``benchmarks/_pair_data.py``: QQP val
plus rule-made short and long pairs, follow-up negatives), with 20% of the QQP
val rows (by a hash of the row) kept out of every source, questions included:
they calibrate the operating point (``benchmarks/eval_reranker.py``). Each pair
is shown in a random order (seeded), so the model does not learn which side is
the query. One epoch, batch 32, BinaryCrossEntropyLoss, seed 0, two torch
threads. Never the evaluation sets.

Writes under ``--out`` (default ``benchmarks/.cache/reranker``):
    pairs.jsonl, heldout.jsonl   training pairs and the calibration rows
    full/                        the sentence-transformers CrossEncoder
    stagecache-rerank-v1/        model-int8.onnx, tokenizer.json, meta.json
    build.json                   counts, timings, hashes
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _pair_data
import _quality_data as D
from build_pair_model import SEED, sha256

from stagecache.embeddings._paths import resolve_model
from stagecache.tuning import TrainingPair, write_pairs
from stagecache.tuning._train import cpu_run_arguments

NAME = "stagecache-rerank-v1"
HOLDOUT = 0.2
MAX_LENGTH = 256


def training_pairs(followups: int) -> _pair_data.Built:
    built = _pair_data.build_pairs(
        D.DATA, seed=SEED, followups=followups, holdout=HOLDOUT
    )
    rng = random.Random(SEED + 7)
    built.pairs = [
        p if rng.random() < 0.5 else TrainingPair(p.text_b, p.text_a, p.label)
        for p in built.pairs
    ]
    return built


def train(
    pairs: list[TrainingPair], out: Path, *, lr: float, max_steps: int | None
) -> None:
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers.trainer_callback import PrinterCallback

    torch.set_num_threads(2)
    random.seed(SEED)
    torch.manual_seed(SEED)
    base = resolve_model(None).path
    assert base is not None
    model = CrossEncoder(str(base), num_labels=1, max_length=MAX_LENGTH, device="cpu")
    data = Dataset.from_dict(
        {
            "sentence1": [p.text_a for p in pairs],
            "sentence2": [p.text_b for p in pairs],
            "label": [float(p.label) for p in pairs],
        }
    )
    steps = max_steps or -(-len(pairs) // 32)
    work = Path(tempfile.mkdtemp(prefix=".rerank-"))
    args = CrossEncoderTrainingArguments(
        output_dir=str(work),
        num_train_epochs=1,
        per_device_train_batch_size=32,
        learning_rate=lr,
        max_grad_norm=0.5,
        **cpu_run_arguments(
            seed=SEED, max_steps=max_steps, warmup_steps=int(0.1 * steps)
        ),
    )
    trainer = CrossEncoderTrainer(
        model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(model)
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    model.save(str(out))


def export(full: Path, target: Path) -> None:
    """ONNX fp32 then dynamic int8 (per-channel) of the classifier's logit."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(full), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(full), local_files_only=True, attn_implementation="eager"
    )
    model.eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]

    class Wrapper(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).logits[:, 0]

    sample = tok(
        ["a question", "b"],
        ["an answer here", "c d"],
        return_tensors="pt",
        padding=True,
    )
    target.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapper(model),
            tuple(sample[n] for n in names),
            str(target / "model.onnx"),
            input_names=names,
            output_names=["logit"],
            dynamic_axes={
                **{n: {0: "batch", 1: "seq"} for n in names},
                "logit": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
        quantize_dynamic(
            str(target / "model.onnx"),
            str(target / "model-int8.onnx"),
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    (target / "model.onnx").unlink()
    tok.backend_tokenizer.save(str(target / "tokenizer.json"))
    meta = {"max_length": MAX_LENGTH, "inputs": names, "source": NAME}
    (target / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=D.CACHE / "reranker")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--followups", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t0 = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    built = training_pairs(args.followups)
    write_pairs(built.pairs, out / "pairs.jsonl")
    (out / "heldout.jsonl").write_text(
        "".join(
            json.dumps({"a": a, "b": b, "label": y}) + "\n" for a, b, y in built.heldout
        )
    )
    print(f"{len(built.pairs)} pairs, {len(built.heldout)} held out", flush=True)
    t1 = time.perf_counter()
    train(built.pairs, out / "full", lr=args.learning_rate, max_steps=args.max_steps)
    train_s = time.perf_counter() - t1
    export(out / "full", out / NAME)
    weights = out / NAME / "model-int8.onnx"
    info = {
        "pairs": len(built.pairs),
        "positives": sum(p.label for p in built.pairs),
        "heldout_rows": len(built.heldout),
        "counts": dict(sorted(built.counts.items())),
        "pairs_sha256": sha256(out / "pairs.jsonl"),
        "learning_rate": args.learning_rate,
        "train_s": round(train_s, 1),
        "total_s": round(time.perf_counter() - t0, 1),
        "weights_bytes": weights.stat().st_size,
        "weights_sha256": sha256(weights),
    }
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2), flush=True)


if __name__ == "__main__":
    main()
