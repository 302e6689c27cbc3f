"""PII and secret detectors: each catches its examples and leaves look-alikes
alone; checksums hold; redaction is idempotent; config extends and disables."""

from __future__ import annotations

import pytest

from stagecache.errors import ConfigError
from stagecache.guards import (
    BUILTIN_DETECTORS,
    PatternSpec,
    PiiRedactor,
    iban_valid,
    luhn_valid,
    redaction_token,
)

REDACTOR = PiiRedactor()
_JWT = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)

POSITIVE = [
    (
        "pii.email",
        "Write to john.doe+tag@mail.example.co.uk today.",
        "john.doe+tag@mail.example.co.uk",
    ),
    ("pii.email", "a@b.io", "a@b.io"),
    ("pii.phone", "Call +1 (555) 123-4567 now", "+1 (555) 123-4567"),
    ("pii.phone", "UK office: +44 20 7946 0958.", "+44 20 7946 0958"),
    ("pii.phone", "Paris +33 1 23 45 67 89", "+33 1 23 45 67 89"),
    ("pii.phone", "E.164: +4915112345678", "+4915112345678"),
    ("pii.phone", "US: (555) 123-4567", "(555) 123-4567"),
    ("pii.phone", "US: 555-123-4567", "555-123-4567"),
    ("pii.phone", "US: 555.123.4567", "555.123.4567"),
    ("pii.phone", "US: 1-800-555-0199", "1-800-555-0199"),
    ("pii.card", "Visa 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
    ("pii.card", "MC 5555-5555-5555-4444", "5555-5555-5555-4444"),
    ("pii.card", "Amex 378282246310005", "378282246310005"),
    ("pii.card", "card:4242424242424242.", "4242424242424242"),
    (
        "pii.iban",
        "IBAN DE89 3704 0044 0532 0130 00 please",
        "DE89 3704 0044 0532 0130 00",
    ),
    ("pii.iban", "GB82WEST12345698765432", "GB82WEST12345698765432"),
    (
        "pii.iban",
        "FR14 2004 1010 0505 0001 3M02 606",
        "FR14 2004 1010 0505 0001 3M02 606",
    ),
    ("pii.ssn", "SSN 123-45-6789", "123-45-6789"),
    ("pii.ipv4", "server at 192.168.1.20:8080", "192.168.1.20"),
    ("pii.ipv4", "from 8.8.8.8.", "8.8.8.8"),
    (
        "pii.ipv6",
        "host 2001:db8:85a3::8a2e:370:7334 is up",
        "2001:db8:85a3::8a2e:370:7334",
    ),
    ("pii.ipv6", "link fe80::1ff:fe23:4567:890a%eth0", "fe80::1ff:fe23:4567:890a%eth0"),
    ("pii.ipv6", "addr:2001:db8::1", "2001:db8::1"),
    ("pii.ipv6", "mapped ::ffff:192.0.2.128 here", "::ffff:192.0.2.128"),
    (
        "secret.api_key",
        "key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234",
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234",
    ),
    (
        "secret.api_key",
        "sk-ant-api03-abcdefghijklmnopqrstuv",
        "sk-ant-api03-abcdefghijklmnopqrstuv",
    ),
    ("secret.api_key", "token ghp_" + "a1B2" * 9, "ghp_" + "a1B2" * 9),
    ("secret.api_key", "aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    (
        "secret.api_key",
        "slack xoxb-123456789012-abcdefABCDEF",
        "xoxb-123456789012-abcdefABCDEF",
    ),
    ("secret.api_key", "google AIza" + "x" * 35, "AIza" + "x" * 35),
    ("secret.api_key", "stripe sk_live_" + "a" * 24, "sk_live_" + "a" * 24),
    ("secret.jwt", f"jwt {_JWT}", _JWT),
    (
        "secret.bearer",
        "Authorization: Bearer abcdefghijklmnop0123456789",
        "abcdefghijklmnop0123456789",
    ),
    (
        "secret.private_key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
    ),
]

NEGATIVE = [
    "Python 3.11.7 was released in 2023.",
    "Version 10.0.19041 of Windows; build 22621.",
    "Order 12345 shipped on 2024-01-15 at 12:30:45.",
    "Call extension 4567 or room 101.",
    "Bind to 0.0.0.0 or 127.0.0.1, netmask 255.255.255.0.",
    "Loopback ::1 and unspecified ::.",
    "std::vector<int> and a::b and Foo::Bar::baz",
    "Card-like but invalid: 4111 1111 1111 1112",
    "Timestamp 1700000000000 ms",
    "The ratio was 3:2:1 and the MAC 00:1a:2b:3c:4d:5e.",
    "IBAN-like but invalid: DE89 3704 0044 0532 0130 02",
    "SSN-like but invalid: 000-12-3456 and 666-12-3456",
    "pi is 3.14159265358979323846",
    "use the @decorator and user@localhost",
    "The Bearer of bad news arrived.",
    "sk-learn is a typo for scikit-learn",
    "price: $1,234,567.89, +5% growth, -3.2 points",
    "ISBN 978-3-16-148410-0",
]


@pytest.mark.parametrize(("detector", "text", "secret"), POSITIVE)
def test_detector_redacts_its_examples(detector: str, text: str, secret: str) -> None:
    result = REDACTOR.redact(text)
    assert secret not in result.text
    assert detector in result.counts
    label = next(d.label for d in BUILTIN_DETECTORS if d.id == detector)
    assert redaction_token(label) in result.text


@pytest.mark.parametrize("text", NEGATIVE)
def test_look_alikes_are_left_alone(text: str) -> None:
    result = REDACTOR.redact(text)
    assert result.text == text
    assert result.counts == {}


def test_every_detector_has_a_positive_example() -> None:
    assert {d.id for d in BUILTIN_DETECTORS} <= {d for d, _, _ in POSITIVE}


def test_bearer_keeps_the_scheme_word() -> None:
    result = REDACTOR.redact("Authorization: Bearer abcdefghijklmnop0123456789")
    assert result.text == "Authorization: Bearer [REDACTED:TOKEN]"


def test_counts_are_per_detector() -> None:
    result = REDACTOR.redact("a@b.io, c@d.io and 10.0.0.7")
    assert result.counts == {"pii.email": 2, "pii.ipv4": 1}
    assert result.text == "[REDACTED:EMAIL], [REDACTED:EMAIL] and [REDACTED:IP]"


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111111",
        "5555 5555 5555 4444",
        "378282246310005",
        "6011-1111-1111-1117",
        "79927398713",
    ],
)
def test_luhn_accepts_valid_numbers(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize(
    "number", ["4111111111111112", "1234567812345678", "79927398710", "7", ""]
)
def test_luhn_rejects_invalid_numbers(number: str) -> None:
    assert not luhn_valid(number)


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "gb82 west 1234 5698 7654 32",
        "NL91ABNA0417164300",
        "FR1420041010050500013M02606",
    ],
)
def test_iban_accepts_valid_ibans(iban: str) -> None:
    assert iban_valid(iban)


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 02",  # bad check digits
        "GB82WEST1234569876543",  # too short for the checksum to hold
        "1234567890123456",  # no country code
        "DE8937040044053201300000000000000000",  # too long
        "DE89-3704-0044",
    ],
)
def test_iban_rejects_invalid_ibans(iban: str) -> None:
    assert not iban_valid(iban)


def test_redaction_is_idempotent_on_the_examples() -> None:
    for _, text, _ in POSITIVE:
        once = REDACTOR.redact(text)
        twice = REDACTOR.redact(once.text)
        assert twice.text == once.text
        assert twice.counts == {}


def test_extra_pattern_runs_before_builtins() -> None:
    redactor = PiiRedactor(
        extra=[
            PatternSpec(
                id="acme.employee", pattern=r"\bEMP-\d{6}\b", label="EMPLOYEE_ID"
            )
        ]
    )
    result = redactor.redact("Employee EMP-123456, mail x@y.io")
    assert result.text == "Employee [REDACTED:EMPLOYEE_ID], mail [REDACTED:EMAIL]"
    assert list(result.counts) == ["acme.employee", "pii.email"]


def test_disabled_detector_keeps_its_matches() -> None:
    redactor = PiiRedactor(disable=["pii.ipv4", "pii.email"])
    text = "host 10.1.2.3, mail a@b.io, call +1 555 123 4567"
    result = redactor.redact(text)
    assert "10.1.2.3" in result.text and "a@b.io" in result.text
    assert "[REDACTED:PHONE]" in result.text


def test_unknown_disabled_id_lists_the_valid_ids() -> None:
    with pytest.raises(ConfigError) as info:
        PiiRedactor(disable=["pii.nope"])
    assert info.value.field == "disable[0]"
    assert "pii.email" in str(info.value)


def test_bad_regex_names_the_field_and_the_pattern() -> None:
    with pytest.raises(ConfigError) as info:
        PiiRedactor(extra=[PatternSpec(id="x.bad", pattern="[a-", label="BAD")])
    assert info.value.field == "extra_patterns[0].pattern"
    assert "extra_patterns[0].pattern" in str(info.value)
    assert "[a-" in str(info.value)


@pytest.mark.parametrize("label", ["lower", "HAS SPACE", "", "X]Y", "1ABC"])
def test_bad_label_is_refused(label: str) -> None:
    with pytest.raises(ConfigError) as info:
        PiiRedactor(extra=[PatternSpec(id="x.l", pattern="abc", label=label)])
    assert info.value.field == "extra_patterns[0].label"


def test_pattern_matching_a_replacement_token_is_refused() -> None:
    # It would redact its own output, so redacting twice would differ.
    with pytest.raises(ConfigError, match="replacement token"):
        PiiRedactor(extra=[PatternSpec(id="x.t", pattern=r"REDACTED", label="T")])


@pytest.mark.parametrize("pattern", [r"\d*", r"\b", r"(?=a)"])
def test_pattern_with_empty_matches_is_refused(pattern: str) -> None:
    # Lookaround is refused by RE2 itself (no lookaround: linear matching).
    with pytest.raises(ConfigError, match=r"empty string|RE2 accepts"):
        PiiRedactor(extra=[PatternSpec(id="x.e", pattern=pattern, label="E")])


def test_duplicate_detector_id_is_refused() -> None:
    with pytest.raises(ConfigError, match="already taken"):
        PiiRedactor(extra=[PatternSpec(id="pii.email", pattern="abc", label="E")])
