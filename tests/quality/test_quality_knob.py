"""One knob that means what it says: ``[cache] threshold`` is a hard floor, floors are
calibrated per embedder, and every outcome reports the effective decision."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stagecache import Caller
from stagecache._model import Candidate
from stagecache.cache import CacheSettings
from stagecache.config import PipelineConfig, parse_config
from stagecache.embeddings import DEFAULT_MODEL
from stagecache.errors import ConfigError
from stagecache.pipeline._events import CacheHit, CacheMiss
from stagecache.quality import (
    DEFAULT_EMBEDDER,
    UNCALIBRATED_FLOOR,
    LearnedVerifier,
    UncalibratedVerifier,
    VerifierConfig,
    load_calibrations,
    make_verifier,
    weights_for,
)
from stagecache.testing import capture_events, capture_spans

pytestmark = pytest.mark.anyio

ALICE = Caller(user_id="alice")
# Real all-MiniLM-L6-v2 cosines (the default verifier accepts both today):
# 0.962, trivially equivalent; 0.969, on the learned score.
REFUND = ("What is the refund policy?", "What is your refund policy?")
PYTHON = (
    "What is the best way to learn Python?",
    "What is the best way to learn Python programming?",
)

Make = Callable[..., tuple[Any, Any]]


class PairEmbedder:
    """Not MiniLM: every text gets its own random unit vector, except the second
    text of each pair, placed at exactly the given cosine to the first."""

    model_id = "hash-embedder"
    dim = 384

    def __init__(self, pairs: dict[tuple[str, str], float]) -> None:
        self.pairs = pairs

    def _base(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
        v = np.random.default_rng(seed).standard_normal(self.dim)
        return v / np.linalg.norm(v)

    def _vector(self, text: str) -> np.ndarray:
        for (first, second), cos in self.pairs.items():
            if text == second:
                u = self._base(first)
                w = self._base(second)
                w -= (w @ u) * u
                w /= np.linalg.norm(w)
                return cos * u + math.sqrt(1 - cos * cos) * w
        return self._base(text)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray([self._vector(t) for t in texts], dtype=np.float32)


async def _ask_twice(pipeline: Any, first: str, second: str) -> Any:
    async with pipeline:
        warm = await pipeline.run(first, caller=ALICE)
        assert warm.cache.status == "miss" and warm.cache.stored
        return await pipeline.run(second, caller=ALICE)


# -- the threshold is a hard floor -------------------------------------------------


@pytest.mark.parametrize("pair", [REFUND, PYTHON], ids=["trivial", "learned"])
async def test_a_threshold_of_099_refuses_a_hit_the_default_verifier_takes(
    make_pipeline: Make, pair: tuple[str, str]
) -> None:
    loose, _ = make_pipeline()
    hit = await _ask_twice(loose, *pair)
    assert hit.cache.hit and 0.95 < hit.cache.similarity < 0.99
    strict, llm = make_pipeline(cache=CacheSettings(threshold=0.99))
    miss = await _ask_twice(strict, *pair)
    assert miss.cache.status == "miss" and llm.calls == 2
    assert miss.cache.reason == "below_threshold"
    assert miss.cache.threshold == 0.99 and miss.cache.floor == 0.99
    assert miss.cache.rule is not None and miss.cache.rule.startswith("below threshold")


async def test_a_threshold_below_the_pair_keeps_the_calibrated_decision(
    make_pipeline: Make,
) -> None:
    pipeline, _ = make_pipeline(cache=CacheSettings(threshold=0.95))
    hit = await _ask_twice(pipeline, *REFUND)
    assert hit.cache.hit and hit.cache.rule == "trivially equivalent"
    assert hit.cache.threshold == 0.95 and hit.cache.floor == 0.95


@pytest.mark.parametrize("kind", ["none", "structural", "learned", "combined"])
def test_every_kind_refuses_below_the_threshold(kind: str) -> None:
    v = make_verifier(VerifierConfig(kind=kind), threshold=0.97)  # type: ignore[arg-type]
    for query, cached in (REFUND, PYTHON, ("Hi there", "hi there")):
        verdict = v.verify(
            cached, Candidate(entry_id="e", query=query, similarity=0.962)
        )
        assert not verdict.accept and verdict.reason.startswith("below threshold")
        assert verdict.floor == 0.97
    index, verdict = v.verify_ranked(
        REFUND[1], [Candidate(entry_id="e", query=REFUND[0], similarity=0.962)]
    )
    assert index is None and verdict is not None and not verdict.accept


async def test_the_engine_holds_the_threshold_against_any_verifier(
    make_pipeline: Make,
) -> None:
    """A verifier that knows nothing of the threshold (here: built without it)
    still cannot make a hit below it."""
    from stagecache.cache import SemanticCache

    pipeline, _ = make_pipeline(cache=CacheSettings(threshold=0.99))
    engine: SemanticCache = pipeline.cache.engine
    engine.verifier = make_verifier()  # no threshold given
    miss = await _ask_twice(pipeline, *REFUND)
    assert miss.cache.status == "miss" and miss.cache.reason == "below_threshold"
    assert miss.cache.rule is not None and "0.990" in miss.cache.rule


# -- what is reported is the floor in force ---------------------------------------


async def test_without_a_threshold_the_calibrated_floor_is_reported(
    make_pipeline: Make,
) -> None:
    spans = capture_spans()
    pipeline, _ = make_pipeline(tracer_provider=spans.provider)
    verifier = pipeline.cache.engine.verifier
    assert isinstance(verifier, LearnedVerifier)
    with capture_events(pipeline.events) as events:
        hit = await _ask_twice(pipeline, *PYTHON)
    floor_in_force = verifier.effective_floor(None)
    assert floor_in_force != 0.92
    assert floor_in_force <= min(verifier.floor, verifier.long_floor)
    assert hit.cache.hit and hit.cache.threshold == floor_in_force
    # the rule that accepted, its floor and the learned score
    assert hit.cache.rule == "combined" and hit.cache.floor == verifier.floor
    assert hit.cache.score is not None and hit.cache.score >= verifier.threshold
    (span,) = spans.named("cache.hit")
    attrs = dict(span.attributes or {})
    assert attrs["cache.threshold"] == floor_in_force
    assert attrs["cache.floor"] == verifier.floor
    assert attrs["cache.score"] == hit.cache.score
    assert attrs["cache.rule"] == "combined"
    # the metrics (and the Grafana line) get the same number
    published = [e for e in events.events if isinstance(e, CacheHit | CacheMiss)]
    assert {e.threshold for e in published} == {floor_in_force}


async def test_a_rejection_reports_its_rule_floor_and_score(
    make_pipeline: Make,
) -> None:
    spans = capture_spans()
    pipeline, _ = make_pipeline(tracer_provider=spans.provider)
    miss = await _ask_twice(
        pipeline, "Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"
    )
    assert miss.cache.reason == "rejected_by_verifier"
    assert miss.cache.rule == "structural: negation"
    assert miss.cache.score is not None and miss.cache.floor is not None
    span = spans.named("cache.miss")[-1]
    attrs = dict(span.attributes or {})
    assert attrs["cache.rule"] == "structural: negation"
    assert {"cache.threshold", "cache.floor", "cache.score"} <= set(attrs)


# -- calibration per embedder --------------------------------------------------------


def test_the_shipped_calibration_names_its_embedder() -> None:
    assert DEFAULT_EMBEDDER == DEFAULT_MODEL
    (shipped,) = load_calibrations()
    assert shipped.embedders == (DEFAULT_MODEL,)
    assert weights_for(DEFAULT_MODEL) is shipped
    assert weights_for(f"{DEFAULT_MODEL}#onnx-int8") is shipped  # same weights
    assert weights_for("hash-embedder") is None
    assert weights_for("sentence-transformers/all-mpnet-base-v2") is None


async def test_another_embedder_gets_the_uncalibrated_rule_not_minilm_floors(
    make_pipeline: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """A pair the MiniLM floors accept at 0.866 (a trivial rewording) is no hit
    for an embedder those floors were not fitted for."""
    close = (
        "Where can I download the mobile app?",
        "Where do I download the mobile app?",
    )
    closer = ("How do I export my data?", "How can I export my data?")
    negated = ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?")
    embedder = PairEmbedder({close: 0.866, closer: 0.97, negated: 0.98})
    minilm_floors = make_verifier()
    assert minilm_floors.verify(
        close[1], Candidate(entry_id="e", query=close[0], similarity=0.866)
    ).accept  # what happened to the hash embedder before
    with caplog.at_level(logging.WARNING, logger="stagecache.quality"):
        pipeline, _ = make_pipeline(embedder=embedder)
    warnings = [r for r in caplog.records if "no calibration" in r.getMessage()]
    assert len(warnings) == 1 and "hash-embedder" in warnings[0].getMessage()
    verifier = pipeline.cache.engine.verifier
    assert isinstance(verifier, UncalibratedVerifier)
    assert verifier.calibration == "uncalibrated" and verifier.name == "combined"
    async with pipeline:
        for first in (close[0], closer[0], negated[0]):
            await pipeline.run(first, caller=ALICE)
        below = await pipeline.run(close[1], caller=ALICE)
        above = await pipeline.run(closer[1], caller=ALICE)
        vetoed = await pipeline.run(negated[1], caller=ALICE)
    assert below.cache.status == "miss" and below.cache.reason == "below_threshold"
    assert below.cache.threshold == UNCALIBRATED_FLOOR
    assert above.cache.hit
    assert above.cache.rule == "uncalibrated: cosine 0.970 >= 0.950"
    assert above.cache.floor == UNCALIBRATED_FLOOR
    assert vetoed.cache.status == "miss" and vetoed.cache.rule == "structural: negation"


async def test_an_uncalibrated_embedder_takes_the_users_threshold(
    make_pipeline: Make,
) -> None:
    close = (
        "Where can I download the mobile app?",
        "Where do I download the mobile app?",
    )
    pipeline, _ = make_pipeline(
        embedder=PairEmbedder({close: 0.866}), cache=CacheSettings(threshold=0.85)
    )
    hit = await _ask_twice(pipeline, *close)
    assert hit.cache.hit and hit.cache.threshold == 0.85
    assert hit.cache.rule == "uncalibrated: cosine 0.866 >= 0.850"


def test_a_second_calibration_file_serves_its_own_embedder(tmp_path: Path) -> None:
    from importlib import resources

    shipped = resources.files("stagecache.quality").joinpath("data/verifier.json")
    data = json.loads(shipped.read_text(encoding="utf-8"))
    (tmp_path / "verifier.json").write_text(json.dumps(data))
    data["embedder"] = ["acme/minilm-cache-ft"]
    (tmp_path / "verifier-ft.json").write_text(json.dumps(data))
    found = load_calibrations(tmp_path)  # type: ignore[arg-type]
    by_file = {w.source: w.embedders for w in found}
    assert by_file == {
        "verifier.json": (DEFAULT_MODEL,),  # legacy ``embedding_model``: hub name
        "verifier-ft.json": ("acme/minilm-cache-ft",),
    }
    ft = weights_for("acme/minilm-cache-ft", found)
    assert ft is not None and ft.source == "verifier-ft.json"
    default = weights_for(DEFAULT_MODEL, found)
    assert default is not None and default.source == "verifier.json"


def test_the_calibration_can_be_named_and_a_wrong_name_is_refused() -> None:
    v = make_verifier(
        VerifierConfig(calibration=DEFAULT_MODEL), embedder_id="/models/my-minilm"
    )
    assert isinstance(v, LearnedVerifier) and v.calibration == DEFAULT_MODEL
    with pytest.raises(ConfigError, match=r"verifier\.calibration.*all-MiniLM"):
        make_verifier(VerifierConfig(calibration="acme/nope"))
    config = parse_config({"verifier": {"calibration": DEFAULT_MODEL}})
    assert isinstance(config, PipelineConfig)
