"""Do the embeddings themselves lift the learned verifier? (an experiment)

    python benchmarks/verifier_embedding_features.py

The shipped verifier sees the two texts, the cosine and the rank context. This
script adds the two MiniLM vectors as pair features (element-wise product and
absolute difference: 768 more features), fits a gradient-boosted model on the same
QQP val replay (plus the adversarial train split), and compares it with the shipped
feature set: out-of-fold AUC on val, and hits on the QQP test split at the operating
points each one calibrates for the same wrong-hit budgets. Writes
``benchmarks/results/verifier_embedding_features.txt``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _quality_data as D
import train_verifier as T

from stagecache.quality._features import pair_features
from stagecache.quality._invariants import trivially_equivalent
from stagecache.quality._structural import analyse

OUT = D.ROOT / "benchmarks" / "results" / "verifier_embedding_features.txt"
BUDGETS = (0.01, 0.02, 0.03)


def vector_features(rep: T.Replay, ps: D.PairSet) -> np.ndarray:
    e, q = D.embed(rep.r.entries), D.embed(ps.second)
    qi = np.array([i for i, _ in rep.rows], dtype=np.int64)
    cj = np.array([rep.r.cand[i, j] for i, j in rep.rows], dtype=np.int64)
    return np.hstack([q[qi] * e[cj], np.abs(q[qi] - e[cj])])


def fit_hgb(x: np.ndarray, y: np.ndarray, w: np.ndarray):  # type: ignore[no-untyped-def]
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=400,
        learning_rate=0.05,
        max_leaf_nodes=15,
        l2_regularization=1.0,
        random_state=T.SEED,
    )
    model.fit(x, y, sample_weight=w)
    return model


def run(with_vectors: bool, log: list[str]) -> None:
    from sklearn.metrics import roc_auc_score

    t0 = time.time()
    val = D.load_qqp("val")
    adv = D.load_adversarial("train")
    idf, didf = T.build_idf(val.first + val.second)
    rep = T.Replay(val, idf, didf)
    ea, eb = D.embed(adv.first), D.embed(adv.second)
    adv_x = np.vstack(
        [
            pair_features(
                analyse(b),
                analyse(a),
                float(s),
                idf,
                didf,
                (float(s), T.FEATURE_FLOOR, 0),
                trivially_equivalent(b, a),
            )
            for a, b, s in zip(adv.first, adv.second, (ea * eb).sum(1), strict=True)
        ]
    )
    x_val, x_adv = rep.x, adv_x
    if with_vectors:
        x_val = np.hstack([rep.x, vector_features(rep, val)])
        x_adv = np.hstack([adv_x, eb * ea, np.abs(eb - ea)])
    x = np.vstack([x_val, x_adv])
    y = np.concatenate([rep.y, adv.label]).astype(int)
    w = np.array([1.0] * len(rep.y) + [5.0] * len(adv_x))
    fit = fit_hgb if with_vectors else T.fit
    rows = [i for i, _ in rep.rows] + [len(val.second) + k for k in range(len(adv_x))]
    qrow = np.array(rows)
    fold = np.random.default_rng(T.SEED).integers(0, 5, qrow.max() + 1)[qrow]
    oof = np.zeros(len(y))
    for f in range(5):
        m = fit(x[fold != f], y[fold != f], w[fold != f])
        oof[fold == f] = m.predict_proba(x[fold == f])[:, 1]
    name = "shipped features + vectors" if with_vectors else "shipped features"
    auc = roc_auc_score(y[: len(rep.y)], oof[: len(rep.y)])
    log.append(f"## {name} ({x.shape[1]} features)")
    log.append(f"val out-of-fold AUC {auc:.4f}")
    rep.set_scores(oof[: len(rep.y)])
    table = T.frontier(rep, veto=True)
    model = fit(x, y, w)
    test = D.load_qqp("test")
    ev = T.Replay(test, idf, didf, exact_is_right=False)
    xt = np.hstack([ev.x, vector_features(ev, test)]) if with_vectors else ev.x
    ev.set_scores(model.predict_proba(xt)[:, 1])
    for b in BUDGETS:
        e = T.pick(table, b)
        long_band = (e["long_floor"], e["long_margin"])
        s = D.score_decisions(
            ev.r, ev.choose(True, e["floor"], e["high"], e["tau"], *long_band)
        )
        log.append(
            f"budget {b}: val right {e['right_rate']:.3f} wrong {e['wrong_rate']:.3f}"
            f" | QQP test right {s['right_rate']:.3f} wrong {s['wrong_rate']:.3f}"
            f" precision {s['precision']:.3f}"
        )
    log.append(f"({time.time() - t0:.0f} s)")
    log.append("")
    print("\n".join(log[-6:]), flush=True)


def main() -> None:
    log = [
        "Learned verifier with and without the embeddings as features",
        "(python benchmarks/verifier_embedding_features.py; QQP test strict scoring)",
        "",
    ]
    run(False, log)
    run(True, log)
    OUT.write_text("\n".join(log) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
