"""A bounded atheris run over config parsing and message coercion (2,000 inputs).

Skipped where atheris is not installed (it is not in the dev extras yet); the
hypothesis properties in test_sec_inputs.py cover the same surfaces everywhere.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = str(Path(__file__).with_name("fuzz_inputs.py"))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="no atheris")
def test_fuzzed_config_and_messages_raise_only_documented_errors(
    tmp_path: Path,
) -> None:
    proc = subprocess.run(
        [sys.executable, FUZZ, "-atheris_runs=2000", "-seed=1", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
