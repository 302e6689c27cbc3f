"""Train the learned verifier and write the weights that ship with stagecache.

    python benchmarks/train_verifier.py            # train, calibrate, write weights
    python benchmarks/train_verifier.py --report   # also print replay results on
                                                   # the evaluation sets (no tuning)

    python benchmarks/train_verifier.py --with-long
        # the measured alternative (not shipped): also train on our long-statement
        # set and calibrate the long-text band on it (see results/quality.md)

    python benchmarks/train_verifier.py --with-statements 3000 --out FILE
        # measured, not shipped: also train on rule-made short WordNet statements
        # (``_pair_data.short_statements``; see results/quality_targets.md)

Data: only ``qqp_pairs_val.csv`` (shared data) and the ``train`` part of
``benchmarks/data/adversarial.jsonl``; with ``--with-long`` also
``benchmarks/data/long_statements.jsonl`` (answer-like statements with rivals on the
same topic, written for this; folds grouped by topic). The QQP val split is replayed
as a cache (warm with question1, query with question2, top-5 candidates) so the
model learns on the candidates it will really see, with their rank context (gap to
the best and to the next candidate), not on isolated pairs. A gradient-boosted tree
ensemble (scikit-learn, training only) is exported to JSON and evaluated by numpy at
run time. Scores for calibration are out-of-fold (5 folds grouped by query), so the
operating-point table is not fitted on the scores it measures.

The banded decision calibrated here (see ``stagecache/quality/_verifier.py``): an
exact repeat or a trivially equivalent rewording (cosine >= 0.85) is accepted; a
structural failure is rejected; below ``floor`` nothing is accepted; at or above
``high`` a candidate is accepted on its cosine; in between the learned score must
reach ``tau``, except for long texts (both at least ``LONG_TOKENS`` tokens: outside
the short questions the model was trained on), which are accepted from
``long_floor`` when they stand ``long_margin`` clear of the closest different entry.
For every budget the table keeps the (floor, high, tau, long band) points on the
right-hits / wrong-hits frontier of the val replay; with ``--with-long`` each
point's long-text band (floor, margin, score threshold) is then the one with the
most right hits on the long-statement replay whose wrong-hit rate there stays within
the point's val wrong-hit rate.

Writes ``stagecache/quality/data/verifier.json``, whose ``embedder`` field names the
pipeline embedder id it is calibrated for; a calibration for another embedder goes
in its own ``verifier-<name>.json`` (see ``stagecache/quality/_calibration.py``).

    python benchmarks/train_verifier.py --embedder FOLDER --out FILE
        # calibrate for another embedder (an ONNX int8 folder): the features and
        # the replay use its cosines, and FILE records its id in ``embedder``
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _quality_data as D

from stagecache.quality._features import (
    FEATURE_NAMES,
    ambiguity_margins,
    pair_features,
    rank_contexts,
)
from stagecache.quality._invariants import (
    TRIVIAL_MIN_COSINE,
    normalise_text,
    trivially_equivalent,
)
from stagecache.quality._structural import analyse, compare, tokenize
from stagecache.quality._verifier import LONG_COSINE, LONG_TOKENS

OUT = D.ROOT / "stagecache" / "quality" / "data" / "verifier.json"
FLOORS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9)
HIGHS = (0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.01)
TAUS = tuple(round(x, 3) for x in np.linspace(0.02, 0.98, 49))
LONG_FLOORS = (0.8, 0.85, 0.88, 0.9, 0.92)
LONG_MARGINS = (0.0, 0.01, 0.02, 0.03, 0.05)
LONG_TAUS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LONG_WEIGHT = 3.0
FEATURE_FLOOR = min(FLOORS)
K = 5
SEED = 9


def build_idf(texts: list[str]) -> tuple[dict[str, float], float]:
    from stagecache.quality._lexicon import STOPWORDS
    from stagecache.quality._parse import _stem

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


class Replay:
    """Per-candidate facts of a pair set replayed as a cache (top-K).

    With ``exact_is_right`` a hit on an entry whose text equals the query (after
    normalisation) counts as right: QQP repeats many questions across rows, and the
    strict rule would call the cached answer to the *identical* question wrong. The
    verifiers always accept exact repeats, so the budget calibrated here is the
    share of wrong hits on queries that are not exact repeats.
    """

    def __init__(
        self,
        ps: D.PairSet,
        idf: dict[str, float],
        default_idf: float,
        exact_is_right: bool = True,
    ) -> None:
        self.r = r = D.retrieve(ps, k=K)
        parse = {t: analyse(t) for t in set(r.entries) | set(ps.second)}
        shape = r.sims.shape
        self.exact = np.zeros(shape, bool)
        self.trivial = np.zeros(shape, bool)
        self.veto = np.zeros(shape, bool)
        self.long = np.zeros(shape, bool)
        self.score = np.full(shape, -1.0)
        self.margin = np.full(shape, -1.0)
        rows, feats = [], []
        for i, q in enumerate(ps.second):
            sims = [float(s) for s in r.sims[i] if s >= FEATURE_FLOOR]
            ctx = rank_contexts(sims, FEATURE_FLOOR)
            texts = [normalise_text(r.entries[r.cand[i, j]]) for j in range(len(sims))]
            self.margin[i, : len(sims)] = ambiguity_margins(sims, texts, FEATURE_FLOOR)
            pq = parse[q]
            for j in range(len(sims)):
                text = r.entries[r.cand[i, j]]
                pc = parse[text]
                self.exact[i, j] = normalise_text(q) == normalise_text(text)
                if self.exact[i, j] and exact_is_right:
                    r.right[i, j] = True
                self.veto[i, j] = compare(pq, pc).first_failure() is not None
                self.long[i, j] = min(len(pq.tokens), len(pc.tokens)) >= LONG_TOKENS
                eq = trivially_equivalent(q, text)
                self.trivial[i, j] = eq
                feats.append(
                    pair_features(pq, pc, sims[j], idf, default_idf, ctx[j], eq)
                )
                rows.append((i, j))
        self.rows = rows
        self.x = np.vstack(feats) if feats else np.zeros((0, len(FEATURE_NAMES)))
        self.y = np.array([bool(r.right[i, j]) for i, j in rows])

    def set_scores(self, scores: np.ndarray) -> None:
        for (i, j), s in zip(self.rows, scores, strict=True):
            self.score[i, j] = s

    def choose(
        self,
        veto: bool,
        floor: float,
        high: float,
        tau: float,
        long_floor: float = LONG_COSINE,
        long_margin: float = 0.0,
        long_tau: float = 0.0,
    ) -> np.ndarray:
        s = self.r.sims
        ok = ~self.veto if veto else np.ones_like(self.veto)
        acc = self.exact | (
            ok
            & (
                (self.trivial & ~self.veto & (s >= TRIVIAL_MIN_COSINE))
                | ((s >= floor) & (s >= high))
                | (~self.long & (s >= floor) & (self.score >= tau))
                | (
                    self.long
                    & (s >= long_floor)
                    & (self.margin >= long_margin)
                    & (self.score >= long_tau)
                )
            )
        )
        return np.where(acc.any(1), acc.argmax(1), -1)


def frontier(rep: Replay, veto: bool) -> list[dict[str, float]]:
    """Per floor, the (high, tau) points no other beats on both right and wrong."""
    out: list[dict[str, float]] = []
    for floor in FLOORS:
        pts = []
        for high, tau, lf, lm in itertools.product(
            HIGHS, TAUS, LONG_FLOORS, LONG_MARGINS
        ):
            s = D.score_decisions(rep.r, rep.choose(veto, floor, high, tau, lf, lm))
            pts.append(
                {
                    "floor": floor,
                    "high": high,
                    "tau": tau,
                    "long_floor": lf,
                    "long_margin": lm,
                    "long_tau": 0.0,
                    "wrong_rate": round(s["wrong_rate"], 5),
                    "right_rate": round(s["right_rate"], 5),
                    "precision": round(s["precision"], 5),
                }
            )
        pts.sort(key=lambda e: (e["wrong_rate"], -e["right_rate"]))
        best = -1.0
        for e in pts:
            if e["right_rate"] > best:
                out.append(e)
                best = e["right_rate"]
    return out


def tune_long(
    table: list[dict[str, float]], rep: Replay, lrep: Replay, kind: str
) -> list[dict[str, float]]:
    """Set each row's long-text band from the long-statement replay.

    QQP questions are short: the val replay hardly constrains the long-text band.
    For every calibrated row, take the (long_floor, long_margin, long_tau) with the
    most right hits on our long-statement replay (out-of-fold scores) whose
    wrong-hit rate there, and on the val replay, stays within the row's own val
    wrong-hit rate; if none does, the strictest band.
    """
    veto = kind == "combined"
    out = []
    grid = list(itertools.product(LONG_FLOORS, LONG_MARGINS, LONG_TAUS))
    for e in table:
        best: tuple[float, ...] | None = None
        budget = e["wrong_rate"] + 1e-9
        for band in grid:
            args = (veto, e["floor"], e["high"], e["tau"], *band)
            sl = D.score_decisions(lrep.r, lrep.choose(*args))
            if sl["wrong_rate"] > budget:
                continue
            if best is None or sl["right_rate"] > best[3]:
                best = (*band, sl["right_rate"])
        band = best[:3] if best is not None else grid[-1]
        args = (veto, e["floor"], e["high"], e["tau"], *band)
        sl = D.score_decisions(lrep.r, lrep.choose(*args))
        sv = D.score_decisions(rep.r, rep.choose(*args))
        row = dict(e)
        row.update(
            long_floor=band[0],
            long_margin=band[1],
            long_tau=band[2],
            wrong_rate=round(sv["wrong_rate"], 5),
            right_rate=round(sv["right_rate"], 5),
            precision=round(sv["precision"], 5),
            long_wrong_rate=round(sl["wrong_rate"], 5),
            long_right_rate=round(sl["right_rate"], 5),
        )
        out.append(row)
    return out


def pick(table: list[dict[str, float]], budget: float) -> dict[str, float]:
    ok = [e for e in table if e["wrong_rate"] <= budget]
    return max(ok, key=lambda e: e["right_rate"]) if ok else table[0]


def main(
    report: bool = False,
    with_long: bool = False,
    embedder: str | None = None,
    out: Path = OUT,
    statements: int = 0,
) -> None:
    t0 = time.time()
    embedder_id = D.use_embedder(embedder)
    val = D.load_qqp("val")
    adv = D.load_adversarial("train")
    idf, default_idf = build_idf(val.first + val.second)
    rep = Replay(val, idf, default_idf)
    ea, eb = D.embed(adv.first), D.embed(adv.second)
    adv_cos = (ea * eb).sum(1)
    adv_feats = [
        pair_features(
            analyse(b),
            analyse(a),
            float(s),
            idf,
            default_idf,
            (float(s), FEATURE_FLOOR, 0),
            trivially_equivalent(b, a),
        )
        for a, b, s in zip(adv.first, adv.second, adv_cos, strict=True)
    ]
    long_ps = D.load_long()
    lrep = Replay(long_ps, idf, default_idf)
    if not with_long:
        lrep.x, lrep.y, lrep.rows = lrep.x[:0], lrep.y[:0], []
    topics = sorted(set(long_ps.category))
    sx, sy, s_rows = _statement_rows(statements, idf, default_idf)
    n_val, n_adv, n_long = len(rep.y), len(adv_feats), len(lrep.y)
    x = np.vstack([rep.x, *adv_feats, lrep.x, sx])
    y = np.concatenate([rep.y, adv.label, lrep.y, sy])
    w = np.array(
        [1.0] * n_val + [5.0] * n_adv + [LONG_WEIGHT] * n_long + [1.0] * len(sy)
    )
    print(
        f"{n_val} val candidates ({rep.y.sum()} right), {n_adv} adversarial, "
        f"{n_long} long-statement candidates ({lrep.y.sum()} right), "
        f"{len(sy)} WordNet statement candidates ({sy.sum()} right)"
    )
    # folds grouped by query (val, adversarial) and by topic (long statements:
    # rows of one topic share their cached texts)
    base = len(val.second) + n_adv
    qrow = np.array(
        [i for i, _ in rep.rows]
        + [len(val.second) + k for k in range(n_adv)]
        + [base + topics.index(long_ps.category[i]) for i, _ in lrep.rows]
        + [base + len(topics) + i for i, _ in s_rows]
    )
    fold = np.random.default_rng(SEED).integers(0, 5, qrow.max() + 1)[qrow]
    oof = np.zeros(len(y))
    for f in range(5):
        m = fit(x[fold != f], y[fold != f], w[fold != f])
        oof[fold == f] = m.predict_proba(x[fold == f])[:, 1]
        print(f"fold {f} done {time.time() - t0:.0f}s", flush=True)
    model = fit(x, y, w)
    rep.set_scores(oof[:n_val])
    calibration = {
        kind: frontier(rep, veto=kind == "combined") for kind in ("learned", "combined")
    }
    if with_long:
        lrep.set_scores(oof[n_val + n_adv :])
        calibration = {
            kind: tune_long(table, rep, lrep, kind)
            for kind, table in calibration.items()
        }
    adv_oof = oof[n_val : n_val + n_adv]
    print("adversarial train OOF acc @0.5:", ((adv_oof >= 0.5) == adv.label).mean())
    payload = {
        "version": 2,
        "trained_on": "qqp_pairs_val.csv (Quora Question Pairs, via MeanCache) + "
        "benchmarks/data/adversarial.jsonl train split",
        "embedding_model": D.MODEL,
        # the pipeline embedder's model_id this calibration holds for (see
        # stagecache/quality/_calibration.py)
        "embedder": embedder_id if embedder else f"sentence-transformers/{D.MODEL}",
        "features": list(FEATURE_NAMES),
        "feature_floor": FEATURE_FLOOR,
        "model": export(model),
        "idf": idf,
        "default_idf": default_idf,
        "calibration": calibration,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, separators=(",", ":"), sort_keys=True))
    from stagecache.quality._learned import GBDT

    g = GBDT.from_dict(payload["model"])  # type: ignore[arg-type]
    ref = model.predict_proba(x[:200])[:, 1]
    mine = np.array([g.predict(row) for row in x[:200]])
    assert np.allclose(ref, mine, atol=1e-6), np.abs(ref - mine).max()
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f}s")
    budgets = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05)
    for kind, table in calibration.items():
        for b in budgets:
            print("val", kind, b, pick(table, b))
    if report:
        sets = [
            D.load_qqp("test"),
            D.load_mock(),
            D.load_contextual(),
            D.load_adversarial("heldout"),
        ]
        for ps in sets:
            ev = Replay(ps, idf, default_idf, exact_is_right=False)
            ev.set_scores(model.predict_proba(ev.x)[:, 1] if len(ev.x) else [])
            for b in budgets:
                e = pick(calibration["combined"], b)
                ch = ev.choose(
                    True,
                    e["floor"],
                    e["high"],
                    e["tau"],
                    e["long_floor"],
                    e["long_margin"],
                    e.get("long_tau", 0.0),
                )
                s = D.score_decisions(ev.r, ch)
                hit = ch >= 0
                n_exact = int(ev.exact[np.arange(len(ch))[hit], ch[hit]].sum())
                print(
                    f"{ps.name} combined@{b} floor={e['floor']} high={e['high']} "
                    f"tau={e['tau']}: right {s['right_rate']:.3f} "
                    f"wrong {s['wrong_rate']:.3f} prec {s['precision']:.3f} "
                    f"(exact-repeat hits {n_exact})"
                )


def _statement_rows(
    n: int, idf: dict[str, float], default_idf: float
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Features, labels and (query, rank) rows of the replay of ``n`` rule-made
    short WordNet statement pairs (none for 0)."""
    if not n:
        return np.zeros((0, len(FEATURE_NAMES))), np.zeros(0, bool), []
    import _pair_data as P

    rows = P.short_statements(n, seed=SEED)
    ps = D.PairSet(
        "statements",
        [a for a, _, _ in rows],
        [b for _, b, _ in rows],
        np.array([bool(y) for _, _, y in rows]),
        [],
    )
    srep = Replay(ps, idf, default_idf)
    return srep.x, srep.y, srep.rows


def _option(name: str) -> str | None:
    if name not in sys.argv:
        return None
    i = sys.argv.index(name)
    if i + 1 >= len(sys.argv):
        raise SystemExit(f"{name} needs a value")
    return sys.argv[i + 1]


if __name__ == "__main__":
    embedder = _option("--embedder")
    out = _option("--out")
    if embedder is not None and out is None:
        raise SystemExit(
            "--embedder needs --out FILE: the shipped verifier.json is calibrated for "
            "all-MiniLM-L6-v2 and is not overwritten"
        )
    n_statements = _option("--with-statements")
    main(
        report="--report" in sys.argv,
        with_long="--with-long" in sys.argv,
        embedder=embedder,
        out=Path(out) if out else OUT,
        statements=int(n_statements) if n_statements else 0,
    )
