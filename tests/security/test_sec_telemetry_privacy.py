"""Telemetry privacy: foreign error messages, client-chosen labels, and stdout.

An upstream error that echoes the prompt must not put the prompt into a span, an
event or a log record; a model id chosen by a client must not become an unbounded
metric label; and the library never writes to the host's stdout.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import stagecache
from stagecache.config import PipelineConfig, PipelineSection, build
from stagecache.errors import EmbeddingError, LLMError, StageError
from stagecache.exporters import configure_logging
from stagecache.pipeline import _events as ev
from stagecache.testing import ScriptedLLM, capture_events, capture_spans

ROOT = Path(__file__).resolve().parents[2]
EMAIL = "dana.private@example.org"
PROMPT = (
    f"Please draft a letter to my landlord; my email is {EMAIL} and my "
    "flat number is fourteen-b on Quince Lane"
)
#: Distinct values a client-controlled label may take (docs/observability.md).
LABEL_LIMIT = 100
DANA = stagecache.Caller(user_id="dana")


def _upstream_rejects(prompt: str) -> str:
    # An upstream 400 that echoes the prompt (as several servers do).
    raise LLMError(
        f"Error code: 400 - invalid request: unsupported content in '{prompt}'",
        status_code=400,
    )


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    structlog.reset_defaults()
    for name in ("stagecache", "opentelemetry"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if getattr(handler, "_stagecache_handler", False):
                logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def _span_text(spans: Any) -> str:
    return json.dumps(
        [
            [
                s.name,
                s.status.description,
                dict(s.attributes or {}),
                [dict(e.attributes or {}) for e in s.events],
            ]
            for s in spans.spans
        ],
        default=str,
    )


def _leaks(text: str) -> list[str]:
    fragments = [EMAIL, "landlord", "Quince Lane", "fourteen-b"]
    return [f for f in fragments if f in text]


@pytest.mark.anyio
async def test_an_echoed_prompt_reaches_no_span_event_or_log(
    embedder: Any, log_stream: io.StringIO
) -> None:
    configure_logging("json", "debug", stream=log_stream)
    spans = capture_spans()
    pipeline = build(
        PipelineConfig(exporters=[{"kind": "log"}]),
        llm=ScriptedLLM(_upstream_rejects),
        embedder=embedder,
        tracer_provider=spans.provider,
    )
    async with pipeline:
        with capture_events(pipeline.events) as events, pytest.raises(StageError):
            await pipeline.run(PROMPT, caller=stagecache.Caller(user_id="dana"))
    span_text = _span_text(spans)
    # The failure is still visible: its type, on the stage and the request span.
    assert "LLMError" in span_text and "StageError" in span_text
    (failed,) = events.of(ev.StageFailed)
    assert failed.error_type == "LLMError"  # type: ignore[attr-defined]
    records = log_stream.getvalue()
    assert "stage failed" in records
    for where, text in (
        ("spans", span_text),
        ("events", json.dumps([ev.event_to_dict(e) for e in events.events])),
        ("logs", records),
    ):
        assert not _leaks(text), (where, _leaks(text), text[:2000])


@pytest.mark.anyio
async def test_a_failing_embedder_message_reaches_no_span_or_log(
    embedder: Any, log_stream: io.StringIO
) -> None:
    configure_logging("json", "debug", stream=log_stream)
    spans = capture_spans()
    pipeline = build(
        llm=ScriptedLLM(lambda p: "fine"),
        embedder=embedder,
        tracer_provider=spans.provider,
    )
    async with pipeline:
        embedder.fail = EmbeddingError(f"cannot embed {PROMPT!r}: model busy")
        try:
            result = await pipeline.run(
                PROMPT, caller=stagecache.Caller(user_id="dana")
            )
        finally:
            embedder.fail = None
    assert result.cache.status == "error"
    span_text = _span_text(spans)
    assert "EmbeddingError" in span_text
    assert not _leaks(span_text), span_text[:2000]
    assert "cache operation failed" in log_stream.getvalue()
    assert not _leaks(log_stream.getvalue()), log_stream.getvalue()


@pytest.mark.anyio
async def test_opted_in_error_messages_are_redacted_stripped_of_the_prompt_and_capped(
    embedder: Any,
) -> None:
    spans = capture_spans()
    config = PipelineConfig(pipeline=PipelineSection(record_error_messages=True))
    pipeline = build(
        config,
        llm=ScriptedLLM(lambda p: _upstream_rejects(p + " " + "x" * 5000)),
        embedder=embedder,
        tracer_provider=spans.provider,
    )
    async with pipeline:
        with pytest.raises(StageError):
            await pipeline.run(PROMPT, caller=stagecache.Caller(user_id="dana"))
    (stage,) = spans.named("stagecache.stage.llm")
    (exc_event,) = [
        e
        for e in stage.events
        if str((e.attributes or {}).get("exception.type", "")).endswith("LLMError")
    ]
    message = str((exc_event.attributes or {})["exception.message"])
    assert message.startswith("Error code: 400 - invalid request")  # opted in: kept
    assert len(message) <= 200
    assert not _leaks(message), message


def test_a_message_with_pii_but_no_echo_is_redacted_when_opted_in() -> None:
    from stagecache.exporters import safe_error_message

    exc = LLMError(f"quota exceeded for account {EMAIL}, card 4111 1111 1111 1111")
    assert safe_error_message(exc, record_messages=True) == (
        "quota exceeded for account [REDACTED:EMAIL], card [REDACTED:CARD]"
    )
    withheld = safe_error_message(exc)
    assert EMAIL not in withheld and "LLMError" in withheld


@pytest.mark.anyio
async def test_client_chosen_model_ids_are_bounded_metric_labels(
    embedder: Any,
) -> None:
    import anyio

    config = PipelineConfig(
        exporters=[{"kind": "prometheus", "port": 0}], stages=[{"kind": "llm"}]
    )
    pipeline = build(config, llm=ScriptedLLM(lambda p: "ok"), embedder=embedder)
    async with pipeline:
        exporter = next(p for p in pipeline.components if hasattr(p, "url"))
        await pipeline.run("hi", model=f"gpt-4o-{EMAIL}")
        for i in range(LABEL_LIMIT + 50):
            await pipeline.run("hi", model=f"model-{i}")
        metrics = await anyio.to_thread.run_sync(_scrape, exporter.url)
    assert EMAIL not in metrics
    lines = [ln for ln in metrics.splitlines() if ln.startswith("stagecache_requests")]
    models = {ln.split('gen_ai_request_model="')[1].split('"')[0] for ln in lines}
    assert len(models) <= LABEL_LIMIT + 1
    assert "other" in models and "model-0" in models


def _scrape(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


# -- stdout: the library never writes to it -----------------------------------------

_SCRIPT = textwrap.dedent(
    """
    import sys, anyio, logging
    if sys.argv[1] == "basic":
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    import stagecache
    from stagecache.errors import LLMError, StageError
    from stagecache.testing import ScriptedLLM

    def fails(prompt):
        raise LLMError("upstream said no")

    async def main():
        pipeline = stagecache.Pipeline.default(llm=ScriptedLLM(fails))
        async with pipeline:
            try:
                await pipeline.run("how do I reset my password?")  # no user id
            except StageError:
                pass

    anyio.run(main)
    """
)


def _run_script(mode: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )


def test_the_library_writes_nothing_to_stdout_or_stderr_by_default() -> None:
    done = _run_script("silent")
    assert done.stdout == ""
    noise = [ln for ln in done.stderr.splitlines() if "stagecache" in ln.lower()]
    ours = ("cache skipped", "stage failed", "[debug]", "[warning]")
    noise += [ln for ln in done.stderr.splitlines() if any(s in ln for s in ours)]
    assert not noise, done.stderr


def test_with_basic_config_records_arrive_on_the_stagecache_logger() -> None:
    done = _run_script("basic")
    assert done.stdout == ""
    assert "DEBUG:stagecache.cache:cache skipped" in done.stderr, done.stderr
    assert "WARNING:stagecache.pipeline:stage failed" in done.stderr, done.stderr


@pytest.mark.anyio
async def test_records_reach_the_stdlib_stagecache_logger_in_process(
    embedder: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pipeline = build(llm=ScriptedLLM(lambda p: "ok"), embedder=embedder)
    with caplog.at_level(logging.DEBUG, logger="stagecache"):
        async with pipeline:
            await pipeline.run("no user id here")
    skipped = [r for r in caplog.records if r.getMessage().startswith("cache skipped")]
    assert skipped and skipped[0].name == "stagecache.cache"
    assert skipped[0].levelno == logging.DEBUG
    assert skipped[0].filename == "_cacheops.py"  # the line that logged, not structlog
    fields = {"event": "cache skipped", "reason": "no_user_id"}
    assert skipped[0].stagecache_fields == fields
    assert capsys.readouterr().out == ""


def test_importing_stagecache_leaves_the_hosts_structlog_config_alone() -> None:
    script = textwrap.dedent(
        """
        import structlog
        before = structlog.get_config()
        import stagecache, stagecache.exporters, stagecache.pipeline
        after = structlog.get_config()
        assert before == after, (before, after)
        assert stagecache.Pipeline
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)


@pytest.mark.anyio
async def test_the_hosts_structlog_processors_never_see_our_records(
    embedder: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = build(llm=ScriptedLLM(lambda p: "ok"), embedder=embedder)
    # The host's own structlog set-up (capture_logs configures it globally).
    with structlog.testing.capture_logs() as host_records:
        async with pipeline:
            await pipeline.run("no user id here")
    assert not [r for r in host_records if r.get("event") == "cache skipped"]
    assert capsys.readouterr().out == ""


def test_an_echo_quoted_as_json_is_removed_when_messages_are_opted_in() -> None:
    from stagecache.exporters import safe_error_message

    prompt = 'Café "Quince Lane"\nflat fourteen-b, call me'
    body = json.dumps({"error": {"message": f"bad input: {prompt}"}})
    exc = LLMError(f"Error code: 400 - {body}", status_code=400)
    message = safe_error_message(exc, record_messages=True, texts=[prompt])
    assert message.startswith("Error code: 400 - ")
    assert "[request text]" in message
    assert not _leaks(message) and "Caf" not in message, message


class _PluginStage:
    """A third-party stage that opens its own span and fails inside it."""

    name = "plugin"
    failure_policy = "continue"
    timeout_s = None

    def __init__(self) -> None:
        self.tracer: Any = None

    async def __call__(self, turn: Any) -> Any:
        with self.tracer.start_as_current_span("plugin.lookup"):
            raise RuntimeError(f"vendor API rejected {turn.query!r}")


@pytest.mark.anyio
async def test_a_plugin_span_records_an_escaping_error_without_its_message() -> None:
    spans = capture_spans()
    stage = _PluginStage()
    pipeline = stagecache.Pipeline([stage], tracer_provider=spans.provider)
    stage.tracer = pipeline.tracer
    async with pipeline:
        result = await pipeline.run(PROMPT, caller=DANA)
    assert result.errors  # the caller still sees what failed
    (span,) = spans.named("plugin.lookup")
    assert span.status.description == "RuntimeError"
    (event,) = span.events
    assert (event.attributes or {})["exception.type"] == "RuntimeError"
    assert not _leaks(_span_text(spans)), _span_text(spans)
