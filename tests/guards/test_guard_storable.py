"""The rules that keep unfit answers out of the cache: finish reasons and transient
error texts (the store stage applies them; tests/security/test_sec_poison.py runs
them through the pipeline)."""

from __future__ import annotations

import pytest

from stagecache.guards._storable import transient_error, unfinished


@pytest.mark.parametrize("reason", [None, "stop", "STOP", "end_turn", "stop_sequence"])
def test_normal_stops_are_finished(reason: str | None) -> None:
    assert not unfinished(reason)


@pytest.mark.parametrize(
    "reason",
    [
        "length",
        "max_tokens",
        "MAX_TOKENS",
        "content_filter",
        "SAFETY",
        "tool_calls",
        "function_call",
        "error",
        "something new",
        "",
    ],
)
def test_other_finish_reasons_are_unfinished(reason: str) -> None:
    assert unfinished(reason)


@pytest.mark.parametrize(
    ("answer", "rule"),
    [
        ("Service temporarily unavailable", "transient.unavailable"),
        ("503 Service Unavailable", "transient.unavailable"),
        ("Sorry, the model is currently overloaded.", "transient.unavailable"),
        ("The server is busy. Try again.", "transient.unavailable"),
        ("Temporarily unavailable.", "transient.unavailable"),
        ("Rate limit exceeded. Retry after 20s.", "transient.rate_limit"),
        ("Error: you have been rate-limited", "transient.rate_limit"),
        ("429 Too Many Requests", "transient.rate_limit"),
        ("Quota exceeded for this API key.", "transient.rate_limit"),
        ("insufficient_quota", "transient.rate_limit"),
        ("Internal Server Error", "transient.server_error"),
        ("HTTP/1.1 502 Bad Gateway", "transient.server_error"),
        ("504 Gateway Time-out", "transient.server_error"),
        ("An unexpected error occurred.", "transient.server_error"),
        ("no healthy upstream", "transient.server_error"),
        ("500", "transient.server_error"),
        ("Error 503", "transient.server_error"),
        ("Sorry, an error occurred. Please try again.", "transient.server_error"),
        ("The request timed out.", "transient.timeout"),
        ("Ѕеrvісе tеmроrаrіlу unаvаіlаblе", "transient.unavailable"),  # Cyrillic
    ],
)
def test_transient_error_texts_are_recognised(answer: str, rule: str) -> None:
    assert transient_error(answer, 300) == rule


@pytest.mark.parametrize(
    "answer",
    [
        "Paris is the capital of France.",
        "Rate limiting protects an API: a token bucket refills at a fixed rate.",
        "HTTP 429 means the client sent too many requests; back off and retry.",
        "The service was temporarily unavailable in 2019 because of a fire.",
        "To handle a 503, retry with exponential backoff and jitter.",
        "Set a timeout on every request so that a hung server cannot block you.",
        "The model answered in 500 ms on average.",
        "In 1929 the market crashed; banks were down for weeks.",
        "Your code raises because an error occurred earlier: x is None.",
        "Check the server logs: the error is in line 42.",
    ],
)
def test_answers_that_discuss_errors_are_not_transient(answer: str) -> None:
    assert transient_error(answer, 300) is None


def test_long_answers_and_a_zero_limit_are_never_checked() -> None:
    text = "Service temporarily unavailable. " + "x" * 400
    assert transient_error(text, 300) is None
    assert transient_error("Service temporarily unavailable", 0) is None
    assert transient_error("", 300) is None
