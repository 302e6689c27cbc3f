"""The public surface of stagecache.embeddings."""

from __future__ import annotations

import subprocess
import sys

import stagecache.embeddings as emb


def test_all_is_sorted_and_complete() -> None:
    # isort-style, as ruff's RUF022 wants: CONSTANTS, then Classes, then functions.
    def order(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert emb.__all__ == sorted(emb.__all__, key=order)
    public = {
        name
        for name, value in vars(emb).items()
        if not name.startswith("_") and not isinstance(value, type(emb))
    }
    assert public - {"annotations"} == set(emb.__all__)


def test_import_is_light() -> None:
    code = (
        "import sys, stagecache.embeddings; "
        "print([m for m in ('torch', 'sentence_transformers', 'onnxruntime', "
        "'transformers', 'tokenizers') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
