"""Input and output validation shared by every embedder."""

from __future__ import annotations

import numpy as np
import pytest

from stagecache.embeddings import OnnxEmbedder, check_texts, validate_vectors
from stagecache.errors import EmbeddingError, InputError

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("text", ["", " ", "\n\t  ", "\u3000"])
def test_empty_and_whitespace_only_texts_are_rejected(text: str) -> None:
    with pytest.raises(InputError, match=r"texts\[1\].*whitespace"):
        check_texts(["ok", text], max_chars=100, model_id="m")


def test_bytes_item_is_rejected_with_a_hint() -> None:
    with pytest.raises(InputError, match="decode"):
        check_texts(["ok", b"caf\xe9"], max_chars=100, model_id="m")  # type: ignore[list-item]


def test_bare_string_is_rejected() -> None:
    with pytest.raises(InputError, match="wrap it in a list"):
        check_texts("hello", max_chars=100, model_id="m")


def test_lone_surrogate_is_rejected() -> None:
    bad = b"caf\xe9".decode("utf-8", errors="surrogateescape")
    with pytest.raises(InputError, match="not valid Unicode"):
        check_texts([bad], max_chars=100, model_id="m")


def test_long_text_is_clipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="stagecache.embeddings"):
        out = check_texts(["x" * 1_000_000, "short"], max_chars=1000, model_id="m")
    assert [len(t) for t in out] == [1000, 5]
    (record,) = [r for r in caplog.records if getattr(r, "truncated", False)]
    assert record.index == 0  # type: ignore[attr-defined]


async def test_megabyte_text_embeds_on_the_real_model(onnx_int8: OnnxEmbedder) -> None:
    out = await onnx_int8.embed(["refund policy " * 80_000])  # ~1.1 MB
    assert out.shape == (1, 384)


async def test_embedders_reject_empty_text(onnx_int8: OnnxEmbedder) -> None:
    with pytest.raises(InputError):
        await onnx_int8.embed(["fine", "   "])


def test_validate_vectors_normalises_rows() -> None:
    out = validate_vectors([[3.0, 4.0], [0.0, 2.0]], 2, 2, "m")
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    ("arr", "n", "dim", "match"),
    [
        ([[1.0, float("nan")]], 1, 2, "NaN"),
        ([[1.0, float("inf")]], 1, 2, "NaN or inf"),
        ([[1.0, 0.0, 0.0]], 1, 2, "dimension 2"),
        ([[1.0, 0.0]], 2, 2, "expected 2 vectors"),
        ([[0.0, 0.0]], 1, 2, "all zeros"),
        ([1.0, 0.0], 1, 2, "2-d"),
        ([["a", "b"]], 1, 2, "numeric"),
    ],
)
def test_validate_vectors_rejects_bad_provider_output(
    arr: object, n: int, dim: int, match: str
) -> None:
    with pytest.raises(EmbeddingError, match=match):
        validate_vectors(arr, n, dim, "m")
