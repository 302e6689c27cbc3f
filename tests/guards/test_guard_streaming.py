"""The output guard on a stream: what is released, concatenated, is the redaction
of the whole answer, wherever the pieces are cut."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagecache.guards import PatternSpec, PiiRedactor
from stagecache.guards._streaming import StreamRedactor

REDACTOR = PiiRedactor()

SPLIT_TEXTS = {
    "email": "Write to bob.smith@example.co.uk today.",
    "card": "Card 4111 1111 1111 1111 ok",
    "card_dashes": "pay with 5500-0000-0000-0004, thanks",
    "iban": "IBAN DE89 3704 0044 0532 0130 00 thanks",
    "iban_compact": "to GB82WEST12345698765432.",
    "phone": "Call +1 555 123 4567 now",
    "bearer": "Use Bearer abcdefghijklmnopqrstuvwxyz012345 here",
    "ip": "ip 192.168.10.20 and 2001:db8::8a2e:370:7334 x",
    "api_key": "key sk-proj-abcdefghijklmnopqrstuvwxyz1234 end",
    "ssn": "ssn 123-45-6789.",
    "not_pii": "Card 4111 1111 1111 1112 is no card; bob@ is no mail.",
}


def _streamed(pieces: list[str], redactor: PiiRedactor = REDACTOR) -> str:
    stream = StreamRedactor(redactor)
    return "".join(stream.feed(p) for p in pieces) + stream.finish()


@pytest.mark.parametrize("name", sorted(SPLIT_TEXTS))
def test_every_two_piece_split_releases_the_whole_redaction(name: str) -> None:
    text = SPLIT_TEXTS[name]
    want = REDACTOR.redact(text).text
    for cut in range(len(text) + 1):
        assert _streamed([text[:cut], text[cut:]]) == want, (name, cut)


@pytest.mark.parametrize("name", sorted(SPLIT_TEXTS))
def test_one_character_pieces_release_the_whole_redaction(name: str) -> None:
    text = SPLIT_TEXTS[name]
    assert _streamed(list(text)) == REDACTOR.redact(text).text


@pytest.mark.parametrize("name", ["email", "card", "iban"])
def test_no_released_piece_holds_a_part_of_the_pii(name: str) -> None:
    secret = {
        "email": "bob.smith@example.co.uk",
        "card": "4111 1111 1111 1111",
        "iban": "DE89 3704 0044 0532 0130 00",
    }[name]
    text = SPLIT_TEXTS[name]
    for cut in range(len(text) + 1):
        stream = StreamRedactor(REDACTOR)
        released = [stream.feed(text[:cut]), stream.feed(text[cut:]), stream.finish()]
        # Nothing of the secret ever leaves, not even the part before the cut.
        for piece in released:
            assert secret[:4] not in piece, (cut, released)
        assert "[REDACTED:" in "".join(released)


def test_text_without_candidates_is_released_as_it_comes() -> None:
    stream = StreamRedactor(REDACTOR)
    assert stream.feed("Hello") == ""  # could still become hello@example.com
    assert stream.feed(" world, ") == "Hello world, "
    assert stream.feed("bye") == ""
    assert stream.finish() == "bye"


def test_counts_add_up_to_those_of_the_whole_text() -> None:
    text = "a@example.com and b@example.org, card 4111 1111 1111 1111."
    stream = StreamRedactor(REDACTOR)
    for ch in text:
        stream.feed(ch)
    stream.finish()
    assert stream.counts == REDACTOR.redact(text).counts
    assert stream.text == text


def test_a_config_pattern_is_held_across_pieces() -> None:
    redactor = PiiRedactor(
        extra=[PatternSpec(id="emp", pattern=r"EMP-\d{6}", label="EMPLOYEE_ID")]
    )
    text = "ask EMP-123456 about it"
    want = redactor.redact(text).text
    assert "[REDACTED:EMPLOYEE_ID]" in want
    for cut in range(len(text) + 1):
        assert _streamed([text[:cut], text[cut:]], redactor) == want


def test_an_open_private_key_is_held_until_it_ends() -> None:
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----"
    stream = StreamRedactor(REDACTOR)
    released = stream.feed("here: " + key[:40])
    assert "BEGIN" not in released
    released += stream.feed(key[40:] + " done")
    released += stream.finish()
    assert released == "here: [REDACTED:PRIVATE_KEY] done"


@pytest.mark.parametrize("name", sorted(SPLIT_TEXTS))
def test_every_three_piece_split_releases_the_whole_redaction(name: str) -> None:
    text = SPLIT_TEXTS[name]
    want = REDACTOR.redact(text).text
    for first in range(len(text) + 1):
        for second in range(first, len(text) + 1):
            pieces = [text[:first], text[first:second], text[second:]]
            assert _streamed(pieces) == want, (name, first, second)


_FRAGMENTS = st.sampled_from(
    [
        "Hello",
        " world",
        ", ",
        ". ",
        "\n",
        "bob.smith@example.co.uk",
        "4111 1111 1111 1111",
        "4111-1111-1111-1112",
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "+1 555 123 4567",
        "(555) 123-4567",
        "192.168.10.20",
        "2001:db8::8a2e:370:7334",
        "Bearer abcdefghijklmnopqrstuvwxyz012345",
        "sk-proj-abcdefghijklmnopqrstuvwxyz1234",
        "123-45-6789",
        "@",
        "-",
        "7",
        "x",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(
    parts=st.lists(_FRAGMENTS, min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_text_in_any_pieces_releases_the_whole_redaction(
    parts: list[str], cuts: list[int]
) -> None:
    text = "".join(parts)
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert _streamed(pieces) == REDACTOR.redact(text).text
