"""The runner: order, early exit, failure policies, timeouts, cancellation, spans."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import stagecache
from stagecache import StageError, StageTimeout, Turn
from stagecache.pipeline import CLEANUPS, EventBus, Pipeline
from stagecache.pipeline._events import RequestFinished, StageFailed
from stagecache.testing import capture_events, capture_spans

pytestmark = pytest.mark.anyio


class Step:
    """A stage that records its name on the turn, with a configurable behaviour."""

    def __init__(
        self,
        name: str,
        *,
        policy: str = "continue",
        timeout_s: float | None = None,
        action: Any = None,
    ) -> None:
        self.name = name
        self.failure_policy = policy
        self.timeout_s = timeout_s
        self.action = action

    async def __call__(self, turn: Turn) -> Turn:
        turn.scratch.setdefault("order", []).append(self.name)
        if self.action is not None:
            result = self.action(turn)
            if hasattr(result, "__await__"):
                await result
        return turn


def answer(text: str) -> Any:
    def act(turn: Turn) -> None:
        turn.answer = text
        turn.answer_source = "llm"

    return act


def boom(turn: Turn) -> None:
    raise RuntimeError("boom")


async def test_stages_run_in_declared_order() -> None:
    seen: list[str] = []

    def record(turn: Turn) -> None:
        seen.extend(turn.scratch["order"])
        turn.answer = "x"

    stages = [Step("a"), Step("b"), Step("c", action=record)]
    await Pipeline(stages).run("hi")
    assert seen == ["a", "b", "c"]


async def test_early_exit_stops_the_chain_with_the_refusal() -> None:
    later = Step("later", action=answer("should not run"))
    stop = Step("guard", action=lambda t: t.stop("guard", "nope", "refused"))
    result = await Pipeline([stop, later]).run("hi")
    assert result.answer == "refused"
    assert result.blocked is not None and result.blocked.reason == "nope"
    assert result.blocked.stage == "guard"


async def test_continue_policy_records_the_error_and_goes_on() -> None:
    bus = EventBus()
    stages = [Step("cache", action=boom), Step("llm", action=answer("ok"))]
    with capture_events(bus) as cap:
        result = await Pipeline(stages, events=bus).run("hi")
    assert result.answer == "ok"
    assert result.errors == ["cache: RuntimeError: boom"]
    failed = cap.of(StageFailed)
    assert len(failed) == 1 and failed[0].stage == "cache"  # type: ignore[attr-defined]


async def test_refuse_policy_ends_the_turn_with_a_refusal() -> None:
    stages = [
        Step("guard", policy="refuse", action=boom),
        Step("llm", action=answer("x")),
    ]
    result = await Pipeline(stages).run("hi")
    assert result.blocked is not None
    assert result.blocked.reason == "stage_failed"
    assert result.answer != "x"


async def test_fail_policy_raises_a_stage_error_naming_the_stage() -> None:
    stages = [Step("llm", policy="fail", action=boom)]
    with pytest.raises(StageError) as info:
        await Pipeline(stages).run("hi")
    assert info.value.stage == "llm"
    assert "boom" in str(info.value)


async def test_timeout_is_a_contained_failure_under_continue() -> None:
    slow = Step("cache", timeout_s=0.05, action=lambda t: anyio.sleep(5))
    result = await Pipeline([slow, Step("llm", action=answer("ok"))]).run("hi")
    assert result.answer == "ok"
    assert "StageTimeout" in result.errors[0]


async def test_timeout_under_fail_raises_stage_timeout() -> None:
    slow = Step("llm", policy="fail", timeout_s=0.05, action=lambda t: anyio.sleep(5))
    with pytest.raises(StageTimeout) as info:
        await Pipeline([slow]).run("hi")
    assert info.value.stage == "llm" and info.value.timeout_s == 0.05


async def test_cancellation_propagates_and_runs_cleanups() -> None:
    cleaned: list[str] = []
    entered = anyio.Event()

    async def hang(turn: Turn) -> None:
        turn.scratch.setdefault(CLEANUPS, []).append(lambda: cleaned.append("done"))
        entered.set()
        await anyio.sleep(10)

    pipeline = Pipeline([Step("llm", action=hang)])
    async with anyio.create_task_group() as tg:
        tg.start_soon(pipeline.run, "hi")
        await entered.wait()
        tg.cancel_scope.cancel()
    assert cleaned == ["done"]


async def test_a_stage_returning_a_non_turn_is_contained() -> None:
    class Bad(Step):
        async def __call__(self, turn: Turn) -> Turn:
            return "oops"  # type: ignore[return-value]

    result = await Pipeline([Bad("x"), Step("llm", action=answer("ok"))]).run("hi")
    assert result.answer == "ok" and "TypeError" in result.errors[0]


async def test_spans_one_root_and_a_child_per_stage() -> None:
    spans = capture_spans()
    stages = [Step("a"), Step("b", action=boom), Step("c", action=answer("ok"))]
    result = await Pipeline(stages, tracer_provider=spans.provider).run("hi")
    (root,) = spans.named("stagecache.request")
    children = [s for s in spans.spans if s.parent is not None]
    assert [s.name for s in children] == [
        "stagecache.stage.a",
        "stagecache.stage.b",
        "stagecache.stage.c",
    ]
    assert all(s.parent.span_id == root.context.span_id for s in children)  # type: ignore[union-attr]
    assert format(root.context.trace_id, "032x") == result.trace_id
    failed = spans.named("stagecache.stage.b")[0]
    assert (
        failed.attributes is not None
        and failed.attributes["error.type"] == "RuntimeError"
    )
    assert (
        root.attributes is not None and root.attributes["stagecache.outcome"] == "off"
    )


async def test_tracing_off_gives_no_trace_id() -> None:
    result = await Pipeline([Step("c", action=answer("ok"))], tracing=False).run("hi")
    assert result.trace_id == ""


async def test_request_finished_event_carries_the_outcome() -> None:
    bus = EventBus()
    with capture_events(bus) as cap:
        await Pipeline([Step("c", action=answer("ok"))], events=bus).run("hi")
    (done,) = cap.of(RequestFinished)
    assert done.outcome == "off"  # type: ignore[attr-defined]


async def test_messages_are_validated_with_a_clear_error() -> None:
    pipeline = Pipeline([Step("c", action=answer("ok"))])
    with pytest.raises(stagecache.InputError, match=r"messages\[0\]\.role"):
        await pipeline.run([{"role": "wizard", "content": "hi"}])
    with pytest.raises(stagecache.InputError, match="non-empty list"):
        await pipeline.run([])
    with pytest.raises(stagecache.InputError, match="role 'user'"):
        await pipeline.run([{"role": "system", "content": "be nice"}])
    with pytest.raises(stagecache.InputError, match=r"tools\[0\]"):
        await pipeline.run("hi", tools=[{"nom": "x"}])


async def test_duplicate_stage_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        Pipeline([Step("a"), Step("a")])


async def test_a_broken_subscriber_never_fails_the_request() -> None:
    bus = EventBus()

    def broken(event: object) -> None:
        raise RuntimeError("exporter down")

    bus.subscribe(broken)
    result = await Pipeline([Step("c", action=answer("ok"))], events=bus).run("hi")
    assert result.answer == "ok"
    assert bus.failures >= 2
