"""Answer-quality benchmark of the verifiers.

    python benchmarks/quality.py

For each data set (GPTCache mock pairs, QQP test split, contextual follow-ups, the
adversarial set) the cache is warmed with the first texts and queried with the
second ones, top-5 candidates by cosine (all-MiniLM-L6-v2), scored as described in
``../shared/data/README.md``: a hit on the row's own entry (or one with an identical
first text) of a positive row is right, any other hit is wrong. Each method is run
through the real ``verify(query, candidate)`` API, best candidate first, first
accepted wins. Writes ``benchmarks/results/quality.md`` and one
precision-vs-hit-rate PNG per data set.
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
from stagecache.quality._verifier import _parse

RESULTS = D.ROOT / "benchmarks" / "results"
PLAIN = (0.75, 0.8, 0.85, 0.9, 0.92, 0.95, 0.97)
RATES = (0.005, 0.01, 0.02, 0.05)


def methods() -> list[tuple[str, VerifierConfig]]:
    out = [
        (
            f"plain cosine >= {t}",
            VerifierConfig(kind="none", similarity_threshold=t, adaptive=False),
        )
        for t in PLAIN
    ]
    out += [
        (
            f"structural, cosine >= {t}",
            VerifierConfig(kind="structural", similarity_threshold=t, adaptive=False),
        )
        for t in (0.85, 0.92)
    ]
    for kind in ("learned", "combined"):
        out += [
            (
                f"{kind}, max_wrong_hit_rate={r}",
                VerifierConfig(kind=kind, max_wrong_hit_rate=r, adaptive=False),
            )
            for r in RATES
        ]
    return out


def run_method(r: D.Retrieval, cfg: VerifierConfig, timed: int = 0):  # type: ignore[no-untyped-def]
    v = make_verifier(cfg)
    n, k = r.cand.shape
    chosen = np.full(n, -1)
    lat: list[float] = []
    for i in range(n):
        q = r.ps.second[i]
        t0 = time.perf_counter()
        for j in range(k):
            s = float(r.sims[i, j])
            if s < v.candidate_threshold:
                break
            c = Candidate(
                entry_id=str(r.cand[i, j]), query=r.entries[r.cand[i, j]], similarity=s
            )
            if v.verify(q, c).accept:
                chosen[i] = j
                break
        if i < timed:
            lat.append(time.perf_counter() - t0)
    return D.score_decisions(r, chosen), lat, v


def curve(r: D.Retrieval, kind: str, floor: float) -> list[tuple[float, float, float]]:
    """(threshold, hit rate, precision) for the learned kinds over their score."""
    v = make_verifier(
        VerifierConfig(
            kind=kind,
            score_threshold=0.0,  # type: ignore[arg-type]
            candidate_threshold=floor,
            adaptive=False,
        )
    )
    n, k = r.cand.shape
    score = np.full((n, k), -1.0)
    for i in range(n):
        for j in range(k):
            s = float(r.sims[i, j])
            if s < floor:
                break
            c = Candidate(str(r.cand[i, j]), r.entries[r.cand[i, j]], s)
            verdict = v.verify(r.ps.second[i], c)
            score[i, j] = (
                verdict.score if not verdict.reason.startswith("structural") else -1
            )
    out = []
    for tau in np.linspace(0.0, 1.0, 101):
        acc = score >= tau
        ch = np.where(acc.any(1), acc.argmax(1), -1)
        s = D.score_decisions(r, ch)
        out.append((float(tau), s["hit_rate"], s["precision"]))
    return out


def plot(name: str, curves: dict[str, list[tuple[float, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, pts in curves.items():
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, label=label, marker="." if "plain" in label else None)
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
        ("plain 0.92", VerifierConfig(kind="none", adaptive=False)),
        ("structural 0.92", VerifierConfig(kind="structural", adaptive=False)),
        ("learned 1%", VerifierConfig(kind="learned", adaptive=False)),
        ("combined 1%", VerifierConfig(adaptive=False)),
    ]
    lines.append("| split | category | n | " + " | ".join(c for c, _ in cfgs) + " |")
    lines.append("|---|---|---|" + "---|" * len(cfgs))
    for split in ("train", "heldout"):
        ps = D.load_adversarial(split)
        ea, eb = D.embed(ps.first), D.embed(ps.second)
        cos = (ea * eb).sum(1)
        verifiers = [make_verifier(c) for _, c in cfgs]
        acc = np.array(
            [
                [v.verify(b, Candidate(str(i), a, float(s))).accept for v in verifiers]
                for i, (a, b, s) in enumerate(
                    zip(ps.first, ps.second, cos, strict=True)
                )
            ]
        )
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


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    sets = [
        D.load_mock(),
        D.load_qqp("test"),
        D.load_contextual(),
        D.load_adversarial("heldout"),
    ]
    lines = [
        "# Answer quality of the verifiers",
        "",
        "Generated by `python benchmarks/quality.py` (all-MiniLM-L6-v2, top-5 "
        "candidates, best first, first accepted wins). right/wrong = right/wrong "
        "hits as a share of all queries; precision = right hits / hits. "
        "Learned kinds pick their candidate floor and score threshold from "
        "`max_wrong_hit_rate` (calibrated on the QQP val split only). "
        "Latency: added verification time per lookup (p50 / p95, µs, "
        "this machine, 2 shared cores).",
        "",
    ]
    timed = 2000
    for ps in sets:
        r = D.retrieve(ps)
        lines += [
            f"## {ps.name} ({len(ps.second)} queries)",
            "",
            "| method | floor | accept | right | wrong | precision | p50 µs | p95 µs |",
            "|---|---|---|---|---|---|---|---|",
        ]
        plain_pts = []
        for label, cfg in methods():
            _parse.cache_clear()
            s, lat, v = run_method(r, cfg, timed)
            lat_us = sorted(x * 1e6 for x in lat)
            p50 = statistics.median(lat_us)
            p95 = lat_us[int(0.95 * (len(lat_us) - 1))]
            lines.append(
                f"| {label} | {v.candidate_threshold:.2f} | {v.threshold:.3f} | "
                f"{s['right_rate']:.1%} | {s['wrong_rate']:.1%} | {s['precision']:.3f} "
                f"| {p50:.0f} | {p95:.0f} |"
            )
            if label.startswith("plain"):
                plain_pts.append((s["hit_rate"], s["precision"]))
            print(ps.name, label, s, f"p50={p50:.0f}us", flush=True)
        lines.append("")
        if ps.name != "contextual":
            curves = {"plain cosine (0.75..0.97)": plain_pts}
            for kind in ("learned", "combined"):
                c = curve(r, kind, 0.7)
                curves[f"{kind} (floor 0.70, score sweep)"] = [
                    (h, p) for _, h, p in c if h > 0
                ]
            plot(ps.name, curves)
            lines += [f"![{ps.name}](quality_{ps.name}.png)", ""]
    adversarial_table(lines)
    (RESULTS / "quality.md").write_text("\n".join(lines) + "\n")
    print("wrote", RESULTS / "quality.md")


if __name__ == "__main__":
    main()
