"""What the tests that drive the installed ``stagecache`` console script share: the
script, the way to run it on this checkout's code, and pipeline-file pieces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stagecache.config import DEFAULT_STAGES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("stagecache")

#: The embedder of a config for commands that must not load it: a model folder
#: that does not exist, so loading it would fail the command.
NO_MODEL = '[embedder]\nkind = "sentence_transformers"\nmodel = "/nonexistent/model"\n'


def run_cli(
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``stagecache`` script on this checkout's code, offline."""
    base = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    base.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=base,
    )


def default_chain(**timeouts: int) -> str:
    """The default chain as ``[[stages]]`` tables, with ``timeout_s`` for the
    stages named (``cache_check=120``): the test machine is shared and loaded, and
    a lookup that outlasts its stage timeout would be a miss, not the behaviour
    under test."""
    return "".join(
        f'[[stages]]\nkind = "{kind}"\n'
        + (f"timeout_s = {timeouts[kind]}\n" if kind in timeouts else "")
        for kind in DEFAULT_STAGES
    )
