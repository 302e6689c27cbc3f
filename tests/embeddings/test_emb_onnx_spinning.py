"""onnxruntime's idle threads do not spin between embeddings.

By default onnxruntime keeps its intra-op threads spinning on the CPU after each
run; in a server that embeds one query per request that took about a core for about
a second after every miss, the CPU the rest of the request (the upstream call, the
first streamed chunk) needed (benchmarks/results/streaming.md). These tests check
the setting on the real session, not the time it saves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stagecache.config import load
from stagecache.embeddings import CachedEmbedder, OnnxEmbedder
from stagecache.embeddings._config import embedder_config, make_embedder
from stagecache.errors import ConfigError
from stagecache.testing import ScriptedLLM

OFF = {
    "session.intra_op.allow_spinning": "0",
    "session.inter_op.allow_spinning": "0",
}
ON = {key: "1" for key in OFF}


def test_the_onnx_session_does_not_spin_between_calls(onnx_int8: OnnxEmbedder) -> None:
    assert onnx_int8.spinning is False
    assert onnx_int8.session_options() == OFF


@pytest.mark.anyio
async def test_spinning_can_be_turned_back_on(cache_dir: Path) -> None:
    embedder = OnnxEmbedder(quantize="int8", cache_dir=cache_dir, spinning=True)
    assert embedder.session_options() == ON
    out = await embedder.embed(["hello"])
    assert out.shape == (1, 384)


def test_the_embedder_config_passes_spinning_to_the_session(cache_dir: Path) -> None:
    for value, expected in ((None, OFF), (True, ON)):
        section: dict[str, object] = {"kind": "onnx", "cache_dir": str(cache_dir)}
        if value is not None:
            section["spinning"] = value
        embedder = make_embedder(embedder_config(section))
        assert isinstance(embedder, CachedEmbedder)
        inner = embedder.inner
        assert isinstance(inner, OnnxEmbedder)
        assert inner.session_options() == expected


def test_a_pipeline_file_with_the_onnx_embedder_does_not_spin(
    cache_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(f'[embedder]\nkind = "onnx"\ncache_dir = "{cache_dir}"\n')
    pipeline = load(path, llm=ScriptedLLM(lambda prompt: "answer"))
    onnx = [r for r in pipeline.components if isinstance(r, CachedEmbedder)]
    assert len(onnx) == 1
    inner = onnx[0].inner
    assert isinstance(inner, OnnxEmbedder)
    assert inner.session_options() == OFF


def test_spinning_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError) as info:
        embedder_config({"kind": "onnx", "spinning": "yes"})
    assert "spinning" in str(info.value)
