"""The prompt-injection scanner: applies the rule set to one text at a time.

A text is matched in several views, each with the same rules (``_rules``): the
canonical view, a leetspeak view, a view with words spelled out letter by letter
joined ("I g n o r e" reads "ignore"), its ROT13 (override, role and leak rules), the
text hidden in Unicode tag characters, and base64 and hex payloads decoded to
text. Bidi controls and words split by zero-width characters are findings of their
own. The scanner reports the first rule broken; the rule set is documented in
``docs/guards.md``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from stagecache._regex import compile_config_regex
from stagecache.errors import ConfigError
from stagecache.guards._normalize import (
    canonical,
    decode_tag_runs,
    has_bidi_controls,
    hidden_text_score,
    leet_view,
    rot13,
    spaced_view,
)
from stagecache.guards._rules import BUILTIN_RULES, Rule, RuleSpec

__all__ = ["Detection", "InjectionScanner"]


@dataclass(frozen=True, slots=True)
class Detection:
    """What the scanner found.

    Attributes:
        rule: the id of the rule that matched.
        excerpt: the matched text (canonical view, at most 80 characters).
        via: for a hidden payload, the rule its decoded text broke; for the
            leetspeak view, ``"leet"``; for the spelled-out view, ``"spaced"``;
            else ``""``.
    """

    rule: str
    excerpt: str
    via: str = ""


# A compiled pattern with its rule id and anchor set (empty: always runs).
_Entry = tuple[str, re.Pattern[str], frozenset[str]]
# Rules matched against the ROT13 of a text: the override phrases and personas
# that ROT13 is used to smuggle (fewer anchors to test on every text).
_ROT13_RULES = ("override.", "role.jailbreak_persona")

# Encoded payloads: long enough to carry a phrase, capped so a megabyte of base64
# costs a bounded amount of decoding.
_BASE64_RE = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_RE = re.compile(
    r"(?<![0-9A-Za-z])(?:(?:\\x|0[xX])?[0-9a-fA-F]{2}[\x20,:;]{0,2}){12,}"
)
_HEX_PREFIX_RE = re.compile(r"\\x|0[xX]")
_MAX_BLOBS = 32
_MAX_BLOB_CHARS = 16_384
_HIDDEN_TEXT_THRESHOLD = 3
_MIN_HEX_DIGITS = 12
_Decoder = Callable[[str], str | None]


def _printable_text(raw: bytes) -> str | None:
    """``raw`` as text when it looks like language, else None (binary, hashes)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text:
        return None
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\n\t\r")
    return text if printable >= 0.9 * len(text) else None


def _decode_base64(blob: str) -> str | None:
    blob = blob.rstrip("=")
    padded = blob + "=" * (-len(blob) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        return None
    return _printable_text(raw)


def _decode_hex(blob: str) -> str | None:
    digits = "".join(
        ch for ch in _HEX_PREFIX_RE.sub("", blob) if ch in "0123456789abcdefABCDEF"
    )
    if len(digits) % 2:
        digits = digits[:-1]
    try:
        return _printable_text(bytes.fromhex(digits))
    except ValueError:
        return None


class _Table:
    """Patterns with their anchors, and the union of the anchors to test once."""

    __slots__ = ("anchors", "entries")

    def __init__(self, entries: Sequence[_Entry]) -> None:
        self.entries = tuple(entries)
        self.anchors = frozenset().union(*(a for _, _, a in self.entries))

    def match(self, view: str, target: str | None = None) -> Detection | None:
        """Anchors are tested on ``view``; patterns run on ``target`` (or ``view``)."""
        present = {a for a in self.anchors if a in view}
        text = view if target is None else target
        for rule_id, pattern, anchors in self.entries:
            if anchors and anchors.isdisjoint(present):
                continue
            m = pattern.search(text)
            if m is not None:
                return Detection(rule_id, m.group()[:80])
        return None


class InjectionScanner:
    """Applies the enabled rules to one text at a time. Pure and thread-safe.

    Args:
        extra: extra rules from config.
        disable: ids of rules to switch off (built-in or extra).

    Raises:
        ConfigError: an unknown id in ``disable``, a duplicate rule id, or a pattern
            that does not compile (the field names the rule and the pattern).
    """

    __slots__ = ("_enabled", "_loose", "_rot13", "_table", "rules")

    def __init__(
        self, *, extra: Sequence[RuleSpec] = (), disable: Collection[str] = ()
    ) -> None:
        extra_rules = tuple(_compile_spec(i, spec) for i, spec in enumerate(extra))
        ids = [r.id for r in BUILTIN_RULES]
        for i, rule in enumerate(extra_rules):
            if rule.id in ids:
                raise ConfigError(
                    f"rule id {rule.id!r} is already taken; built-in ids: "
                    f"{', '.join(r.id for r in BUILTIN_RULES)}",
                    field=f"extra_rules[{i}].id",
                )
            ids.append(rule.id)
        for i, rule_id in enumerate(disable):
            if rule_id not in ids:
                raise ConfigError(
                    f"unknown rule id {rule_id!r}; valid ids: {', '.join(sorted(ids))}",
                    field=f"disable[{i}]",
                )
        off = frozenset(disable)
        self.rules: tuple[Rule, ...] = tuple(
            r for r in (*BUILTIN_RULES, *extra_rules) if r.id not in off
        )
        self._enabled = frozenset(r.id for r in self.rules)
        entries: list[_Entry] = []
        loose_entries: list[_Entry] = []
        rot_entries: list[_Entry] = []
        for rule in self.rules:
            anchors = rule.anchors or ((),) * len(rule.patterns)
            loose = rule.loose or rule.patterns
            for pattern, anchor, gapless in zip(
                rule.patterns, anchors, loose, strict=True
            ):
                entries.append((rule.id, pattern, frozenset(anchor)))
                loose_entries.append((rule.id, gapless, frozenset(anchor)))
                if rule.id.startswith(_ROT13_RULES):
                    # ROT13 anchors are tested on the plain view, so that the
                    # ROT13 of the text is computed only when it can match.
                    rotated = frozenset(rot13(a) for a in anchor)
                    rot_entries.append((rule.id, pattern, rotated))
        self._table = _Table(entries)
        self._loose = _Table(loose_entries)
        self._rot13 = _Table(rot_entries) if self.enabled("encoding.rot13") else None

    def enabled(self, rule_id: str) -> bool:
        """Whether the rule ``rule_id`` is on."""
        return rule_id in self._enabled

    def scan(self, text: str) -> Detection | None:
        """The first rule ``text`` breaks, or None if it is clean.

        Args:
            text: one message (user text or a tool result).

        Returns:
            A :class:`Detection`, or None.
        """
        if self.enabled("obfuscation.bidi_control") and has_bidi_controls(text):
            return Detection("obfuscation.bidi_control", "bidi control characters")
        hidden = self.enabled("obfuscation.hidden_text")
        if hidden and hidden_text_score(text) >= _HIDDEN_TEXT_THRESHOLD:
            return Detection("obfuscation.hidden_text", "zero-width or tag characters")
        view = canonical(text)
        found = self._table.match(view)
        if found is not None:
            return found
        leet = leet_view(view)
        if leet is not None and (found := self._table.match(leet)) is not None:
            return Detection(found.rule, found.excerpt, "leet")
        if (found := self._spaced(view)) is not None:
            return found
        if hidden:
            for smuggled in decode_tag_runs(text):
                if (inner := self._inner(smuggled)) is not None:
                    return Detection(
                        "obfuscation.hidden_text", inner.excerpt, inner.rule
                    )
        if self._rot13 is not None and self._rot13.anchors:
            inner = self._rot13_match(view)
            if inner is not None:
                return Detection("encoding.rot13", inner.excerpt, inner.rule)
        return self._scan_blobs(text)

    def _spaced(self, view: str) -> Detection | None:
        """A rule broken by the text once its spelled-out words are joined."""
        joined = spaced_view(view)
        if joined is None:
            return None
        found = self._loose.match(joined)
        if found is None and (leet := leet_view(joined)) is not None:
            found = self._loose.match(leet)
        return None if found is None else Detection(found.rule, found.excerpt, "spaced")

    def _rot13_match(self, view: str) -> Detection | None:
        assert self._rot13 is not None
        if not any(a in view for a in self._rot13.anchors):
            return None
        return self._rot13.match(view, rot13(view))

    def _inner(self, decoded: str) -> Detection | None:
        """The rule a decoded payload breaks (in its canonical and leet views)."""
        view = canonical(decoded)
        found = self._table.match(view)
        leet = leet_view(view) if found is None else None
        return found if leet is None else self._table.match(leet)

    def _scan_blobs(self, text: str) -> Detection | None:
        checks: list[tuple[str, re.Pattern[str], _Decoder]] = []
        if self.enabled("encoding.base64"):
            checks.append(("encoding.base64", _BASE64_RE, _decode_base64))
        # Each byte of printable ASCII in hex has a digit (0x20-0x7e), so the hex
        # of a phrase has a dozen or more; most prose has fewer.
        if self.enabled("encoding.hex") and _digits(text) >= _MIN_HEX_DIGITS:
            checks.append(("encoding.hex", _HEX_RE, _decode_hex))
        for rule_id, finder, decode in checks:
            for n, m in enumerate(finder.finditer(text)):
                if n >= _MAX_BLOBS:
                    break
                decoded = decode(m.group()[:_MAX_BLOB_CHARS])
                if decoded is not None and (inner := self._inner(decoded)):
                    return Detection(rule_id, inner.excerpt, inner.rule)
        return None


def _digits(text: str) -> int:
    return sum(text.count(d) for d in "0123456789")


def _compile_spec(index: int, spec: RuleSpec) -> Rule:
    field = f"extra_rules[{index}]"
    if not spec.id or not spec.id.strip():
        raise ConfigError("a rule needs a non-empty id", field=f"{field}.id")
    if not spec.patterns:
        raise ConfigError(
            f"rule {spec.id!r} has no patterns", field=f"{field}.patterns"
        )
    # RE2 (linear time); a pattern matching the empty string would block every
    # message and is refused with the others RE2 does not accept.
    compiled = [
        compile_config_regex(source, field=f"{field}.patterns[{j}]", ignore_case=True)
        for j, source in enumerate(spec.patterns)
    ]
    return Rule(spec.id, spec.description or f"extra rule {spec.id}", tuple(compiled))
