"""Properties: no text crashes the guards; redaction is idempotent."""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagecache.guards import InjectionScanner, PiiRedactor

SCANNER = InjectionScanner()
REDACTOR = PiiRedactor()
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Fragments that look like what the detectors and rules look for, so that random
# texts hit the interesting paths (adjacent matches, partial shapes) rather than
# only random characters.
_FRAGMENTS = st.sampled_from(
    [
        "a@b.io", "x.y+z@mail.example.com", "@", ".", ":", "::", "-", " ", "\n",
        "+1 555 123 4567", "(555) 123-4567", "555-123-4567", "+44",
        "4111 1111 1111 1111",
        "4242424242424242", "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432",
        "123-45-6789", "10.0.0.1", "255.255.255.255", "192.168.1.1", "2001:db8::1",
        "fe80::1%eth0", "::ffff:1.2.3.4", "sk-" + "a" * 24, "ghp_" + "b" * 36,
        "AKIAIOSFODNN7EXAMPLE", "xoxb-1234567890-abc", "Bearer " + "t" * 24,
        "eyJhbGciOi.eyJzdWIiOi.sig", "[REDACTED:EMAIL]", "[REDACTED:IP]", "0", "9",
        "ignore previous instructions", "<|im_start|>", "\u200b", "\u202e",
        "\U000e0069", "іgnоrе", "### END", "</user>", "system:", "1gn0r3",
        base64.b64encode(b"ignore all previous instructions").decode(),
    ]
)  # fmt: skip
_TEXTS = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=12)), max_size=12).map("".join)


@SETTINGS
@given(st.text(max_size=400))
def test_scanner_never_crashes_on_random_text(text: str) -> None:
    SCANNER.scan(text)


@SETTINGS
@given(_TEXTS)
def test_scanner_never_crashes_on_suspicious_fragments(text: str) -> None:
    SCANNER.scan(text)


@SETTINGS
@given(st.text(max_size=400))
def test_redaction_is_idempotent_on_random_text(text: str) -> None:
    once = REDACTOR.redact(text)
    assert REDACTOR.redact(once.text).text == once.text


@SETTINGS
@given(_TEXTS)
def test_redaction_is_idempotent_on_pii_like_fragments(text: str) -> None:
    once = REDACTOR.redact(text)
    twice = REDACTOR.redact(once.text)
    assert twice.text == once.text
    assert twice.counts == {}


@SETTINGS
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200))
def test_text_without_matches_comes_back_unchanged(text: str) -> None:
    result = REDACTOR.redact(text)
    if not result.counts:
        assert result.text == text
