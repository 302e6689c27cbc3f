"""``stagecache stats`` sees the hits and misses of every process sharing a store.

Two serving processes (real model, scripted LLM) run lookups one after the other
against one SQLite file, or one Redis namespace; then the console script, in a
third process, reports their hits, misses, hit rate, tokens and cost saved.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_support import ROOT, default_chain, run_cli

Q1 = "What is the warranty period of the blender?"
Q2 = "How do I reset my password?"
Q3 = "Can I pay with a gift card?"
PRICE_IN, PRICE_OUT = 0.5, 2.0

#: One serving process: runs its questions for alice (``MODEL|question`` asks
#: another model than the pipeline's), prints whether each hit.
SERVE = """\
import asyncio, json, sys
import stagecache

async def main() -> None:
    pipeline = stagecache.load(sys.argv[1])
    async with pipeline:
        hits = []
        for arg in sys.argv[2:]:
            model, _, question = arg.rpartition("|")
            result = await pipeline.run(
                question, caller=stagecache.Caller(user_id="alice"),
                model=model or None,
            )
            hits.append(result.cache.hit)
    print(json.dumps(hits))

asyncio.run(main())
"""


STAGES = default_chain(memory_search=60, cache_check=60)


def _config(path: Path, backend: str) -> Path:
    path.write_text(
        '[pipeline]\nmodel = "gpt-priced"\n'
        f'prices = {{ "gpt-priced" = {{ input_per_1k = {PRICE_IN}, '
        f"output_per_1k = {PRICE_OUT} }} }}\n"
        '[llm]\nkind = "scripted"\ndelay_s = 0\n'
        "[cache]\ntimeout_s = 30\n"
        f"[cache.backend]\n{backend}{STAGES}"
    )
    return path


def _serve(config: Path, *questions: str) -> list[bool]:
    done = subprocess.run(
        [sys.executable, "-c", SERVE, str(config), *questions],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"),
    )
    assert done.returncode == 0, done.stderr
    hits: list[bool] = json.loads(done.stdout.splitlines()[-1])
    return hits


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.3).close()
        return True
    except OSError:
        return False


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def shared_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A pipeline file on one SQLite file or one fresh Redis namespace."""
    if request.param == "sqlite":
        db = tmp_path / "cache.db"
        yield _config(tmp_path / "p.toml", f'kind = "sqlite"\npath = "{db}"\n')
        return
    if not _redis_up():
        pytest.skip("no Redis on 127.0.0.1:6379")
    import redis

    namespace = f"sctest-stats-{uuid.uuid4().hex[:12]}"
    backend = f'kind = "redis"\nredis_namespace = "{namespace}"\n'
    try:
        yield _config(tmp_path / "p.toml", backend)
    finally:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.mark.slow  # two console-script processes, each loading the model
def test_stats_counts_the_lookups_of_every_process(shared_config: Path) -> None:
    # Two processes, one after the other: 3 hits and 4 misses between them, one
    # hit on a model without a price.
    assert _serve(shared_config, Q1, Q1, Q2) == [False, True, False]
    free = f"gpt-free|{Q1}"
    assert _serve(shared_config, Q1, Q3, free, free) == [True, False, False, True]
    listed = run_cli("entries", "list", "--config", str(shared_config), "--json")
    assert listed.returncode == 0, listed.stderr
    usage = {
        row["parts"]["model_id"].split("|")[0]: (
            int(row["metadata"]["prompt_tokens"]),
            int(row["metadata"]["completion_tokens"]),
        )
        for row in map(json.loads, listed.stdout.splitlines())
        if row["query"] == Q1
    }
    prompt, completion = usage["gpt-priced"]
    cost = 2 * (prompt * PRICE_IN + completion * PRICE_OUT) / 1000

    done = run_cli("stats", "--config", str(shared_config), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    priced = data["by_model"]["gpt-priced"]
    assert (priced["hits"], priced["misses"], priced["hit_rate"]) == (2, 3, 0.4)
    assert priced["tokens_saved"] == 2 * (prompt + completion)
    assert priced["cost_saved_usd"] == pytest.approx(cost)
    assert priced["unpriced_hits"] == 0
    unknown = data["by_model"]["gpt-free"]
    assert (unknown["hits"], unknown["misses"]) == (1, 1)
    assert unknown["cost_saved_usd"] is None and unknown["unpriced_hits"] == 1
    for row in (data, data["by_scope_mode"]["per_user"]):
        assert (row["hits"], row["misses"], row["hit_rate"]) == (3, 4, 0.4286)
        assert row["tokens_saved"] == 2 * (prompt + completion) + sum(usage["gpt-free"])
        assert row["cost_saved_usd"] == pytest.approx(cost)  # the priced part
        assert row["unpriced_hits"] == 1
    per_user = data["by_scope_mode"]["per_user"]
    assert (per_user["entries"], per_user["entry_hits"]) == (4, 3)

    text = run_cli("stats", "--config", str(shared_config))
    assert text.returncode == 0, text.stderr
    assert "3 hits, 4 misses, hit rate 42.9%" in text.stdout
    assert f"cost saved ${cost:.4f} (+ unknown for 1 hits)" in text.stdout
    assert "cost unknown for the hits of: gpt-free" in text.stdout
