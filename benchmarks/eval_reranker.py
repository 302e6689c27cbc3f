"""Measure the cross-encoder reranker on every set, against plain cosine.

    python benchmarks/eval_reranker.py [BUILD_DIR] [--qqp-sample N]

Replay (the data README's scoring): warm with every first text, query with every
second; the vector search (all-MiniLM-L6-v2) returns the top 5 entries; a rule
picks one or none:
- ``cosine``: the top entry when its cosine reaches t (today's plain cache);
- ``ce_top1 >= c``: the top entry when its cosine >= c and the reranker's
  probability reaches t;
- ``ce_rerank >= c``: of the entries with cosine >= c, the one the reranker
  rates highest, when its probability reaches t.
For each rule and set: the most right hits at wrong <= 1% and <= 2% (t chosen on
that set: an upper bound), and the right / wrong hits at the t calibrated on the
held-out QQP val rows (``heldout.jsonl`` of the build: never trained on) for a
wrong-hit budget of 1% and 2% there: what a shipped default would get.
Latency: one query-candidate pair per call, one onnxruntime thread, p50.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _quality_data as D
from eval_pair_model import _sample

NAME = "stagecache-rerank-v1"
FLOORS = (0.6, 0.7, 0.8)


class Reranker:
    """The exported cross-encoder on onnxruntime and tokenizers alone."""

    def __init__(self, folder: Path, threads: int = 2) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        meta = json.loads((folder / "meta.json").read_text())
        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tok.enable_truncation(max_length=int(meta["max_length"]))
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(
            str(folder / "model-int8.onnx"), opts, providers=["CPUExecutionProvider"]
        )

    def scores(self, pairs: list[tuple[str, str]], batch: int = 32) -> np.ndarray:
        out = []
        for lo in range(0, len(pairs), batch):
            enc = self.tok.encode_batch(pairs[lo : lo + batch])
            feed = {
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array(
                    [e.attention_mask for e in enc], dtype=np.int64
                ),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
            }
            out.append(self.sess.run(None, feed)[0].reshape(-1))
        logits = np.concatenate(out) if out else np.zeros(0)
        return 1.0 / (1.0 + np.exp(-logits))


def heldout_set(build: Path) -> D.PairSet:
    rows = [json.loads(x) for x in (build / "heldout.jsonl").read_text().splitlines()]
    return D.PairSet(
        "qqp_val_heldout",
        [r["a"] for r in rows],
        [r["b"] for r in rows],
        np.array([bool(r["label"]) for r in rows]),
        [""] * len(rows),
    )


def ce_matrix(rr: Reranker, r: D.Retrieval, floor: float) -> np.ndarray:
    """The reranker's probability per (query, candidate) at cosine >= floor."""
    ce = np.full(r.sims.shape, np.nan)
    idx = np.argwhere(r.sims >= floor)
    pairs = [(r.ps.second[i], r.entries[r.cand[i, k]]) for i, k in idx]
    ce[idx[:, 0], idx[:, 1]] = rr.scores(pairs)
    return ce


def decide(
    rule: str, r: D.Retrieval, ce: np.ndarray, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """(score, chosen rank) per query; a hit when score >= t."""
    n = len(r.sims)
    if rule == "cosine":
        return r.sims[:, 0].astype(float), np.zeros(n, np.int64)
    ok = r.sims >= floor
    if rule == "ce_top1":
        s = np.where(ok[:, 0], ce[:, 0], -1.0)
        return np.nan_to_num(s, nan=-1.0), np.zeros(n, np.int64)
    masked = np.where(ok, np.nan_to_num(ce, nan=-1.0), -1.0)
    return masked.max(axis=1), masked.argmax(axis=1)


def at(
    r: D.Retrieval, score: np.ndarray, rank: np.ndarray, t: float
) -> tuple[float, float]:
    chosen = np.where(score >= t, rank, -1)
    s = D.score_decisions(r, chosen)
    return s["right_rate"], s["wrong_rate"]


def best(
    r: D.Retrieval, score: np.ndarray, rank: np.ndarray, budget: float
) -> tuple[float, float, float]:
    top = (2.0, 0.0, 0.0)
    for t in np.unique(np.concatenate([score, [2.0]])):
        rr, ww = at(r, score, rank, float(t))
        if ww <= budget and rr > top[1]:
            top = (float(t), rr, ww)
    return top


def latency_us(rr: Reranker) -> float:
    pairs = [
        (
            f"How do I reset my password on device {i}?",
            "How can I reset the password of my device?",
        )
        for i in range(220)
    ]
    ts = []
    for p in pairs:
        t0 = time.perf_counter()
        rr.scores([p])
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts[20:]) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("build", type=Path, nargs="?", default=D.CACHE / "reranker")
    parser.add_argument("--qqp-sample", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rr = Reranker(args.build / NAME)
    calib = heldout_set(args.build)
    sets = [
        _sample(D.load_qqp("test"), args.qqp_sample),
        D.load_mock(),
        D.load_adversarial(),
        D.load_adversarial("heldout"),
        D.load_long(),
        D.load_contextual(),
    ]
    rules = [("cosine", 0.0)] + [
        (k, f) for k in ("ce_top1", "ce_rerank") for f in FLOORS
    ]
    results: dict[str, dict[str, object]] = {}
    decided: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    retrieved: dict[str, D.Retrieval] = {}
    for ps in [calib, *sets]:
        t0 = time.perf_counter()
        r = D.retrieve(ps, k=5)
        ce = ce_matrix(rr, r, min(FLOORS))
        retrieved[ps.name] = r
        decided[ps.name] = {
            f"{rule}>={f}" if rule != "cosine" else rule: decide(rule, r, ce, f)
            for rule, f in rules
        }
        print(f"{ps.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    for budget in (0.01, 0.02):
        for key, (s, k) in decided[calib.name].items():
            t, _, _ = best(retrieved[calib.name], s, k, budget)
            for ps in sets:
                r = retrieved[ps.name]
                s2, k2 = decided[ps.name][key]
                row = results.setdefault(ps.name, {}).setdefault(key, {})
                assert isinstance(row, dict)
                row[f"calibrated{budget:g}"] = (t, *at(r, s2, k2, t))
                row[f"best{budget:g}"] = best(r, s2, k2, budget)
    results["latency_us"] = {
        "p50_one_pair": latency_us(Reranker(args.build / NAME, threads=1))
    }
    out = args.out or args.build / "eval.json"
    out.write_text(json.dumps(results, indent=1))
    for name, per in results.items():
        print(f"\n## {name}")
        if not isinstance(per, dict):
            continue
        for key, row in per.items():
            print(f"{key:16s} {json.dumps(row)}")


if __name__ == "__main__":
    main()
