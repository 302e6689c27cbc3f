"""The public surface: a curated __all__ that matches what is importable.

(ruff's RUF022 keeps every ``__all__`` sorted; these tests keep them honest.)
"""

from __future__ import annotations

import importlib

import pytest

import stagecache

PACKAGES = [
    "stagecache",
    "stagecache.cache",
    "stagecache.embeddings",
    "stagecache.exporters",
    "stagecache.guards",
    "stagecache.pipeline",
    "stagecache.quality",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_unique_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported))
    for item in exported:
        assert hasattr(module, item), f"{name}.{item} is in __all__ but missing"


def test_top_level_names_are_the_documented_api() -> None:
    for item in ("Pipeline", "Caller", "Result", "ToolSpec", "load", "ConfigError"):
        assert item in stagecache.__all__
    public = {n for n in dir(stagecache) if not n.startswith("_")}
    # Submodules are reachable but not part of __all__; everything else must be.
    modules = {"cache", "config", "errors", "pipeline", "stages", "types", "testing"}
    modules |= {"embeddings", "exporters", "guards", "quality", "memory", "clients"}
    modules |= {
        "integrations",
        "cli",
        "tuning",
        "annotations",
    }  # annotations: __future__
    assert public - modules - set(stagecache.__all__) == set()


def test_importing_stagecache_does_not_load_heavy_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, stagecache;"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'hnswlib', "
        "'onnxruntime', 'autogen_core', 'langchain_core') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""
