"""The `stagecache` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    return subprocess.run(
        [sys.executable, "-m", "stagecache.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def test_demo_prints_hits_misses_and_the_savings() -> None:
    done = run_cli("demo", "--delay", "0.05")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    rows = [
        line for line in out.splitlines() if re.match(r"\s*\d+\s+(alice|bob)\s", line)
    ]
    assert len(rows) == 11
    outcomes = [row.split()[2] for row in rows]
    assert outcomes[0] == "miss" and outcomes[1] == "hit"
    assert outcomes[5] == "miss"  # bob never gets alice's cached answer
    assert "blocked" in outcomes
    calls = int(re.search(r"LLM calls: (\d+) of 11 requests", out).group(1))  # type: ignore[union-attr]
    assert calls == outcomes.count("miss")
    assert re.search(r"time saved: \d+\.\d\d s \(at 0\.05 s per model call\)", out)
    assert "billing@example.com" not in out  # the output guard redacted it


def test_check_config_accepts_the_example() -> None:
    done = run_cli("check-config", "examples/pipeline.toml")
    assert done.returncode == 0, done.stderr
    assert "ok (7 stages" in done.stdout


def test_check_config_rejects_a_typo_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[cache]\nscope = "per_usr"\n')
    done = run_cli("check-config", str(bad))
    assert done.returncode == 2
    assert "cache.scope" in done.stderr and "per_user" in done.stderr
    assert "Traceback" not in done.stderr


def test_import_reports_stored_skipped_and_rejected(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"question": "How do I reset my password?", "answer": "Use the link."},
        {"question": "How do I reset my password?", "answer": "Use the link."},
        {"question": "", "answer": "x"},
    ]
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    done = run_cli("import", str(pairs), "--user", "alice")
    assert done.returncode == 0, done.stderr
    assert "stored 1, skipped 1, rejected 2" in done.stdout
    assert "line 4: not JSON" in done.stdout
    # Without --config the entries go into memory: said, not hidden.
    assert "gone when this command exits" in done.stderr
    assert "(memory backend: nothing was kept)" in done.stdout
