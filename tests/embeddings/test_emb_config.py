"""EmbedderConfig decoding and make_embedder."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from stagecache.embeddings import (
    CachedEmbedder,
    EmbedderConfig,
    OnnxConfig,
    OnnxEmbedder,
    OpenAIConfig,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    SentenceTransformersConfig,
    embedder_config,
    make_embedder,
)
from stagecache.errors import ConfigError

pytestmark = pytest.mark.anyio


def test_toml_decodes_to_the_kind() -> None:
    text = b'kind = "onnx"\nquantize = "fp32"\nmax_batch = 32\n'
    cfg = msgspec.toml.decode(text, type=EmbedderConfig)
    assert cfg == OnnxConfig(quantize="fp32", max_batch=32)
    assert (
        embedder_config({"kind": "sentence_transformers"})
        == SentenceTransformersConfig()
    )


def test_config_is_frozen() -> None:
    cfg = OnnxConfig()
    with pytest.raises(AttributeError):
        cfg.quantize = "fp32"  # type: ignore[misc]


@pytest.mark.parametrize("kind", [[], {}, 3, None])
def test_a_kind_that_is_not_a_string_is_a_config_error(kind: object) -> None:
    # found by the fuzz test: an unhashable kind raised TypeError
    with pytest.raises(ConfigError) as info:
        embedder_config({"kind": kind})
    assert info.value.field == "embedder.kind"


def test_unknown_kind_lists_the_valid_kinds() -> None:
    with pytest.raises(ConfigError) as info:
        embedder_config({"kind": "bert"})
    assert info.value.field == "embedder.kind"
    assert "onnx, openai, sentence_transformers" in str(info.value)


def test_bad_literal_names_field_and_choices() -> None:
    with pytest.raises(ConfigError) as info:
        embedder_config({"kind": "onnx", "quantize": "int4"}, path="pipeline.toml")
    message = str(info.value)
    assert message.startswith("pipeline.toml: embedder.quantize:")
    assert "'int4'" in message and "'fp32', 'int8'" in message


def test_unknown_field_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        embedder_config({"kind": "onnx", "quantise": "int8"})
    assert "quantise" in str(info.value) and "quantize" in str(info.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "onnx", "max_batch": 0}, "max_batch"),
        ({"kind": "onnx", "batch_window_ms": -1}, "batch_window_ms"),
        ({"kind": "openai", "base_url": "localhost:8000", "model": "m"}, "base_url"),
        ({"kind": "openai", "model": "m"}, "base_url"),
        ({"kind": "onnx", "max_batch": "64"}, "max_batch"),
    ],
)
def test_invalid_values_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        embedder_config(data)


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        OnnxConfig(max_batch=0)


def test_make_embedder_builds_the_cached_stack(tmp_path: Path) -> None:
    cfg = OnnxConfig(
        quantize="fp32", cache_path=str(tmp_path / "e.sqlite3"), casefold=True
    )
    embedder = make_embedder(cfg)
    assert isinstance(embedder, CachedEmbedder)
    assert isinstance(embedder.inner, OnnxEmbedder)
    assert embedder.casefold and embedder.inner.quantize == "fp32"
    plain = make_embedder(SentenceTransformersConfig(cache=False, max_batch=8))
    assert isinstance(plain, SentenceTransformerEmbedder)
    assert plain.batcher.max_batch == 8


async def test_make_embedder_default_stack_embeds(cache_dir: Path) -> None:
    embedder = make_embedder(OnnxConfig(cache_dir=str(cache_dir)))
    assert isinstance(embedder, CachedEmbedder)
    async with embedder:
        out = await embedder.embed(["hello"])
    assert out.shape == (1, 384)


def test_openai_api_key_comes_from_the_named_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = OpenAIConfig(
        base_url="http://localhost:1/v1",
        model="m",
        cache=False,
        api_key_env="TEST_EMB_KEY",
    )
    monkeypatch.delenv("TEST_EMB_KEY", raising=False)
    with pytest.raises(ConfigError, match="TEST_EMB_KEY"):
        make_embedder(cfg)
    monkeypatch.setenv("TEST_EMB_KEY", "sk-1")
    embedder = make_embedder(cfg)
    assert isinstance(embedder, OpenAIEmbedder) and embedder.api_key == "sk-1"
    keyless = make_embedder(
        OpenAIConfig(base_url="http://x/v1", model="m", api_key_env="")
    )
    assert isinstance(keyless, CachedEmbedder)
