"""PII and secret detectors, and the redactor that replaces what they find.

A detector is a compiled regex, an optional validator (Luhn for cards, mod-97 for
IBANs, octet and address checks for IPs) and a label; a match becomes
``[REDACTED:LABEL]``. Detectors run one after another in a fixed order (secrets
first, then the shapes that could swallow parts of others: IBAN before card, card
before phone), each on the output of the one before. No built-in pattern matches a
replacement token, and config patterns that would are refused, so redacting twice
gives the same text. The detectors are documented, with examples, in
``docs/guards.md``; keep the two in step.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import msgspec

from stagecache._regex import compile_config_regex
from stagecache.errors import ConfigError

__all__ = [
    "BUILTIN_DETECTORS",
    "Detector",
    "PatternSpec",
    "PiiRedactor",
    "Redaction",
    "iban_valid",
    "luhn_valid",
    "redaction_token",
]

_LABEL_RE = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_DIGIT_RE = re.compile(r"\d")
# Text on which a config pattern must not find an empty match (a zero-width match
# such as ``\b`` would insert a token between every pair of characters).
_PROBE = " a b0 A_1 @.:-"
# A pass that changed the text runs again: a replacement can open a context a
# detector earlier in the order rejected (a lookbehind that saw a word character).
# Real text settles in two passes; the cap bounds a pathological input.
_MAX_PASSES = 4


def redaction_token(label: str) -> str:
    """The text that replaces a match: ``[REDACTED:LABEL]``."""
    return f"[REDACTED:{label}]"


def luhn_valid(number: str) -> bool:
    """Whether the digits of ``number`` pass the Luhn check (separators ignored).

    Args:
        number: a card number, with or without spaces and dashes.

    Returns:
        True when the checksum holds and there are at least two digits.
    """
    digits = [int(ch) for ch in number if ch.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Whether ``iban`` is a well-formed IBAN with a valid mod-97 check (ISO 13616).

    Args:
        iban: the IBAN, spaces allowed, upper or lower case.

    Returns:
        True when it has 15 to 34 characters, starts with a country code and two
        check digits, and the mod-97 remainder is 1.
    """
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum() or not compact.isascii():
        return False
    if not (compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    rearranged = compact[4:] + compact[:4]
    # Letters count as two digits: A = 10 ... Z = 35.
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _clear_left(m: re.Match[str], also: str = "") -> bool:
    """Whether the match starts a token: no word character (or one of ``also``)
    right before it. Checked here rather than with a leading lookbehind, which
    would stop the regex engine from skipping ahead to the first possible
    character (three times slower on ordinary text).
    """
    start = m.start()
    if start == 0:
        return True
    before = m.string[start - 1]
    return not (before.isalnum() or before == "_" or before in also)


def _card_valid(m: re.Match[str]) -> bool:
    match = m.group()
    digits = sum(ch.isdigit() for ch in match)
    return _clear_left(m, "+.-") and 13 <= digits <= 19 and luhn_valid(match)


def _iban_valid(m: re.Match[str]) -> bool:
    return _clear_left(m) and iban_valid(m.group())


def _ssn_valid(m: re.Match[str]) -> bool:
    area, group, serial = m.group().split("-")
    return (
        _clear_left(m, "-")
        and area not in ("000", "666")
        and area[0] != "9"
        and group != "00"
        and serial != "0000"
    )


def _ipv4_valid(m: re.Match[str]) -> bool:
    if not _clear_left(m, "."):
        return False
    # The regex has checked the octets; ipaddress would cost more than the scan.
    octets = [int(part) for part in m.group().split(".")]
    if octets[0] == 127 or not any(octets):
        # 127.0.0.1 and 0.0.0.0 name no one; answers about servers are full of them.
        return False
    # Netmasks (255.255.255.0) are dotted quads too, and identify nothing.
    bits = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]
    inverted = ~bits & 0xFFFFFFFF
    return inverted & (inverted + 1) != 0


def _ipv6_valid(m: re.Match[str]) -> bool:
    match = m.group()
    start = m.start()
    before = m.string[start - 1] if start else " "
    if before == ":":
        # "addr:2001:db8::1" is an address after a label, "a:b:2001::1" is not.
        if start < 2 or not m.string[start - 2].isalpha():
            return False
    elif before.isalnum() or before in "_.":
        return False
    # Require a digit and two non-empty groups: "a::b" or "dead::beef" in prose and
    # code (C++ "e::f") would otherwise count.
    groups = [g for g in match.split("%")[0].split(":") if g]
    if len(groups) < 2 or not any(ch.isdigit() for ch in match):
        return False
    try:
        address = ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified)


def _phone_valid(m: re.Match[str]) -> bool:
    match = m.group()
    if not _clear_left(m, "+" if match.startswith("+") else "+.-"):
        return False
    digits = sum(ch.isdigit() for ch in match)
    # E.164 caps numbers at 15 digits; fewer than 10 is a short code or an
    # extension (international numbers: 8, e.g. some small countries).
    return (8 if match.startswith("+") else 10) <= digits <= 15


@dataclass(frozen=True, slots=True)
class Detector:
    """One kind of PII or secret.

    Attributes:
        id: stable dotted id (``pii.email``), used in findings, events and
            ``disable`` lists.
        label: the replacement is ``[REDACTED:<label>]``.
        description: what it catches, in one line.
        pattern: the compiled regex; the whole match is replaced.
        validate: a check on the match (its text and what precedes it); a match
            that fails it is kept.
        needs: substrings of which one must occur for the detector to run (a cheap
            pre-filter), or empty.
        needs_digit: skip the detector on text without a digit.
    """

    id: str
    label: str
    description: str
    pattern: re.Pattern[str]
    validate: Callable[[re.Match[str]], bool] | None = None
    needs: tuple[str, ...] = ()
    needs_digit: bool = False

    @property
    def token(self) -> str:
        """The replacement text."""
        return redaction_token(self.label)


class PatternSpec(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """An extra detector from config.

    Attributes:
        id: a new detector id (must not clash with a built-in one).
        pattern: the regex; each match is replaced whole.
        label: upper-case label for the token (``EMPLOYEE_ID`` gives
            ``[REDACTED:EMPLOYEE_ID]``).
    """

    id: str
    pattern: str
    label: str


class Redaction(msgspec.Struct, frozen=True):
    """The result of :meth:`PiiRedactor.redact`.

    Attributes:
        text: the redacted text (the input itself when nothing was found).
        counts: matches replaced, by detector id, in detector order.
    """

    text: str
    counts: dict[str, int]


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"

BUILTIN_DETECTORS: tuple[Detector, ...] = (
    Detector(
        "secret.private_key",
        "PRIVATE_KEY",
        "PEM private key blocks (RSA, EC, OpenSSH, PKCS#8, PGP).",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
            r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        ),
        needs=("PRIVATE KEY",),
    ),
    Detector(
        "secret.jwt",
        "JWT",
        "JSON Web Tokens: eyJ<header>.eyJ<payload>.<signature>.",
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
        needs=("eyJ",),
    ),
    Detector(
        "secret.bearer",
        "TOKEN",
        "The token after 'Bearer ' (20+ token characters); 'Bearer ' is kept.",
        re.compile(r"(?:(?<=\b[Bb]earer )|(?<=\bBEARER ))[A-Za-z0-9._~+/-]{20,}=*"),
        needs=("earer ", "EARER "),
    ),
    Detector(
        "secret.api_key",
        "API_KEY",
        "Provider API keys: OpenAI/Anthropic sk-, GitHub ghp_/gho_/github_pat_, AWS "
        "AKIA/ASIA, Slack xox[abprs]-, Google AIza, Stripe sk_live_, GitLab glpat-, "
        "Hugging Face hf_, npm npm_.",
        re.compile(
            r"\bsk-(?:proj-|ant-(?:api\d\d-)?|svcacct-|live-)?[A-Za-z0-9_-]{20,}"
            r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{22,}"
            r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bxox[abprs]-[A-Za-z0-9-]{10,}"
            r"|\bAIza[0-9A-Za-z_-]{35}\b|\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}"
            r"|\bglpat-[0-9A-Za-z_-]{20,}|\bhf_[A-Za-z0-9]{30,}\b|\bnpm_[A-Za-z0-9]{36}\b"
        ),
    ),
    Detector(
        "pii.email",
        "EMAIL",
        "E-mail addresses.",
        re.compile(
            r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
            r"[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
        ),
        needs=("@",),
    ),
    Detector(
        "pii.iban",
        "IBAN",
        "IBANs, compact or in groups of four, with a valid mod-97 check.",
        re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?!\w)"),
        validate=_iban_valid,
        needs_digit=True,
    ),
    Detector(
        "pii.card",
        "CARD",
        "Payment card numbers: 13 to 19 digits (spaces or dashes allowed), first "
        "digit 2-6, valid Luhn check.",
        re.compile(r"[2-6]\d{3}(?:[ -]?\d){9,15}(?![\w-]|\.\d)"),
        validate=_card_valid,
        needs_digit=True,
    ),
    Detector(
        "pii.ssn",
        "SSN",
        "US social security numbers written ddd-dd-dddd (invalid areas excluded).",
        re.compile(r"\d{3}-\d{2}-\d{4}(?![\w-])"),
        validate=_ssn_valid,
        needs_digit=True,
    ),
    Detector(
        "pii.ipv6",
        "IP",
        "IPv6 addresses (validated; loopback ::1 and :: are kept).",
        re.compile(
            # The first character is peeled off the group so that the engine can
            # skip to a hex digit or colon; where the match may start is checked
            # in the validator.
            r"[0-9A-Fa-f:](?:(?<=:)|(?<=[0-9A-Fa-f])[0-9A-Fa-f]{0,3}:)"
            r"(?:[0-9A-Fa-f]{0,4}:){1,6}"
            rf"(?:(?:{_OCTET}\.){{3}}{_OCTET}|[0-9A-Fa-f]{{1,4}})?(?:%[0-9A-Za-z]+)?"
            r"(?![\w:]|\.\d)"
        ),
        validate=_ipv6_valid,
        needs=(":",),
        needs_digit=True,
    ),
    Detector(
        "pii.ipv4",
        "IP",
        "IPv4 addresses with octets 0-255 (loopback, 0.0.0.0 and netmasks are kept).",
        re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.\d)"),
        validate=_ipv4_valid,
        needs_digit=True,
    ),
    Detector(
        "pii.phone",
        "PHONE",
        "Phone numbers: international (+ and 8-15 digits) and US/NANP "
        "(555-123-4567, (555) 123-4567, 555.123.4567, +1 ...).",
        re.compile(
            # Possessive digit runs: a long digit string has one parse, not
            # exponentially many.
            r"\+[1-9]\d*+(?:[ .-]?\(?\d++\)?){0,6}(?![\w]|[.-]\d)"
            r"|(?:1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
            r"(?![\w]|[.-]\d)"
        ),
        validate=_phone_valid,
        needs_digit=True,
    ),
)

_TOKENS = frozenset(d.token for d in BUILTIN_DETECTORS)


class PiiRedactor:
    """Replaces PII and secrets in a text. Pure and thread-safe.

    Args:
        extra: extra detectors from config; they run before the built-in ones, so
            a site-specific format wins over a generic shape.
        disable: ids of detectors to switch off (built-in or extra).

    Raises:
        ConfigError: an unknown id in ``disable``, a duplicate id, a bad label, or
            a pattern that does not compile, matches the empty string or matches a
            replacement token.
    """

    __slots__ = ("detectors",)

    def __init__(
        self, *, extra: Sequence[PatternSpec] = (), disable: Collection[str] = ()
    ) -> None:
        extra_detectors = _compile_specs(extra)
        ids = [d.id for d in (*extra_detectors, *BUILTIN_DETECTORS)]
        for i, detector_id in enumerate(disable):
            if detector_id not in ids:
                raise ConfigError(
                    f"unknown detector id {detector_id!r}; valid ids: "
                    f"{', '.join(sorted(ids))}",
                    field=f"disable[{i}]",
                )
        off = frozenset(disable)
        self.detectors: tuple[Detector, ...] = tuple(
            d for d in (*extra_detectors, *BUILTIN_DETECTORS) if d.id not in off
        )

    def redact(self, text: str) -> Redaction:
        """Replace every match of every enabled detector in ``text``.

        Args:
            text: the answer to clean.

        Returns:
            The redacted text and the number of replacements per detector id.
        """
        counts: dict[str, int] = {}
        for _ in range(_MAX_PASSES):
            changed = self._pass(text, counts)
            if changed is None:
                break
            text = changed
        return Redaction(text, counts)

    def _pass(self, text: str, counts: dict[str, int]) -> str | None:
        """One pass of every detector; the new text, or None if nothing changed."""
        has_digit = _DIGIT_RE.search(text) is not None
        changed = False
        for detector in self.detectors:
            if detector.needs_digit and not has_digit:
                continue
            if detector.needs and not any(n in text for n in detector.needs):
                continue
            new, found = _apply(detector, text)
            if found:
                counts[detector.id] = counts.get(detector.id, 0) + found
                text = new
                changed = True
        return text if changed else None


def _apply(detector: Detector, text: str) -> tuple[str, int]:
    """``text`` with the valid matches of ``detector`` replaced, and their number."""
    validate = detector.validate
    if validate is None:
        return detector.pattern.subn(detector.token, text)
    parts: list[str] = []
    found = 0
    last = 0
    pos = 0
    search = detector.pattern.search
    while (m := search(text, pos)) is not None:
        if validate(m):
            parts.append(text[last : m.start()])
            parts.append(detector.token)
            last = pos = m.end()
            found += 1
        else:
            # A rejected candidate may hide a valid one starting inside it
            # (":2001:db8::1" after "addr").
            pos = m.start() + 1
    if not found:
        return text, 0
    parts.append(text[last:])
    return "".join(parts), found


def _compile_specs(specs: Sequence[PatternSpec]) -> tuple[Detector, ...]:
    builtin_ids = {d.id for d in BUILTIN_DETECTORS}
    seen: set[str] = set()
    out: list[Detector] = []
    for i, spec in enumerate(specs):
        field = f"extra_patterns[{i}]"
        if not spec.id.strip():
            raise ConfigError("a detector needs a non-empty id", field=f"{field}.id")
        if spec.id in builtin_ids or spec.id in seen:
            raise ConfigError(
                f"detector id {spec.id!r} is already taken; built-in ids: "
                f"{', '.join(sorted(builtin_ids))}",
                field=f"{field}.id",
            )
        seen.add(spec.id)
        if _LABEL_RE.fullmatch(spec.label) is None:
            raise ConfigError(
                f"label {spec.label!r} must be 1-32 upper-case letters, digits or "
                "underscores, starting with a letter",
                field=f"{field}.label",
            )
        # RE2 (linear time); refuses patterns that match the empty string.
        pattern = compile_config_regex(spec.pattern, field=f"{field}.pattern")
        if any(m.end() == m.start() for m in pattern.finditer(_PROBE)):
            raise ConfigError(
                f"regex {spec.pattern!r} for detector {spec.id!r} matches the empty "
                "string",
                field=f"{field}.pattern",
            )
        tokens = _TOKENS | {redaction_token(s.label) for s in specs}
        clash = next((t for t in sorted(tokens) if pattern.search(t)), None)
        if clash is not None:
            # It would redact its own output: redaction would not be idempotent.
            raise ConfigError(
                f"regex {spec.pattern!r} for detector {spec.id!r} matches the "
                f"replacement token {clash!r}",
                field=f"{field}.pattern",
            )
        out.append(Detector(spec.id, spec.label, f"extra pattern {spec.id}", pattern))
    return tuple(out)
