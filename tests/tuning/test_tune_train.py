"""Fine-tuning an embedder: a few real training steps, loaded by the ONNX embedder."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import anyio
import numpy as np
import pytest

from stagecache.embeddings import OnnxEmbedder, SentenceTransformerEmbedder
from stagecache.errors import ConfigError, InputError, ModelNotFound
from stagecache.tuning import TrainingPair, read_pairs, train_embedder, write_pairs

pytest.importorskip("datasets", reason="the tune extra: pip install 'stagecache[tune]'")
pytest.importorskip("accelerate", reason="the tune extra")

_POS = [
    ("How do I reset my password?", "How can I change my forgotten password?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("How long does shipping take?", "When will my order arrive?"),
    ("Can I return an item?", "What is your return policy?"),
]
_NEG = [
    ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
    ("What is a 15% tip on $80?", "What is a 20% tip on $80?"),
    ("Flights from Paris to Rome", "Flights from Rome to Paris"),
    ("How do I install Python 3.11?", "How do I uninstall Python 3.11?"),
]
PAIRS = [TrainingPair(a, b, 1) for a, b in _POS] + [
    TrainingPair(a, b, 0) for a, b in _NEG
]


_STDOUT: list[str] = []


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tune") / "model"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        path = train_embedder(
            PAIRS * 4, out_dir=out, batch_size=8, learning_rate=1e-4, max_steps=3
        )
    _STDOUT.append(printed.getvalue())
    return path


def test_training_writes_nothing_to_stdout(trained: Path) -> None:
    assert _STDOUT == [""]


def _embed(embedder: OnnxEmbedder, texts: list[str]) -> np.ndarray:
    async def go() -> np.ndarray:
        async with embedder:
            return await embedder.embed(texts)

    return anyio.run(go)


def test_trained_folder_loads_offline_in_the_onnx_embedder(
    trained: Path, tmp_path: Path
) -> None:
    assert json.loads((trained / "stagecache_onnx.json").read_text())["dim"] == 384
    # an empty cache dir: the folder is used as exported, nothing is re-exported
    embedder = OnnxEmbedder(trained, quantize="int8", cache_dir=tmp_path)
    texts = [a for a, _ in _NEG]
    out = _embed(embedder, texts)
    assert out.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert embedder.export_dir() == trained.resolve()
    assert not (tmp_path / "onnx").exists()
    assert embedder.model_id.endswith("#onnx-int8")


def test_training_moves_the_weights_away_from_the_base(
    trained: Path, tmp_path: Path
) -> None:
    texts = [b for _, b in _NEG]
    tuned = _embed(OnnxEmbedder(trained, quantize="fp32", cache_dir=tmp_path), texts)
    base = _embed(OnnxEmbedder(None, quantize="fp32", cache_dir=tmp_path), texts)
    cos = (tuned * base).sum(axis=1)
    assert float(cos.min()) < 0.9999  # three steps at lr 1e-4 change the vectors
    assert float(cos.min()) > 0.8  # ... without wrecking them


@pytest.mark.slow  # two training runs
def test_anchor_texts_stay_nearer_the_base_than_without_anchors(
    tmp_path: Path,
) -> None:
    # One epoch each, the same pair batches; the anchored run adds two batches
    # that pull the pair texts back to the base model's embeddings.
    texts = sorted({t for p in PAIRS for t in (p.text_a, p.text_b)})
    runs = {}
    for name, anchors in (("free", ()), ("anchored", texts)):
        runs[name] = train_embedder(
            PAIRS * 4,
            out_dir=tmp_path / name,
            batch_size=8,
            learning_rate=3e-4,
            warmup_ratio=0.0,
            anchors=anchors,
            anchor_weight=20.0,
        )
    base = _embed(OnnxEmbedder(None, quantize="fp32", cache_dir=tmp_path), texts)
    drift = {
        name: float(
            1.0
            - (_embed(OnnxEmbedder(path, quantize="fp32"), texts) * base)
            .sum(axis=1)
            .mean()
        )
        for name, path in runs.items()
    }
    assert drift["free"] > 0.0
    # measured: free 0.247, anchored 0.161 (seeded, two threads)
    assert drift["anchored"] < 0.8 * drift["free"], drift


def test_anchor_weight_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="anchor_weight"):
        train_embedder(
            PAIRS, out_dir=tmp_path / "x", anchors=["a text"], anchor_weight=0.0
        )
    with pytest.raises(ConfigError, match="anchor_weight"):
        train_embedder(PAIRS, out_dir=tmp_path / "x", anchor_weight=float("nan"))
    with pytest.raises(InputError, match=r"anchors\[1\]"):
        train_embedder(PAIRS, out_dir=tmp_path / "x", anchors=["a", 3])  # type: ignore[list-item]
    assert not (tmp_path / "x").exists()


def test_trained_folder_is_a_sentence_transformers_model_too(trained: Path) -> None:
    embedder = SentenceTransformerEmbedder(trained)
    assert embedder.dim == 384


def test_bad_pairs_and_settings_are_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"pairs\[1\]\.label"):
        train_embedder([PAIRS[0], TrainingPair("a", "b", 2)], out_dir=tmp_path / "x")
    with pytest.raises(InputError, match=r"pairs\[0\]\.text_b"):
        train_embedder([TrainingPair("a", " ", 1)], out_dir=tmp_path / "x")
    with pytest.raises(InputError, match="no training pairs"):
        train_embedder([], out_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="batch_size"):
        train_embedder(PAIRS, out_dir=tmp_path / "x", batch_size=1)
    with pytest.raises(ModelNotFound, match=r"modules\.json"):
        train_embedder(PAIRS, out_dir=tmp_path / "x", base=tmp_path)
    assert not (tmp_path / "x").exists()


def test_pairs_round_trip_through_jsonl_and_read_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    assert write_pairs(PAIRS, path) == len(PAIRS)
    assert read_pairs(path) == PAIRS
    csv_path = tmp_path / "qqp.csv"
    csv_path.write_text(
        'question1,question2,is_duplicate\n"How, now?",How now?,1\na,b,0\n'
    )
    assert read_pairs(csv_path) == [
        TrainingPair("How, now?", "How now?", 1),
        TrainingPair("a", "b", 0),
    ]
    (tmp_path / "bad.jsonl").write_text('{"text_a": "a", "text_b": "b"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:1"):
        read_pairs(tmp_path / "bad.jsonl")
