"""``stagecache explain`` (issue 17, finding 6): why a question hits or misses.

Through the installed console script, on a real sqlite cache, the real model and
the default (learned) verifier. The model loads once per command: three loads.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.cli_support import NO_MODEL, run_cli

PAIRS = [
    ("What is the capital of France?", "Paris."),
    ("What is the capital of Germany?", "Berlin."),
    ("How do I reset my password?", "Use the reset link on the sign-in page."),
]


def _config(path: Path, db: Path, extra: str = "") -> Path:
    path.write_text(f'[cache.backend]\nkind = "sqlite"\npath = "{db}"\n{extra}')
    return path


@pytest.fixture(scope="module")
def warmed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("explain")
    db = root / "cache.db"
    config = _config(root / "c.toml", db)
    pairs = root / "pairs.jsonl"
    pairs.write_text(
        "\n".join(json.dumps({"question": q, "answer": a}) for q, a in PAIRS) + "\n"
    )
    done = run_cli("import", str(pairs), "--user", "alice", "--config", str(config))
    assert done.returncode == 0, done.stderr
    return {"db": db, "config": config}


def _counters(db: Path) -> dict[str, tuple[int, float]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT entry_id, hits, last_used FROM entries")
        return {i: (h, u) for i, h, u in rows}


def test_explain_lists_each_candidate_with_its_rule(warmed: dict[str, Any]) -> None:
    before = _counters(warmed["db"])
    done = run_cli(
        "explain",
        "What's the capital of France?",
        "--user",
        "alice",
        "--config",
        str(warmed["config"]),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["decision"] == "hit"
    assert found["verifier"] == "LearnedVerifier"
    # the effective decision: the calibrated floor in force, its embedder, the rule
    assert found["threshold_set"] is False and found["threshold"] != 0.92
    assert found["calibration"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert found["verdict"]["accept"] and found["verdict"]["reason"]
    assert found["verdict"]["floor"] >= found["threshold"]
    by_question = {e["question"]: e for e in found["entries"]}
    assert set(by_question) == {q for q, _ in PAIRS}
    france = by_question["What is the capital of France?"]
    assert france["rule"] == "hit" and france["accepted"] is True
    assert found["entry_id"] == france["entry_id"]
    assert france["similarity"] >= found["threshold"]
    # Near enough to be offered, and refused by the verifier's structural rule.
    germany = by_question["What is the capital of Germany?"]
    assert germany["similarity"] >= found["floor"]
    assert germany["rule"] == "rejected_by_verifier"
    assert germany["accepted"] is False
    assert germany["detail"].startswith("structural:")
    password = by_question["How do I reset my password?"]
    assert password["rule"] == "below_threshold"
    assert password["similarity"] < found["floor"]
    sims = [e["similarity"] for e in found["entries"]]
    assert sims == sorted(sims, reverse=True)
    # Explaining changes nothing: no hit counted, no recency update.
    assert _counters(warmed["db"]) == before


def test_explain_names_the_key_part_that_differs(warmed: dict[str, Any]) -> None:
    done = run_cli(
        "explain",
        "What is the capital of France?",
        "--user",
        "alice",
        "--model",
        "another-model",
        "--config",
        str(warmed["config"]),
    )
    assert done.returncode == 1, done.stderr  # a miss
    head, *rows = done.stdout.splitlines()
    assert head.startswith("key_mismatch: best cosine 1.000")
    france = next(r for r in rows if "capital of France" in r)
    assert "key_mismatch" in france and "(model_id differ)" in france


def test_explain_holds_and_shows_a_threshold_the_user_set(
    warmed: dict[str, Any], tmp_path: Path
) -> None:
    config = _config(
        tmp_path / "strict.toml", warmed["db"], "[cache]\nthreshold = 0.99\n"
    )
    done = run_cli(
        "explain",
        "What is the capital city of France?",
        "--user",
        "alice",
        "--config",
        str(config),
    )
    assert done.returncode == 1, done.stderr  # a miss: the paraphrase is at 0.962
    head, *rows = done.stdout.splitlines()
    assert head.startswith("below_threshold: best cosine 0.9"), head
    assert "threshold 0.990 ([cache] threshold)" in head
    assert "rule: below threshold: cosine" in head  # the last candidate judged
    france = next(r for r in rows if "capital of France" in r)
    assert "below threshold" in france


def test_explain_refuses_a_memory_backend(tmp_path: Path) -> None:
    config = tmp_path / "mem.toml"
    config.write_text(NO_MODEL)  # refused before any model is loaded
    done = run_cli("explain", "hi", "--user", "u", "--config", str(config))
    assert done.returncode == 2
    assert "cache.backend.kind" in done.stderr and "sqlite" in done.stderr


@pytest.mark.anyio
async def test_a_verifier_miss_names_the_rejecting_rule(make_pipeline: Any) -> None:
    from stagecache import Caller

    alice = Caller(user_id="alice")
    pipeline, llm = make_pipeline()
    async with pipeline:
        await pipeline.run("What is the capital of France?", caller=alice)
        other = await pipeline.run("What is the capital of Germany?", caller=alice)
        plain = await pipeline.run("How do I bake bread?", caller=alice)
    assert other.cache.status == "miss"
    assert other.cache.reason == "rejected_by_verifier"
    assert other.cache.rule is not None and other.cache.rule.startswith("structural:")
    assert plain.cache.reason == "below_threshold" and plain.cache.rule is None
    assert llm.calls == 3


# Statements whose rewording the structural checks once read as a contradiction
# ("without any manual input" / "automatically", "in the absence of" / "if there
# is no", an adverb moved after its verb): through the installed command, each
# reworded statement now hits its cached one.
STATEMENTS = [
    (
        "`ImageLoader` automatically infers the class name from the folder name.",
        "`ImageLoader` can deduce the class name from the folder name without any"
        " manual input.",
    ),
    (
        "If there is no config file, all settings take their defaults. If there is"
        " a config file, it is read and applied.",
        "In the absence of a config file, all settings take their defaults."
        " However, if a config file is present, it is read and applied.",
    ),
    (
        "The `build_rows` function is used to read and return CSV lines"
        " sequentially, and to associate the labels in `label_file` with the image"
        " files.",
        "The `build_rows` function is employed to sequentially read and return CSV"
        " lines, and to match the labels in `label_file` with the image files.",
    ),
]


@pytest.fixture(scope="module")
def statements(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain-statements")
    config = _config(root / "c.toml", root / "cache.db")
    pairs = root / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"question": cached, "answer": f"answer {i}"}) + "\n"
            for i, (cached, _) in enumerate(STATEMENTS)
        )
    )
    done = run_cli("import", str(pairs), "--user", "alice", "--config", str(config))
    assert done.returncode == 0, done.stderr
    return config


@pytest.mark.parametrize(("cached", "asked"), STATEMENTS)
def test_a_reworded_statement_hits_through_the_command(
    statements: Path, cached: str, asked: str
) -> None:
    done = run_cli(
        "explain", asked, "--user", "alice", "--config", str(statements), "--json"
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["decision"] == "hit", found["verdict"]
    assert not found["verdict"]["reason"].startswith("structural")
    hit = next(e for e in found["entries"] if e["entry_id"] == found["entry_id"])
    assert hit["question"] == cached
