"""Train the learned verifier and write the weights that ship with stagecache.

    python benchmarks/train_verifier.py

Data: only ``qqp_pairs_val.csv`` (shared data) and the ``train`` part of
``benchmarks/data/adversarial.jsonl``. The QQP val split is replayed as a cache
(warm with question1, query with question2, top-5 candidates) so the model learns on
the candidates it will really see, not on isolated pairs. A gradient-boosted tree
ensemble (scikit-learn, training only) is exported to JSON and evaluated by numpy at
run time. Scores for calibration are out-of-fold (5 folds grouped by query), so the
operating-point table is not fitted on the scores it measures.

Writes ``stagecache/quality/data/verifier.json``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _quality_data as D

from stagecache.quality._features import FEATURE_NAMES, pair_features
from stagecache.quality._structural import analyse, compare, tokenize

OUT = D.ROOT / "stagecache" / "quality" / "data" / "verifier.json"
FLOORS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85)
TAUS = tuple(round(x, 3) for x in np.linspace(0.02, 0.995, 196))
K = 5
SEED = 9


def build_idf(texts: list[str]) -> tuple[dict[str, float], float]:
    from stagecache.quality._structural import STOPWORDS, _stem

    df: Counter[str] = Counter()
    for t in texts:
        df.update({_stem(w) for w in tokenize(t) if w not in STOPWORDS})
    n = len(texts)
    idf = {
        w: round(math.log((n + 1) / (c + 1)) + 1.0, 3) for w, c in df.items() if c >= 3
    }
    return idf, round(math.log((n + 1) / 3.0) + 1.0, 3)


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(
        n_estimators=200,
        max_depth=3,
        learning_rate=0.1,
        subsample=0.8,
        random_state=SEED,
    )
    model.fit(x, y, sample_weight=w)
    return model


def export(model) -> dict[str, object]:  # type: ignore[no-untyped-def]
    trees = []
    for est in model.estimators_[:, 0]:
        t = est.tree_
        trees.append(
            {
                "feature": t.feature.tolist(),
                "threshold": [round(float(v), 6) for v in t.threshold],
                "left": t.children_left.tolist(),
                "right": t.children_right.tolist(),
                "value": [round(float(v), 6) for v in t.value[:, 0, 0]],
            }
        )
    prior = float(model.init_.class_prior_[1])
    return {
        "kind": "gbdt",
        "init": math.log(prior / (1 - prior)),
        "learning_rate": model.learning_rate,
        "trees": trees,
    }


def first_accepted(
    sims: np.ndarray, score: np.ndarray, ok: np.ndarray, floor: float, tau: float
) -> np.ndarray:
    acc = (sims >= floor) & ok & (score >= tau)
    any_acc = acc.any(1)
    return np.where(any_acc, acc.argmax(1), -1)


def main() -> None:
    t0 = time.time()
    val = D.load_qqp("val")
    adv = D.load_adversarial("train")
    idf, default_idf = build_idf(val.first + val.second)
    r = D.retrieve(val, k=K)
    parse = {t: analyse(t) for t in set(val.first) | set(val.second)}
    rows, feats, labels, vetoes = [], [], [], []
    for i in range(len(val.second)):
        q = parse[val.second[i]]
        for j in range(K):
            if r.sims[i, j] < min(FLOORS):
                continue
            c = parse[r.entries[r.cand[i, j]]]
            feats.append(pair_features(q, c, float(r.sims[i, j]), idf, default_idf))
            labels.append(bool(r.right[i, j]))
            vetoes.append(compare(q, c).first_failure() is not None)
            rows.append((i, j))
    ea, eb = D.embed(adv.first), D.embed(adv.second)
    adv_cos = (ea * eb).sum(1)
    adv_feats = [
        pair_features(analyse(b), analyse(a), float(s), idf, default_idf)
        for a, b, s in zip(adv.first, adv.second, adv_cos, strict=True)
    ]
    x = np.vstack(feats + adv_feats)
    y = np.array(labels + adv.label.tolist())
    w = np.array([1.0] * len(feats) + [5.0] * len(adv_feats))
    n_val = len(feats)
    print(f"{n_val} val candidates ({sum(labels)} right), {len(adv_feats)} adversarial")
    # out-of-fold scores, folds grouped by query row
    qrow = np.array(
        [i for i, _ in rows] + [len(val.second) + k for k in range(len(adv_feats))]
    )
    fold = np.random.default_rng(SEED).integers(0, 5, qrow.max() + 1)[qrow]
    oof = np.zeros(len(y))
    for f in range(5):
        m = fit(x[fold != f], y[fold != f], w[fold != f])
        oof[fold == f] = m.predict_proba(x[fold == f])[:, 1]
        print(f"fold {f} done {time.time() - t0:.0f}s", flush=True)
    model = fit(x, y, w)
    # calibration tables on val (out-of-fold)
    score = np.full(r.sims.shape, -1.0)
    veto = np.zeros(r.sims.shape, bool)
    for (i, j), s, v in zip(rows, oof[:n_val], vetoes, strict=True):
        score[i, j] = s
        veto[i, j] = v
    calibration: dict[str, list[dict[str, float]]] = {}
    for kind, ok in (("learned", np.ones_like(veto)), ("combined", ~veto)):
        table = []
        for floor in FLOORS:
            for tau in TAUS:
                ch = first_accepted(r.sims, score, ok, floor, tau)
                s = D.score_decisions(r, ch)
                table.append(
                    {
                        "floor": floor,
                        "tau": tau,
                        "wrong_rate": round(s["wrong_rate"], 5),
                        "right_rate": round(s["right_rate"], 5),
                        "precision": round(s["precision"], 5),
                    }
                )
        calibration[kind] = table
    adv_oof = oof[n_val:]
    print("adversarial train OOF acc @0.5:", ((adv_oof >= 0.5) == adv.label).mean())
    payload = {
        "version": 1,
        "trained_on": "qqp_pairs_val.csv (Quora Question Pairs, via MeanCache) + "
        "benchmarks/data/adversarial.jsonl train split",
        "embedding_model": D.MODEL,
        "features": list(FEATURE_NAMES),
        "model": export(model),
        "idf": idf,
        "default_idf": default_idf,
        "calibration": calibration,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(payload, separators=(",", ":"), sort_keys=True))
    # sanity: numpy inference matches sklearn
    from stagecache.quality._learned import GBDT

    g = GBDT.from_dict(payload["model"])  # type: ignore[arg-type]
    ref = model.predict_proba(x[:200])[:, 1]
    mine = np.array([g.predict(row) for row in x[:200]])
    assert np.allclose(ref, mine, atol=1e-6), np.abs(ref - mine).max()
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f}s")
    for kind, table in calibration.items():
        for target in (0.005, 0.01, 0.02):
            best = max(
                (e for e in table if e["wrong_rate"] <= target),
                key=lambda e: e["right_rate"],
            )
            print(kind, target, best)


if __name__ == "__main__":
    main()
