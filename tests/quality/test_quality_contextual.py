"""Contextual follow-ups never get their main query's answer through the pipeline.

A follow-up ("And who painted it?") only makes sense after its main query. Alone,
its text can sit close enough to the main query for the verifier to accept it (the
control below shows it does), so the guarantee comes from the key: a follow-up
carries its conversation, which is either not cached (``cache_multi_turn`` off, the
default) or part of the context fingerprint (on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from stagecache import Caller
from stagecache.cache import CacheSettings

pytestmark = pytest.mark.anyio

ALICE = Caller(user_id="alice")
Make = Callable[..., Any]

# (main query, its answer, a follow-up whose text alone is close to the main query)
CONVERSATIONS = [
    (
        "Who painted the Mona Lisa?",
        "Leonardo da Vinci.",
        "Who is the artist behind the Mona Lisa?",
    ),
    (
        "What is the main ingredient in guacamole?",
        "Avocado.",
        "What is the primary ingredient in guacamole?",
    ),
    (
        "How do I reset my router?",
        "Hold the reset button for 10 seconds.",
        "How can I reset my router?",
    ),
]


def answer(prompt: str) -> str:
    return f"answer to: {prompt}"


def follow_up(main: str, reply: str, text: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": main},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": text},
    ]


async def test_a_follow_up_alone_would_hit_its_main_query(make_pipeline: Make) -> None:
    # the control: without its conversation the follow-up text is served the main
    # query's answer, so the next tests would fail if the key ignored the history
    pipeline, _ = make_pipeline(answer)
    hits = 0
    async with pipeline:
        for main, _, text in CONVERSATIONS:
            await pipeline.run(main, caller=ALICE)
            hits += (await pipeline.run(text, caller=ALICE)).cache.hit
    assert hits >= 2


@pytest.mark.parametrize("multi_turn", [False, True])
async def test_a_follow_up_with_its_conversation_never_gets_the_main_answer(
    make_pipeline: Make, multi_turn: bool
) -> None:
    pipeline, llm = make_pipeline(
        answer, cache=CacheSettings(cache_multi_turn=multi_turn)
    )
    async with pipeline:
        for main, reply, text in CONVERSATIONS:
            first = await pipeline.run(main, caller=ALICE)
            assert first.cache.stored
            result = await pipeline.run(follow_up(main, reply, text), caller=ALICE)
            assert not result.cache.hit
            assert result.answer != first.answer
            expected = "miss" if multi_turn else "skip"
            assert result.cache.status == expected
    assert llm.calls == 2 * len(CONVERSATIONS)
