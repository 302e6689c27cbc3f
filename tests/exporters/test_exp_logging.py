"""Logs: JSON lines with trace ids, user data hashed, events as records."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from stagecache import Caller
from stagecache.exporters import LogConfig, LogExporter, configure_logging, text_hash
from stagecache.testing import capture_spans


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    structlog.reset_defaults()
    for name in ("stagecache", "opentelemetry"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if getattr(handler, "_stagecache_handler", False):  # keep the NullHandler
                logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


@pytest.mark.anyio
async def test_json_records_carry_trace_and_span_ids(
    stream: io.StringIO, make_demo: Any
) -> None:
    assert configure_logging("json", stream=stream) == "json"
    spans = capture_spans()
    async with make_demo(spans.provider, [LogExporter()]) as pipeline:
        result = await pipeline.run("hi", caller=Caller(user_id="alice"))
    records = [r for r in _records(stream) if r["event"] == "cache.miss"]
    assert records, stream.getvalue()
    assert records[0]["trace_id"] == result.trace_id
    (miss_span,) = spans.named("cache.miss")
    stage = miss_span.parent
    assert stage is not None
    # Published inside the cache_check stage's cache.miss span.
    assert records[0]["span_id"] == format(miss_span.context.span_id, "016x")


def test_user_data_is_hashed_unless_query_text_is_opted_in(
    stream: io.StringIO,
) -> None:
    configure_logging("json", stream=stream)
    log = structlog.get_logger("test")
    log.info("asked", user_id="alice", query="my secret question")
    configure_logging("json", stream=stream, include_query_text=True)  # again: safe
    log.info("asked", user_id="alice", query="my secret question")
    first, second = _records(stream)
    assert "alice" not in json.dumps(first) and "secret" not in json.dumps(first)
    assert first["user_id_hash"] == text_hash("alice")
    assert first["query_len"] == len("my secret question")
    assert second["query"] == "my secret question"
    assert "user_id" not in second


def test_stdlib_records_of_stagecache_are_json_lines_too(stream: io.StringIO) -> None:
    configure_logging("json", stream=stream)
    configure_logging("json", stream=stream)  # twice: one handler, one line
    logging.getLogger("stagecache.exporters").warning("collector down")
    (record,) = _records(stream)
    assert record["event"] == "collector down"
    assert record["level"] == "warning"


def test_auto_mode_honours_the_format_variable(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGECACHE_LOG_FORMAT", "console")
    assert configure_logging("auto", stream=stream) == "console"
    monkeypatch.setenv("STAGECACHE_LOG_FORMAT", "")
    monkeypatch.setenv("CI", "true")
    assert configure_logging("auto", stream=stream) == "json"


def test_log_exporter_logs_only_the_chosen_events(stream: io.StringIO) -> None:
    from stagecache.pipeline import _events as ev

    configure_logging("json", stream=stream, level="debug")
    exporter = LogExporter(LogConfig(events=["cache.evicted"], level="debug"))
    exporter(ev.CacheEvicted(reason="lru", count=2, scope="abc"))
    exporter(ev.Feedback(entry_id="e", correct=True))
    (record,) = _records(stream)
    assert record == {**record, "event": "cache.evicted", "reason": "lru", "count": 2}
    assert record["level"] == "debug"
