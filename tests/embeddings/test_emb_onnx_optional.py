"""onnxruntime is the ``onnx`` extra: the default (torch) path runs without it, and
``kind = "onnx"`` without it is a config error naming the extra to install.

"Without it" is the standard way to make an import fail in a fresh interpreter:
``sys.modules["onnxruntime"] = None`` (an injected fault; the rest is real).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = "import sys; sys.modules['onnxruntime'] = None\n"


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=240,
    )


def test_onnxruntime_is_an_extra_not_a_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    names = [re.split(r"[<>=!~;\[ ]", d)[0] for d in project["dependencies"]]
    assert "onnxruntime" not in names
    extras = project["optional-dependencies"]
    assert any(d.startswith("onnxruntime>=") for d in extras["onnx"])
    assert "stagecache[onnx]" in extras["onnx-export"]
    assert "onnx" in extras["all"][0]


def test_check_config_names_the_extra_when_onnxruntime_is_missing(
    tmp_path: Path,
) -> None:
    config = tmp_path / "onnx.toml"
    config.write_text('[embedder]\nkind = "onnx"\n', "utf-8")
    out = _python(
        f"""
        from stagecache.cli import main
        sys.exit(main(["check-config", {str(config)!r}]))
        """,
        tmp_path,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "embedder.kind" in out.stderr
    assert "pip install 'stagecache[onnx]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_default_embedder_embeds_without_onnxruntime(tmp_path: Path) -> None:
    out = _python(
        """
        import anyio
        from stagecache.config import PipelineConfig
        from stagecache.embeddings import embedder_config, make_embedder

        async def main() -> None:
            cfg = embedder_config(PipelineConfig().embedder)
            embedder = make_embedder(cfg)
            await embedder.warm_up()
            vectors = await embedder.embed(["How do I reset my password?"])
            print(cfg.__struct_config__.tag, vectors.shape)
            assert "onnxruntime" not in [
                m for m, v in sys.modules.items() if v is not None
            ]

        anyio.run(main)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["sentence_transformers", "(1,", "384)"]
