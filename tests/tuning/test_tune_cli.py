"""``stagecache tune`` run through the installed console script: bad input exits 2
with one line, and a small run writes a model, a report and a config that
``check-config`` accepts and a pipeline answers with."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

import stagecache
from stagecache.testing import ScriptedLLM
from tests.cli_support import default_chain, run_cli

#: 44 labelled pairs the base model gets wrong about half the time (ROC AUC
#: ~0.5): rewordings with few words in common (1), one changed word (0).
TOPICS = [
    ("How do I reset my password?", "I forgot my login, how do I get back in?",
     "How do I reset my PIN?"),
    ("How do I cancel my subscription?", "I want to stop paying every month",
     "How do I pause my subscription?"),
    ("Do you ship to Canada?", "Can I get an order delivered in Toronto?",
     "Do you ship to Mexico?"),
    ("Can I return an item after 30 days?",
     "Is a return possible a month after buying?",
     "Can I return an item after 90 days?"),
    ("How do I delete my account?", "Please remove all my data and close my profile",
     "How do I create an account?"),
    ("Where can I download my invoices?", "I need copies of my bills as PDF",
     "Where can I download my contracts?"),
    ("How do I turn on two-factor authentication?",
     "I want a code sent to my phone when I log in",
     "How do I turn off two-factor authentication?"),
    ("Can I pay by credit card?", "Do you take Visa or Mastercard?",
     "Can I pay by bank transfer?"),
    ("How do I upgrade to the premium plan?",
     "I'd like more features, what do I buy?",
     "How do I downgrade to the free plan?"),
    ("What is your support phone number?",
     "Which number do I call to reach an agent?",
     "What is your support email address?"),
    ("How do I change my billing address?",
     "My card's address moved, where do I update it?",
     "How do I change my shipping address?"),
]  # fmt: skip


CHAIN = default_chain(cache_check=120)


def pairs_rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for asked, same, other in TOPICS:
        reworded = asked.lower().rstrip("?") + " please"
        rows += [
            {"text_a": asked, "text_b": same, "label": 1},
            {"text_a": reworded, "text_b": same.upper(), "label": 1},
            {"text_a": asked, "text_b": other, "label": 0},
            {"text_a": same, "text_b": other, "label": 0},
        ]
    return rows


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def one_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 2, one ``stagecache: error:`` line holding every fragment, no trace."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stagecache: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_help_lists_tune_and_every_option() -> None:
    top = run_cli("--help")
    assert "tune" in top.stdout
    done = run_cli("tune", "--help")
    assert done.returncode == 0
    for option in (
        "--pairs", "--config", "--user", "--tenant", "--out", "--holdout",
        "--max-wrong-hit-rate", "--epochs", "--max-steps", "--batch-size",
        "--learning-rate", "--seed", "--json",
    ):  # fmt: skip
        assert option in done.stdout


def _files(tmp: Path) -> dict[str, str]:
    """One file per kind of bad input (and a good one)."""
    rows = pairs_rows()
    bad_json = tmp / "bad.jsonl"
    bad_json.write_text('{"text_a": "a", "text_b": "b", "label": 1}\n{"text_a": \n')
    empty = tmp / "empty.csv"
    empty.write_text("text_a,text_b,label\nHow do I pay?,,1\n")
    taken = tmp / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    memory = tmp / "memory.toml"
    memory.write_text('[cache.backend]\nkind = "memory"\n')
    label = [*rows[:3], {"text_a": "a", "text_b": "b", "label": "yes please"}]
    return {
        "GOOD": str(write_jsonl(tmp / "good.jsonl", rows)),
        "MISSING": str(tmp / "nope.jsonl"),
        "BADJSON": str(bad_json),
        "BADLABEL": str(write_jsonl(tmp / "label.jsonl", label)),
        "EMPTY": str(empty),
        "FEW": str(write_jsonl(tmp / "few.jsonl", rows[:6])),
        "ONES": str(
            write_jsonl(tmp / "ones.jsonl", [r for r in rows if r["label"] == 1])
        ),
        "TAKEN": str(taken),
        "MEMORY": str(memory),
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pairs", "MISSING"], "nope.jsonl: no such file"),
        (["--pairs", "BADJSON"], "bad.jsonl:2: not valid JSON"),
        (["--pairs", "BADLABEL"], "label.jsonl:4: label: 'yes please' is not a label"),
        (["--pairs", "EMPTY"], "empty.csv:2: text_b: empty text"),
        (["--pairs", "FEW"], "6 pairs, too few for a held-out split"),
        (["--pairs", "ONES"], "every pair has the same label; add pairs with label 0"),
        ([], "no pairs: pass --pairs FILE"),
        (["--pairs", "GOOD", "--user", "u"], "--user/--tenant filter the feedback"),
        (["--pairs", "GOOD", "--holdout", "1.5"], "--holdout: 1.5 is not between 0"),
        (["--pairs", "GOOD", "--max-wrong-hit-rate", "0"], "--max-wrong-hit-rate: 0.0"),
        (["--pairs", "GOOD", "--out", "TAKEN"], "exists and is not an empty directory"),
        (["--config", "MEMORY"], "memory backend keeps nothing between processes"),
    ],
    ids=[
        "missing-file", "bad-json", "bad-label", "empty-text", "too-few",
        "one-class", "no-pairs", "user-without-config", "holdout", "budget",
        "out-taken", "memory-backend",
    ],
)  # fmt: skip
def test_every_input_error_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    files = _files(tmp_path)
    out = tmp_path / "out"
    argv = [files.get(a, a) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    one_error(run_cli("tune", *argv), message)
    assert not out.exists()  # nothing written on bad input


async def _store_and_feedback(config: Path, embedder: Any) -> list[str]:
    """Two hits in the cache of ``config``, one marked wrong and one right."""
    llm = ScriptedLLM(lambda p: f"answer to {p}")
    pipe = stagecache.load(config, llm=llm, embedder=embedder)
    ids = []
    async with pipe:
        caller = stagecache.Caller(user_id="alice")
        for asked, hit, correct in (
            ("How do I close my account?", "How do I close my bank account?", False),
            ("Where is my parcel?", "Where's my parcel?", True),
        ):
            await pipe.run(asked, caller=caller)
            result = await pipe.run(hit, caller=caller)
            assert result.cache.status == "hit", result.cache
            assert result.cache.entry_id is not None
            await pipe.cache.feedback(result.cache.entry_id, correct=correct, query=hit)
            ids.append(result.cache.entry_id)
    return ids


# A training run, two ONNX exports and three model loads: about a minute on an idle
# machine, several on a shared and loaded one; the limit leaves room for the latter.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tune_writes_a_model_report_and_config_the_pipeline_runs(
    tmp_path: Path, embedder: Any
) -> None:
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pairs_rows())
    cache = tmp_path / "cache.toml"
    cache.write_text(
        "[cache]\nthreshold = 0.8\ntimeout_s = 60\n"
        f'[cache.backend]\nkind = "sqlite"\npath = "{tmp_path / "cache.db"}"\n'
        '[verifier]\nkind = "none"\n' + CHAIN
    )
    anyio.run(_store_and_feedback, cache, embedder)
    out = tmp_path / "tuned"
    done = run_cli(
        "tune", "--pairs", str(pairs), "--config", str(cache), "--out", str(out),
        "--max-steps", "3", "--batch-size", "16", "--learning-rate", "1e-4",
        "--seed", "3", "--json", timeout=800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["pairs"]["from_feedback"] == 2
    assert summary["pairs"]["from_files"] == len(pairs_rows())
    assert (
        summary["pairs"]["train"] + summary["pairs"]["held_out"]
        == len(pairs_rows()) + 2
    )
    assert summary["mean_cosine_change"] > 0  # the tuned model is another model
    report = json.loads((out / "report.json").read_text())
    for model in ("base", "tuned"):
        assert 0.0 <= report[model]["auc"] <= 1.0
        assert report[model]["at_floor"]["wrong_hit_rate"] <= 0.02
    assert "ROC AUC" in (out / "report.md").read_text()
    config = out / "stagecache.toml"
    text = config.read_text()
    assert f"threshold = {report['tuned']['floor']}" in text
    assert 'kind = "structural"' in text
    checked = run_cli("check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    floor = report["tuned"]["floor"]
    loaded = tmp_path / "loaded.toml"  # the written sections, a patient cache stage
    loaded.write_text(text + CHAIN)
    anyio.run(_answers_with_the_tuned_model, loaded, out / "model", floor)


async def _answers_with_the_tuned_model(
    config: Path, model: Path, threshold: float
) -> None:
    llm = ScriptedLLM(lambda p: f"answer to {p}")
    async with stagecache.load(config, llm=llm) as pipe:
        caller = stagecache.Caller(user_id="bob")
        first = await pipe.run("How do I reset my password?", caller=caller)
        again = await pipe.run("How do I reset my password?", caller=caller)
    assert first.cache.stored and again.cache.status == "hit"
    assert llm.calls == 1
    assert again.cache.threshold == threshold  # the held-out floor is in force
    from stagecache.embeddings import OnnxEmbedder

    tuned = OnnxEmbedder(model).model_id
    assert tuned != OnnxEmbedder(None).model_id
    ids = {getattr(c, "model_id", None) for c in pipe.components}
    assert tuned in ids, ids  # the pipeline embeds with the tuned model
