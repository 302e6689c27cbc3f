"""The local embedders on the real model: torch, ONNX fp32 and ONNX int8."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from emb_helpers import SENTENCES, cosine_rows

from stagecache.embeddings import (
    DEFAULT_MODEL,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
)
from stagecache.errors import ConfigError, ModelNotFound
from stagecache.types import Embedder

pytestmark = pytest.mark.anyio


async def test_default_model_returns_unit_float32_rows(
    st_embedder: SentenceTransformerEmbedder,
) -> None:
    out = await st_embedder.embed(SENTENCES)
    assert out.shape == (len(SENTENCES), 384)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert isinstance(st_embedder, Embedder)
    assert st_embedder.model_id == DEFAULT_MODEL


async def test_similar_questions_are_closer_than_unrelated_ones(
    st_embedder: SentenceTransformerEmbedder,
) -> None:
    out = await st_embedder.embed(SENTENCES[:3])
    assert out[0] @ out[1] > 0.6
    assert out[0] @ out[1] > out[0] @ out[2] + 0.3


async def test_empty_list_gives_empty_matrix(
    st_embedder: SentenceTransformerEmbedder,
) -> None:
    out = await st_embedder.embed([])
    assert out.shape == (0, 384)


def test_default_model_is_copied_out_of_site_packages(
    st_embedder: SentenceTransformerEmbedder, cache_dir: Path
) -> None:
    copies = list((cache_dir / "models").glob("all-MiniLM-L6-v2-*"))
    assert len(copies) == 1
    assert (copies[0] / "model.safetensors").is_file()


async def test_missing_model_dir_raises_model_not_found_with_path_and_fix(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-model"
    embedder = SentenceTransformerEmbedder(str(missing))
    with pytest.raises(ModelNotFound) as info:
        await embedder.warm_up()
    assert str(missing) in str(info.value)
    assert "model=None" in str(info.value)


async def test_unknown_hub_name_raises_model_not_found_offline() -> None:
    embedder = SentenceTransformerEmbedder("nobody/not-a-real-model-xyz")
    with pytest.raises(ModelNotFound, match="offline"):
        await embedder.warm_up()


def test_onnx_rejects_unknown_quantisation() -> None:
    with pytest.raises(ConfigError, match="quantize"):
        OnnxEmbedder(quantize="int4")  # type: ignore[arg-type]


def test_onnx_model_ids_share_fp32_and_mark_int8(
    onnx_fp32: OnnxEmbedder, onnx_int8: OnnxEmbedder
) -> None:
    assert onnx_fp32.model_id == DEFAULT_MODEL
    assert onnx_int8.model_id == f"{DEFAULT_MODEL}#onnx-int8"
    assert onnx_fp32.dim == onnx_int8.dim == 384


async def test_onnx_fp32_matches_torch(
    st_embedder: SentenceTransformerEmbedder, onnx_fp32: OnnxEmbedder
) -> None:
    torch_vecs = await st_embedder.embed(SENTENCES)
    onnx_vecs = await onnx_fp32.embed(SENTENCES)
    assert cosine_rows(torch_vecs, onnx_vecs).min() >= 0.9999


async def test_onnx_int8_is_close_to_torch(
    st_embedder: SentenceTransformerEmbedder, onnx_int8: OnnxEmbedder
) -> None:
    torch_vecs = await st_embedder.embed(SENTENCES)
    int8_vecs = await onnx_int8.embed(SENTENCES)
    cos = cosine_rows(torch_vecs, int8_vecs)
    assert cos.mean() >= 0.98
    assert cos.min() >= 0.95


async def test_onnx_batch_and_single_calls_agree(onnx_fp32: OnnxEmbedder) -> None:
    # Padding to the longest text of a batch must not change a row.
    batch = await onnx_fp32.embed(SENTENCES)
    single = np.concatenate([await onnx_fp32.embed([s]) for s in SENTENCES[:3]])
    assert cosine_rows(batch[:3], single).min() >= 0.99999


async def test_onnx_truncates_long_text_to_token_limit(
    onnx_fp32: OnnxEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    long = "password reset " * 2000
    with caplog.at_level("INFO", logger="stagecache.embeddings"):
        out = await onnx_fp32.embed([long, "password reset " * 200])
    assert any(getattr(r, "truncated", False) for r in caplog.records)
    # Both exceed 256 tokens, so both are the same first 256 tokens.
    assert float(out[0] @ out[1]) > 0.9999


_NO_TORCH_SCRIPT = """
import json, sys, anyio
from stagecache.embeddings import OnnxEmbedder

async def main():
    embedder = OnnxEmbedder(quantize="int8", cache_dir=sys.argv[1])
    out = await embedder.embed(["hello", "world"])
    heavy = [m for m in ("torch", "transformers", "sentence_transformers")
             if m in sys.modules]
    print(json.dumps({"shape": list(out.shape), "heavy": heavy}))

anyio.run(main)
"""


def test_onnx_runtime_does_not_import_torch(
    onnx_int8: OnnxEmbedder, cache_dir: Path
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_SCRIPT, str(cache_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"shape": [2, 384], "heavy": []}
