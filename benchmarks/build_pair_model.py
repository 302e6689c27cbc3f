"""Rebuild the pair model (``stagecache-pair-v1``) and write its evaluation report.

    python benchmarks/build_pair_model.py               # data, train, export, evaluate
    python benchmarks/build_pair_model.py --skip-train  # evaluate an existing build
    python benchmarks/build_pair_model.py --out DIR     # where the build goes

Needs the ``tune`` and ``bench`` extras and WordNet (``apt-get install -y
wordnet-base wordnet-sense-index``). Deterministic: the training pairs come from
``qqp_pairs_val.csv`` (``$STAGECACHE_DATA``, default ``../shared/data``) and
WordNet with a fixed seed (``benchmarks/_pair_data.py``), and training runs one
epoch of all-MiniLM-L6-v2 with ``stagecache.tuning.train_embedder`` (seed 0, two
torch threads, learning rate 1e-5). ``--followups N`` (default 2000) sets how many
follow-up negatives join the pairs (a question vs a follow-up that names no topic),
``--learning-rate`` the peak rate, ``--report FILE`` where the report goes: the
variants measured are in benchmarks/results/pair_model.md. About 17 minutes on two
idle cores.

Writes under ``--out`` (default ``benchmarks/.cache/pair_model``):
    pairs.jsonl           the training pairs
    full/                 the fine-tuned sentence-transformers model and its ONNX export
    stagecache-pair-v1/   the ONNX int8 model alone: model-int8.onnx, tokenizer.json,
                          stagecache_onnx.json; OnnxEmbedder(this folder) loads it
                          (not shipped in the package: it does not beat the base
                          model on every set, see benchmarks/results/pair_model.md)
and the report ``benchmarks/results/pair_model.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _pair_data
import _quality_data as D

from stagecache.tuning import TrainingPair, train_embedder, write_pairs

# The build folder's name (not shipped: see benchmarks/results/pair_model.md).
PAIR_MODEL = "stagecache-pair-v1"

SEED = 0
SHIPPED = ("model-int8.onnx", "tokenizer.json", "stagecache_onnx.json")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def anchor_texts(pairs: list[TrainingPair], n: int) -> list[str]:
    """``n`` distinct texts of the training pairs (seeded): held near the base."""
    texts = sorted({t for p in pairs for t in (p.text_a, p.text_b)})
    return random.Random(SEED + 2).sample(texts, min(n, len(texts)))


def build(
    out: Path,
    max_steps: int | None,
    *,
    learning_rate: float,
    followups: int,
    anchors: int = 0,
    anchor_weight: float = 1.0,
) -> dict[str, object]:
    t0 = time.perf_counter()
    built = _pair_data.build_pairs(D.DATA, seed=SEED, followups=followups)
    out.mkdir(parents=True, exist_ok=True)
    write_pairs(built.pairs, out / "pairs.jsonl")
    print(
        f"{len(built.pairs)} training pairs in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    t1 = time.perf_counter()
    train_embedder(
        built.pairs,
        out_dir=out / "full",
        seed=SEED,
        threads=2,
        max_steps=max_steps,
        learning_rate=learning_rate,
        anchors=anchor_texts(built.pairs, anchors),
        anchor_weight=anchor_weight,
    )
    train_s = time.perf_counter() - t1
    ship = out / PAIR_MODEL
    if ship.exists():
        shutil.rmtree(ship)
    ship.mkdir()
    for name in SHIPPED:
        shutil.copy(out / "full" / name, ship / name)
    meta = json.loads((ship / "stagecache_onnx.json").read_text())
    meta["source"] = PAIR_MODEL  # not the build folder: the file is the same everywhere
    (ship / "stagecache_onnx.json").write_text(json.dumps(meta, indent=2) + "\n")
    info = {
        "pairs": len(built.pairs),
        "positives": sum(p.label for p in built.pairs),
        "counts": dict(sorted(built.counts.items())),
        "pairs_sha256": sha256(out / "pairs.jsonl"),
        "learning_rate": learning_rate,
        "anchors": anchors,
        "anchor_weight": anchor_weight,
        "train_s": round(train_s, 1),
        "total_s": round(time.perf_counter() - t0, 1),
        "weights": str(ship / "model-int8.onnx"),
        "weights_bytes": (ship / "model-int8.onnx").stat().st_size,
        "weights_sha256": sha256(ship / "model-int8.onnx"),
    }
    (out / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2), flush=True)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=D.CACHE / "pair_model")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--max-steps", type=int, default=None, help="smoke runs only")
    parser.add_argument(
        "--qqp-sample", type=int, default=None, help="evaluate N QQP test pairs"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument(
        "--followups",
        type=int,
        default=2000,
        help="follow-up negatives (a question vs the same with its topic dropped)",
    )
    parser.add_argument(
        "--anchors",
        type=int,
        default=0,
        help="texts of the pairs held near the base model's embeddings (distillation)",
    )
    parser.add_argument("--anchor-weight", type=float, default=1.0)
    parser.add_argument("--report", type=Path, default=None, help="the report file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("stagecache").setLevel(logging.INFO)
    if not args.skip_train:
        build(
            args.out,
            args.max_steps,
            learning_rate=args.learning_rate,
            followups=args.followups,
            anchors=args.anchors,
            anchor_weight=args.anchor_weight,
        )
    if not args.skip_eval:
        import eval_pair_model

        eval_pair_model.main(args.out, qqp_sample=args.qqp_sample, report=args.report)


if __name__ == "__main__":
    main()
