"""Answer-quality benchmark of the verifiers.

    python benchmarks/quality.py

For each data set (GPTCache mock pairs, QQP test split, contextual follow-ups, the
adversarial set) the cache is warmed with the first texts and queried with the
second ones, top-5 candidates by cosine (all-MiniLM-L6-v2), scored as described in
``../shared/data/README.md``: a hit on the row's own entry (or one with an identical
first text) of a positive row is right, any other hit is wrong. Each method runs
the way the engine runs it: candidates down to the verifier's
``candidate_threshold`` (or the cache threshold when that is None) are offered to
``verify_ranked(query, candidates)``. Writes ``benchmarks/results/quality.md`` and
one precision-vs-hit-rate PNG per data set.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _quality_data as D

from stagecache._model import Candidate
from stagecache.quality import VerifierConfig, make_verifier
from stagecache.quality._invariants import content_sequence, normalise_text
from stagecache.quality._verifier import _norm, _parse

RESULTS = D.ROOT / "benchmarks" / "results"
PLAIN = (0.75, 0.8, 0.85, 0.9, 0.92, 0.95, 0.97)
RATES = (0.01, 0.02, 0.03, 0.05)
DEFAULT = VerifierConfig(adaptive=False)


def methods() -> list[tuple[str, VerifierConfig, float]]:
    """(label, config, cache threshold) of every method."""
    out = [
        (f"plain cosine >= {t}", VerifierConfig(kind="none", adaptive=False), t)
        for t in PLAIN
    ]
    out += [
        (
            f"structural, cosine >= {t}",
            VerifierConfig(kind="structural", adaptive=False),
            t,
        )
        for t in (0.85, 0.92)
    ]
    for kind in ("learned", "combined"):
        out += [
            (
                f"{kind}, max_wrong_hit_rate={r}"
                + (" **(default)**" if kind == "combined" and r == 0.02 else ""),
                VerifierConfig(kind=kind, max_wrong_hit_rate=r, adaptive=False),
                0.92,
            )
            for r in RATES
        ]
    return out


def run_method(  # type: ignore[no-untyped-def]
    r: D.Retrieval, cfg: VerifierConfig, cache_threshold: float, timed: int = 0
):
    v = make_verifier(cfg)
    floor = (
        v.candidate_threshold if v.candidate_threshold is not None else cache_threshold
    )
    n, k = r.cand.shape
    chosen = np.full(n, -1)
    lat: list[float] = []
    for i in range(n):
        q = r.ps.second[i]
        cands = [
            Candidate(str(r.cand[i, j]), r.entries[r.cand[i, j]], float(r.sims[i, j]))
            for j in range(k)
            if r.sims[i, j] >= floor
        ]
        t0 = time.perf_counter()
        idx, _ = v.verify_ranked(q, cands) if cands else (None, None)
        if i < timed:
            lat.append(time.perf_counter() - t0)
        if idx is not None:
            chosen[i] = idx
    return D.score_decisions(r, chosen), chosen, lat, v


def exact_wrong(r: D.Retrieval, chosen: np.ndarray) -> int:
    """Wrong hits (by the strict rule) on an entry whose text equals the query."""
    n = 0
    for i in np.where(chosen >= 0)[0]:
        j = chosen[i]
        if not r.right[i, j] and normalise_text(r.ps.second[i]) == normalise_text(
            r.entries[r.cand[i, j]]
        ):
            n += 1
    return n


def near_duplicate_wrong(r: D.Retrieval, chosen: np.ndarray) -> tuple[int, int]:
    """(wrong hits, those whose hit entry has cosine >= 0.95 to the true entry)."""
    e = D.embed(r.entries)
    index = {t: i for i, t in enumerate(r.entries)}
    wrong = near = 0
    for i in np.where(chosen >= 0)[0]:
        j = chosen[i]
        if r.right[i, j]:
            continue
        wrong += 1
        own = index[r.ps.first[i]]
        if float(e[r.cand[i, j]] @ e[own]) >= 0.95:
            near += 1
    return wrong, near


def plot(name: str, pts: dict[str, list[tuple[float, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, xy in pts.items():
        xs, ys = zip(*xy, strict=True)
        ax.plot(xs, ys, label=label, marker="o")
    ax.set_xlabel("hit rate (hits / queries)")
    ax.set_ylabel("precision (right hits / hits)")
    ax.set_title(f"{name}: precision vs hit rate (all-MiniLM-L6-v2, top-5)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"quality_{name}.png", dpi=110)
    plt.close(fig)


def adversarial_table(lines: list[str]) -> None:
    lines += [
        "",
        "## Adversarial set, per category (pair-level: one candidate)",
        "",
        "Negative categories: share wrongly accepted (lower is better); "
        "`paraphrase`: share accepted (higher is better). `train` was used in "
        "training, `heldout` (whole template families) was not.",
        "",
    ]
    cfgs = [
        ("plain 0.92", VerifierConfig(kind="none", adaptive=False), 0.92),
        ("structural 0.92", VerifierConfig(kind="structural", adaptive=False), 0.92),
        (
            "learned 3%",
            VerifierConfig(kind="learned", max_wrong_hit_rate=0.03, adaptive=False),
            0.92,
        ),
        ("combined 2% (default)", DEFAULT, 0.92),
    ]
    lines.append("| split | category | n | " + " | ".join(c for c, _, _ in cfgs) + " |")
    lines.append("|---|---|---|" + "---|" * len(cfgs))
    verifiers = [(make_verifier(c), t) for _, c, t in cfgs]
    for split in ("train", "heldout"):
        ps = D.load_adversarial(split)
        ea, eb = D.embed(ps.first), D.embed(ps.second)
        cos = (ea * eb).sum(1)
        acc = np.zeros((len(cos), len(verifiers)), bool)
        for i, (a, b, s) in enumerate(zip(ps.first, ps.second, cos, strict=True)):
            for k, (v, t) in enumerate(verifiers):
                floor = v.candidate_threshold or t
                verdict = v.verify(b, Candidate(str(i), a, float(s)))
                acc[i, k] = s >= floor and verdict.accept
        cats = np.array(ps.category)
        for cat in sorted(set(ps.category)):
            m = cats == cat
            vals = " | ".join(f"{acc[m, j].mean():.2f}" for j in range(len(cfgs)))
            lines.append(f"| {split} | {cat} | {int(m.sum())} | {vals} |")
        neg = ~ps.label
        lines.append(
            f"| {split} | **all negatives** | {int(neg.sum())} | "
            + " | ".join(f"{acc[neg, j].mean():.2f}" for j in range(len(cfgs)))
            + " |"
        )


def invariant_rows() -> list[str]:
    v = make_verifier(DEFAULT)
    pairs = [
        ("How do I reset my password?", "How do I reset my password?", 1.0),
        ("How can I reset my password?", "How do I reset my password?", 0.99),
        ("how to reset my password", "How do I reset my password?", 0.97),
        ("What's the capital of France?", "What is the capital of France?", 0.99),
        ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?", 0.97),
        ("What is 15% tip on $80?", "What is 20% tip on $80?", 0.99),
    ]
    out = ["| query | cached | cosine | default verdict |", "|---|---|---|---|"]
    for q, c, s in pairs:
        verdict = v.verify(q, Candidate("e", c, s))
        word = "accept" if verdict.accept else "reject"
        out.append(f"| {q} | {c} | {s:.2f} | {word} ({verdict.reason}) |")
    return out


def contextual_pipeline() -> dict[str, int]:
    """The contextual set through a real pipeline (default config, scripted LLM).

    One user asks every main query (each is stored), then every follow-up three
    ways: as its bare text (a client that drops the conversation: only the
    verifier stands between it and the main query's answer), and with its
    conversation (main query, main answer, follow-up) with ``cache_multi_turn``
    off (the default) and on. Counts the follow-ups served a cached answer.
    """
    import anyio

    from stagecache import Caller
    from stagecache.cache import CacheSettings
    from stagecache.config import build
    from stagecache.testing import ScriptedLLM

    rows = D.load_contextual_rows()
    caller = Caller(user_id="bench")

    async def one(multi_turn: bool) -> tuple[int, int]:
        llm = ScriptedLLM(lambda prompt: f"answer to: {prompt}")
        pipeline = build(llm=llm, cache=CacheSettings(cache_multi_turn=multi_turn))
        bare = with_history = 0
        async with pipeline:
            for main, _, _ in rows:
                await pipeline.run(main, caller=caller)
            for main, reply, follow in rows:
                chat = [
                    {"role": "user", "content": main},
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": follow},
                ]
                with_history += (await pipeline.run(chat, caller=caller)).cache.hit
            for _, _, follow in rows:
                bare += (await pipeline.run(follow, caller=caller)).cache.hit
        return bare, with_history

    async def both() -> dict[str, int]:
        bare, off = await one(False)
        _, on = await one(True)
        return {"n": len(rows), "bare": bare, "history_off": off, "history_on": on}

    return anyio.run(both)


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    ctx_pipeline = contextual_pipeline()
    print("contextual through the pipeline", ctx_pipeline, flush=True)
    sets = [
        D.load_mock(),
        D.load_qqp("test"),
        D.load_contextual(),
        D.load_adversarial("heldout"),
        D.load_long(),
    ]
    body: list[str] = []
    summary: dict[str, dict[str, float]] = {}
    timed = 2000
    for ps in sets:
        r = D.retrieve(ps)
        body += [
            f"## {ps.name} ({len(ps.second)} queries)",
            "",
            "| method | floor | high | tau | right | wrong | precision "
            "| wrong on exact repeats | p50 µs | p95 µs |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        pts: dict[str, list[tuple[float, float]]] = {}
        for label, cfg, cache_t in methods():
            _parse.cache_clear()
            _norm.cache_clear()
            content_sequence.cache_clear()
            s, chosen, lat, v = run_method(r, cfg, cache_t, timed)
            lat_us = sorted(x * 1e6 for x in lat)
            p50 = statistics.median(lat_us)
            p95 = lat_us[int(0.95 * (len(lat_us) - 1))]
            ew = exact_wrong(r, chosen)
            floor = getattr(v, "floor", None) or cache_t
            high = getattr(v, "high", None)
            high_s = "off" if high is None or high > 1 else f"{high:.2f}"
            tau_s = f"{v.threshold:.2f}" if cfg.kind in ("learned", "combined") else "-"
            body.append(
                f"| {label} | {floor:.2f} | {high_s} | {tau_s} | "
                f"{s['right_rate']:.1%} | {s['wrong_rate']:.1%} | {s['precision']:.3f} "
                f"| {ew} | {p50:.0f} | {p95:.0f} |"
            )
            group = label.split(",")[0].split(" cosine")[0]
            pts.setdefault(group, []).append((s["hit_rate"], s["precision"]))
            if "(default)" in label or label in (
                "plain cosine >= 0.92",
                "structural, cosine >= 0.92",
            ):
                key = "default" if "(default)" in label else label
                row = dict(s)
                row["exact_wrong"] = ew
                row["p50"] = p50
                if ps.name == "mock":
                    _, near = near_duplicate_wrong(r, chosen)
                    row["near_dup"] = near
                summary.setdefault(ps.name, {})[key] = row  # type: ignore[assignment]
            print(ps.name, label, s, f"p50={p50:.0f}us", flush=True)
        body.append("")
        if ps.name != "contextual":
            plot(ps.name, pts)
            body += [f"![{ps.name}](quality_{ps.name}.png)", ""]
    adversarial_table(body)
    head = header(summary, ctx_pipeline)
    (RESULTS / "quality.md").write_text("\n".join(head + body) + "\n")
    print("wrote", RESULTS / "quality.md")


def header(
    summary: dict[str, dict[str, dict[str, float]]], ctx_pipe: dict[str, int]
) -> list[str]:
    d = {k: v["default"] for k, v in summary.items()}
    mock, qqp, ctx = d["mock"], d["qqp_test"], d["contextual"]
    n_qqp = qqp["queries"]
    adj_right = (qqp["right"] + qqp["exact_wrong"]) / n_qqp
    adj_prec = (qqp["right"] + qqp["exact_wrong"]) / max(qqp["hits"], 1)
    p50 = max(x["p50"] for x in d.values())
    v = make_verifier(DEFAULT)
    plain = {k: v["plain cosine >= 0.92"] for k, v in summary.items()}

    def ok(cond: bool) -> str:
        return "**met**" if cond else "**not met**"

    mock_ok = mock["wrong_rate"] <= 0.01 and mock["right_rate"] >= 0.75
    ctx_wrong = ctx_pipe["history_off"] + ctx_pipe["history_on"]

    lines = [
        "# Answer quality of the verifiers",
        "",
        "Generated by `python benchmarks/quality.py` (all-MiniLM-L6-v2, top-5 "
        "candidates, scored by the rules of `shared/data/README.md`). "
        "Default = `VerifierConfig()` = `combined`, `max_wrong_hit_rate=0.02`; "
        f"its calibrated operating point: floor {getattr(v, 'floor', 0):.2f}, "
        f"learned-score threshold {v.threshold:.2f}, long texts (>= 15 tokens) "
        f"from cosine {getattr(v, 'long_floor', 0):.2f} when at least "
        f"{getattr(v, 'long_margin', 0):.2f} above the closest rival entry.",
        "",
        "## Targets (issue 9) and the default",
        "",
        "| target | default | met? |",
        "|---|---|---|",
        f"| mock: wrong <= 1% with right >= 75% | right {mock['right_rate']:.1%}, "
        f"wrong {mock['wrong_rate']:.1%} | wrong: {ok(mock['wrong_rate'] <= 0.01)}, "
        f"right: {ok(mock_ok)} |",
        f"| QQP test: precision >= 0.80 with right >= 15% (strict scoring) | "
        f"precision {qqp['precision']:.3f}, right {qqp['right_rate']:.1%} | "
        f"{ok(qqp['precision'] >= 0.8 and qqp['right_rate'] >= 0.15)} |",
        f"| QQP test, exact repeats of another row's question counted right "
        f"({qqp['exact_wrong']} hits) | precision {adj_prec:.3f}, right "
        f"{adj_right:.1%} | {ok(adj_prec >= 0.8 and adj_right >= 0.15)} |",
        f"| contextual follow-ups: no wrong hits, through the pipeline (each "
        f"follow-up sent with its conversation; `cache_multi_turn` off and on) | "
        f"{ctx_wrong} wrong of {2 * ctx_pipe['n']} | {ok(ctx_wrong == 0)} |",
        f"| contextual follow-ups sent as bare text (no conversation: the verifier "
        f"alone decides) | {ctx['wrong']} wrong ({ctx['wrong_rate']:.1%}; pipeline "
        f"replay: {ctx_pipe['bare']}) | {ok(ctx['wrong'] == 0)} |",
        f"| verification adds <= 2 ms p50 per lookup | worst set p50 {p50:.0f} µs | "
        f"{ok(p50 <= 2000)} |",
        "",
        "Reference points (same replay):",
        "",
        "| set | plain 0.92 right / wrong / precision | structural 0.92 | default |",
        "|---|---|---|---|",
    ]
    for name, rows in summary.items():
        cells = []
        for key in ("plain cosine >= 0.92", "structural, cosine >= 0.92", "default"):
            x = rows[key]
            cells.append(
                f"{x['right_rate']:.1%} / {x['wrong_rate']:.1%} / {x['precision']:.3f}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    m = summary["mock"]
    fewer = ", ".join(
        f"{k} {d[k]['wrong_rate']:.1%} vs {plain[k]['wrong_rate']:.1%}" for k in d
    )
    lines += [
        "",
        "Mock set: wrong hits whose hit entry has cosine >= 0.95 to the true origin "
        "(near-duplicate origins: the cached answer is very likely right for the "
        f"query): plain 0.92 {m['plain cosine >= 0.92']['near_dup']}/"
        f"{m['plain cosine >= 0.92']['wrong']}, structural 0.92 "
        f"{m['structural, cosine >= 0.92']['near_dup']}/"
        f"{m['structural, cosine >= 0.92']['wrong']}, default "
        f"{m['default']['near_dup']}/{m['default']['wrong']}.",
        "",
        "**Why this default.** A wrong cached answer is worse than none, so the "
        "default is the setting that cuts wrong hits (or keeps them equal) on "
        "every set while keeping most right hits. Wrong hits, default vs plain "
        "cosine 0.92: "
        f"{fewer}; right hits: mock {mock['right_rate']:.1%} vs "
        f"{plain['mock']['right_rate']:.1%}, QQP {qqp['right_rate']:.1%} vs "
        f"{plain['qqp_test']['right_rate']:.1%}. Users who value hit rate over "
        "safety raise `max_wrong_hit_rate` (tables below) or use the `structural` "
        "kind (plain cosine plus the structural veto).",
        "",
        "**What moved the mock set** (right 48.8% / wrong 1.4% before): two "
        "changes, both general. (a) The structural checks vetoed 83 right mock "
        "hits at cosine >= 0.85, now 22: an entity the other text also names "
        "was read as a swap when the tokenizer split it differently "
        '(`Dataset.push_to_hub()`), a statement opening with "No" was not '
        'read as negated, and long statements reworded as a whole ("without '
        'copying" / "zero-copy", "not mandatory" / "optional") flipped '
        "the negation count; negation and direction now count in long texts "
        "only between near-identical wordings (>= half the words shared). The "
        "QQP val vetoes of wrong hits barely moved (entity 91 -> 86). A new "
        "check catches two key terms that traded places in otherwise identical "
        'texts ("in the stroma ... in the thylakoid" / the reverse). (b) A '
        "long query is accepted only when its best entry stands clear of the "
        "closest *different* entry (the ratio test of feature matching): most "
        "mock wrong hits are queries about as close to two near-duplicate "
        "origins. The long-text floor and margin are calibrated with the rest "
        "on the QQP val replay. The mock target needs long texts accepted from "
        "cosine ~0.85 (plain 0.85 has 87% right) and short ones on a looser "
        "learned threshold than QQP allows; no data we may calibrate on "
        "supports either, so the default does not do it.",
        "",
        "**Our long-statement set** (`benchmarks/data/long_statements.jsonl`, "
        "written for this: 328 answer-like statements in 13 domains, 186 "
        "paraphrases and 142 near-misses that contradict the cached statement) "
        "shows the weak side of the long-text band: it decides on the cosine "
        "and the margin, and a contradiction reworded at cosine 0.90-0.97 "
        "passes (table below). The measured alternative, `python "
        "benchmarks/train_verifier.py --with-long --report` (the model also "
        "trained on this set, folds grouped by topic, and the long band "
        "calibrated on it with a learned-score threshold), cuts its wrong hits "
        "to 1.2% (out-of-fold) at the default budget but drops the mock set to "
        "29.3% right (0.2% wrong), QQP unchanged (12.0% / 4.9%): the model "
        "learns to distrust long rewordings. We ship the val-calibrated band "
        "because it is far better on the public mock set and equal on QQP and "
        "the adversarial set. Lowering `max_wrong_hit_rate` to 0.01 does not "
        "change the long band; for a cache of long statements that may "
        "contradict each other, the `structural` kind at cosine 0.92 has the "
        "fewest wrong hits on this set (table below).",
        "",
        "**Why the QQP target is not met.** (1) QQP repeats questions across "
        f"rows: {qqp['exact_wrong']} hits of the default are exact repeats of "
        "another row's question, which the strict rule counts wrong; they are "
        f"{qqp['exact_wrong'] / n_qqp:.1%} of queries, so strict precision 0.80 at "
        "15% right leaves about 1% for every other wrong hit, a precision of "
        "~94% on the rest. (2) The signal is not there in MiniLM: a verifier fed "
        "the two embeddings themselves (element-wise product and absolute "
        "difference, 768 features, gradient boosting, same val replay) scored "
        "an out-of-fold AUC of 0.8965 against 0.8976 for the shipped features, "
        "and the same QQP test operating points "
        "(`benchmarks/results/verifier_embedding_features.txt`). A cross-encoder "
        "would help; none ships its weights on PyPI.",
        "",
        "Hard invariants of the default verifier:",
        "",
        *invariant_rows(),
        "",
    ]
    return lines


if __name__ == "__main__":
    main()
