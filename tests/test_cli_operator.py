"""The operator's commands of issue 17, run through the installed console script."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli_support import NO_MODEL, run_cli

# -- check-config: the validation load() runs, every error, full paths ----------------

BAD_FILE = """\
[cache]
threshold = 7
thresold = 0.9

[verifier]
kind = "learnt"
max_wrong_hit_rate = 2

[[stages]]
kind = "input_guard"
disable = ["override.ignor_previous"]

[[stages]]
kind = "output_guard"
disable = ["pii.emial"]

[[stages]]
kind = "input_guard"
[[stages.extra_rules]]
id = "site.empty"
patterns = ["a*"]
"""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[verifier]\nkind = "learnt"\n', "verifier.kind"),
        ("[verifier]\nmax_wrong_hit_rate = 2\n", "verifier.max_wrong_hit_rate"),
        (
            '[[stages]]\nkind = "input_guard"\ndisable = ["override.ignor_previous"]\n',
            "stages[0].disable[0]",
        ),
        (
            '[[stages]]\nkind = "input_guard"\n[[stages.extra_rules]]\nid = "a.b"\n'
            'patterns = ["a*"]\n',
            "stages[0].extra_rules[0].patterns[0]",
        ),
    ],
)
def test_check_config_rejects_what_load_rejects(
    tmp_path: Path, body: str, field: str
) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(body)
    done = run_cli("check-config", str(config))
    assert done.returncode == 2, done.stdout
    assert f"pipeline.toml: {field}: " in done.stderr
    assert "Traceback" not in done.stderr


def test_check_config_reports_every_error_one_line_each(tmp_path: Path) -> None:
    # Bad tables first, then what only building the rest finds (rule ids, patterns).
    config = tmp_path / "pipeline.toml"
    config.write_text(BAD_FILE)
    done = run_cli("check-config", str(config))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    fields = [line.split(": ")[3] for line in lines]
    assert fields == [
        "cache.threshold",
        "cache.thresold",
        "verifier.kind",
        "verifier.max_wrong_hit_rate",
        "stages[0].disable[0]",
        "stages[1].disable[0]",
        "stages[2].extra_rules[0].patterns[0]",
    ], done.stderr
    assert all(line.startswith("stagecache: error: ") for line in lines)


def test_check_config_reports_every_construction_error(tmp_path: Path) -> None:
    # Rule ids are checked when the stages are built: still every one, full paths.
    config = tmp_path / "pipeline.toml"
    config.write_text(
        '[[stages]]\nkind = "input_guard"\ndisable = ["override.ignor_previous"]\n'
        '[[stages]]\nkind = "output_guard"\ndisable = ["pii.emial"]\n'
    )
    done = run_cli("check-config", str(config))
    assert done.returncode == 2
    fields = [line.split(": ")[3] for line in done.stderr.splitlines()]
    assert fields == ["stages[0].disable[0]", "stages[1].disable[0]"], done.stderr


def test_load_raises_every_error_with_its_full_path(tmp_path: Path) -> None:
    import stagecache
    from stagecache.config import ConfigErrors

    config = tmp_path / "pipeline.toml"
    config.write_text(
        '[[stages]]\nkind = "input_guard"\ndisable = ["override.ignor_previous"]\n'
        '[[stages]]\nkind = "output_guard"\ndisable = ["pii.emial"]\n'
    )
    with pytest.raises(ConfigErrors) as caught:
        stagecache.load(config)
    assert [e.field for e in caught.value.errors] == [
        "stages[0].disable[0]",
        "stages[1].disable[0]",
    ]


# -- one warmed sqlite cache for the module (the only model load of the CLI tests) ----

QUESTIONS = [
    "How do I reset my password?",
    "What are your opening hours on weekends?",
    "Who do I contact for billing questions?",
    "How do I delete my account?",
    "Can I change my email address?",
    "Where can I download my invoices?",
    "How do I enable two-factor authentication?",
    "What payment methods do you accept?",
    "How long does shipping take?",
    "Can I return an item after thirty days?",
    "Do you ship to Canada?",
    "How do I cancel my subscription?",
]


def _config(path: Path, db: Path, *, embedder: str = "", extra: str = "") -> Path:
    path.write_text(
        "[cache]\nmax_entries_per_user = 8\n"
        f'[cache.backend]\nkind = "sqlite"\npath = "{db}"\n{extra}{embedder}'
    )
    return path


@pytest.fixture(scope="module")
def warmed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """12 pairs (and a bad line) imported for alice into a cache capped at 8."""
    root = tmp_path_factory.mktemp("operator")
    db = root / "cache.db"
    with_model = _config(root / "model.toml", db)
    no_model = _config(root / "nomodel.toml", db, embedder=NO_MODEL)
    pairs = root / "pairs.jsonl"
    lines = [
        json.dumps({"question": q, "answer": f"Answer {i}."})
        for i, q in enumerate(QUESTIONS)
    ]
    pairs.write_text("\n".join([*lines, "{not json"]) + "\n")
    done = run_cli("import", str(pairs), "--user", "alice", "--config", str(with_model))
    return {"root": root, "db": db, "no_model": no_model, "import": done}


def test_import_reports_what_the_cap_evicted(warmed: dict[str, object]) -> None:
    done = warmed["import"]
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    # 12 pairs into a user capped at 8: the cache holds 8, and says so.
    assert first == "stored 8, skipped 0, rejected 1", done.stdout
    assert "stored 12" not in done.stdout
    assert "evicted 4 imported and 0 older entries" in done.stdout
    assert "max_entries_per_user = 8" in done.stdout
    assert "line 13: not JSON" in done.stdout


def test_import_of_a_missing_file_is_one_error_line(tmp_path: Path) -> None:
    config = _config(tmp_path / "c.toml", tmp_path / "c.db", embedder=NO_MODEL)
    done = run_cli(
        "import", str(tmp_path / "nope.jsonl"), "--user", "u", "--config", str(config)
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"stagecache: error: {tmp_path / 'nope.jsonl'}: no such file"
    )


def _ids(config: Path) -> list[str]:
    done = run_cli("entries", "list", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["entry_id"] for line in done.stdout.splitlines()]


def test_feedback_never_loads_the_model(warmed: dict[str, object]) -> None:
    config = warmed["no_model"]
    assert isinstance(config, Path)
    done = run_cli("feedback", "0123456789abcdef", "--wrong", "--config", str(config))
    assert (done.returncode, done.stdout) == (1, "0123456789abcdef: no such entry\n")
    assert "Traceback" not in done.stderr and "model" not in done.stderr
    entry_id = _ids(config)[0]
    done = run_cli("feedback", entry_id, "--correct", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"entry_id": entry_id, "recorded": True}
    shown = run_cli("entries", "show", entry_id, "--config", str(config), "--json")
    assert json.loads(shown.stdout)["positive"] == 1


def test_entries_list_show_and_delete(warmed: dict[str, object]) -> None:
    config = warmed["no_model"]
    assert isinstance(config, Path)
    listed = run_cli("entries", "list", "--config", str(config), "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 8
    assert {r["user_id"] for r in rows} == {"alice"}
    assert {r["query"] for r in rows} == set(QUESTIONS[4:])  # the 8 most recent
    row = rows[0]
    assert set(row) >= {
        "entry_id",
        "query",
        "answer",
        "parts",
        "metadata",
        "created_at",
        "expires_at",
        "last_used",
        "tenant",
        "user_id",
    }
    assert "vector" not in row
    shown = run_cli("entries", "show", row["entry_id"], "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert f"question: {row['query']}" in shown.stdout
    assert f"answer: {row['answer']}" in shown.stdout
    gone = run_cli(
        "entries", "delete", row["entry_id"], "--config", str(config), "--json"
    )
    assert json.loads(gone.stdout) == {"deleted": 1, "not_found": 0}
    assert row["entry_id"] not in _ids(config)
    missing = run_cli("entries", "show", row["entry_id"], "--config", str(config))
    assert missing.returncode == 1
    assert "no such entry" in missing.stderr


def test_stats_counts_entries_and_hits_per_scope_mode(
    warmed: dict[str, object],
) -> None:
    config = warmed["no_model"]
    assert isinstance(config, Path)
    done = run_cli("stats", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    entries = len(_ids(config))
    assert data["entries"] == entries and data["users"] == 1
    assert data["by_scope_mode"]["per_user"]["entries"] == entries
    assert data["by_scope_mode"]["per_user"]["hits"] == 0


def test_operator_commands_refuse_the_memory_backend(tmp_path: Path) -> None:
    config = tmp_path / "mem.toml"
    config.write_text(NO_MODEL)
    done = run_cli("entries", "list", "--config", str(config))
    assert done.returncode == 2
    assert "cache.backend.kind: the memory backend keeps nothing" in done.stderr


def test_export_then_import_round_trips_memory_sqlite_redis(
    warmed: dict[str, object], tmp_path: Path
) -> None:
    import uuid

    import anyio
    import redis

    import stagecache
    from stagecache.pipeline._entries import decode_entry, encode_entry
    from stagecache.testing import ScriptedLLM

    config = warmed["no_model"]
    assert isinstance(config, Path)
    source = run_cli("entries", "export", "--config", str(config))
    assert source.returncode == 0, source.stderr
    original = [decode_entry(line) for line in source.stdout.splitlines()]
    assert original and all(e.vector for e in original)

    # memory: the API, in this process (no model is loaded)
    memory_cfg = tmp_path / "memory.toml"
    memory_cfg.write_text(NO_MODEL)

    async def through_memory() -> bytes:
        pipeline = stagecache.load(memory_cfg, llm=ScriptedLLM(str, delay_s=0))
        await pipeline.cache.open_store()
        try:
            summary = await pipeline.cache.import_entries(original)
            assert (summary.stored, summary.evicted) == (len(original), 0)
            got = await pipeline.cache.entries()
        finally:
            await pipeline.cache.engine.aclose()
        return b"".join(encode_entry(e) + b"\n" for e in got)

    from_memory = tmp_path / "memory.jsonl"
    from_memory.write_bytes(anyio.run(through_memory))

    sqlite_cfg = _config(tmp_path / "s.toml", tmp_path / "s.db", embedder=NO_MODEL)
    ns = f"sctest-{uuid.uuid4().hex[:12]}"
    redis_cfg = tmp_path / "r.toml"
    redis_cfg.write_text(
        f'[cache.backend]\nkind = "redis"\nredis_namespace = "{ns}"\n{NO_MODEL}'
    )
    try:
        done = run_cli(
            "entries", "import", str(from_memory), "--config", str(sqlite_cfg), "--json"
        )
        assert json.loads(done.stdout)["stored"] == len(original), done.stderr
        from_sqlite = tmp_path / "sqlite.jsonl"
        done = run_cli(
            "entries", "export", "--config", str(sqlite_cfg), "-o", str(from_sqlite)
        )
        assert done.returncode == 0, done.stderr
        done = run_cli(
            "entries", "import", str(from_sqlite), "--config", str(redis_cfg)
        )
        assert done.returncode == 0, done.stderr
        from_redis = run_cli("entries", "export", "--config", str(redis_cfg))
        assert from_redis.returncode == 0, from_redis.stderr
    finally:
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(client.scan_iter(match=f"{ns}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

    def by_id(lines: list[str]) -> dict[str, object]:
        return {e.entry_id: e for e in (decode_entry(x) for x in lines if x)}

    want = by_id(source.stdout.splitlines())
    assert by_id(from_memory.read_text().splitlines()) == want
    assert by_id(from_sqlite.read_text().splitlines()) == want
    assert by_id(from_redis.stdout.splitlines()) == want


def test_entries_import_names_the_bad_line(tmp_path: Path) -> None:
    config = _config(tmp_path / "c.toml", tmp_path / "c.db", embedder=NO_MODEL)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('\n{"entry_id": "x"}\n')
    done = run_cli("entries", "import", str(bad), "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.startswith(f"stagecache: error: {bad}: line 2: not an exported")
    assert "Traceback" not in done.stderr


# -- --version, --json, help texts ----------------------------------------------------


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"stagecache {version('stagecache')}"


def test_every_option_has_help_and_the_description_is_plain_text() -> None:
    import argparse

    from stagecache.cli import _parser

    top = _parser()
    assert "``" not in (top.description or "") and "::" not in (top.description or "")
    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for sub, child in action.choices.items():
                    if not helps.get(sub):
                        missing.append(f"{name} {sub}")
                    walk(child, f"{name} {sub}")
            elif not action.help:
                missing.append(
                    f"{name} {'/'.join(action.option_strings) or action.dest}"
                )

    walk(top, "stagecache")
    assert missing == []


def test_every_command_that_prints_results_takes_json() -> None:
    import argparse

    from stagecache.cli import _parser

    def commands(parser: argparse.ArgumentParser, name: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    inner = commands(child, f"{name} {sub}")
                    found.update(inner or {f"{name} {sub}": child})
        return found

    every = commands(_parser(), "stagecache")
    # serve runs a server; export writes JSON lines already.
    exempt = {"stagecache serve", "stagecache entries export"}
    lacking = [
        name
        for name, parser in every.items()
        if name not in exempt
        and not any("--json" in a.option_strings for a in parser._actions)
    ]
    assert len(every) == 15 and lacking == []  # 15: tune


def test_check_config_accepts_a_file_that_leaves_the_client_to_the_code(
    tmp_path: Path,
) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text("[cache]\nthreshold = 0.9\n")  # no [llm]: load(path, llm=...)
    done = run_cli("check-config", str(config))
    assert done.returncode == 0, done.stderr


def test_check_config_json(tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('[cache]\nscope = "per_usr"\n')
    done = run_cli("check-config", str(config), "--json")
    assert done.returncode == 2
    data = json.loads(done.stdout)
    assert data["ok"] is False
    assert [e["field"] for e in data["errors"]] == ["cache.scope"]
    good = run_cli("check-config", "examples/pipeline.toml", "--json")
    assert json.loads(good.stdout)["ok"] is True


# -- the API: honest ImportSummary, stats with hits and misses --------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_api_import_summary_and_stats_per_scope_mode(
    make_pipeline: Callable[..., tuple[Any, Any]], anyio_backend: str
) -> None:
    from stagecache import Caller
    from stagecache.cache import CacheSettings

    pipeline, _ = make_pipeline(cache=CacheSettings(max_entries_per_user=5))
    alice = Caller(user_id="alice")
    pairs = [(q, f"Answer {i}.") for i, q in enumerate(QUESTIONS)]
    async with pipeline:
        summary = await pipeline.cache.import_pairs(pairs, caller=alice)
        assert (summary.stored, summary.evicted, summary.displaced) == (5, 7, 0)
        again = await pipeline.cache.import_pairs(
            [("Is there a student discount?", "Yes, 20%.")], caller=alice
        )
        assert (again.stored, again.evicted, again.displaced) == (1, 0, 1)
        assert len(await pipeline.cache.entries(user_id="alice")) == 5
        before = pipeline.cache.stats()
        assert before["hits"] == 0 and before["hit_rate"] is None
        fresh = "What is the warranty period of the blender?"
        first = await pipeline.run(fresh, caller=alice)  # a miss, then stored
        second = await pipeline.run(fresh, caller=alice)  # a hit
        assert (first.cache.hit, second.cache.hit) == (False, True)
        stats = pipeline.cache.stats()
    per_user = stats["by_scope_mode"]["per_user"]
    assert (per_user["hits"], per_user["misses"], per_user["hit_rate"]) == (1, 1, 0.5)
    assert (stats["hits"], stats["misses"]) == (1, 1)
    # The hit saved the usage the scripted model reported for the stored answer.
    assert per_user["tokens_saved"] > 0
    assert stats["entries"] == 5  # the cap held: the stored answer evicted one


def test_purge_never_loads_the_model(warmed: dict[str, object], tmp_path: Path) -> None:
    config = warmed["no_model"]
    assert isinstance(config, Path)
    dump = tmp_path / "dump.jsonl"
    done = run_cli("entries", "export", "--config", str(config), "-o", str(dump))
    assert done.returncode == 0, done.stderr
    copy = _config(tmp_path / "copy.toml", tmp_path / "copy.db", embedder=NO_MODEL)
    done = run_cli("entries", "import", str(dump), "--config", str(copy), "--json")
    count = json.loads(done.stdout)["stored"]
    assert count > 0
    done = run_cli("purge", "alice", "--config", str(copy), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"removed": count}
    assert _ids(copy) == []


def test_reencrypt_json(warmed: dict[str, object], tmp_path: Path) -> None:
    config = warmed["no_model"]
    assert isinstance(config, Path)
    dump = tmp_path / "dump.jsonl"
    run_cli("entries", "export", "--config", str(config), "-o", str(dump))
    copy = _config(tmp_path / "copy.toml", tmp_path / "copy.db", embedder=NO_MODEL)
    count = json.loads(
        run_cli("entries", "import", str(dump), "--config", str(copy), "--json").stdout
    )["stored"]
    done = run_cli("reencrypt", "--config", str(copy), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["rewritten"], data["dropped"]) == (count, 0)
