"""The output guard on a stream: redact text as it arrives, hold back only what a
detector could still match.

A streamed answer reaches the caller piece by piece, but a detector's match can
span pieces (``bob@exa`` + ``mple.com``). :class:`StreamRedactor` keeps the text
that is not yet safe to release and releases the rest, redacted:

- the *hold point* is the earliest start of a candidate that more text could still
  turn into a match (or into a longer one): every detector's pattern is searched
  with the ``regex`` package's partial matching (``partial=True``: a match cut off
  by the end of the text) over every start (``overlapped=True``); the pattern is
  followed by ``(?!)`` so that no complete match hides a partial one, and a match
  that ends at the end of the text counts too (``bob@example.co`` may go on as
  ``.uk``, a card may get more digits). Validators are not consulted: a candidate
  that fails its check now may pass with more text;
- the hold point moves back before the start of any (unvalidated) match that
  would cross it, and of any match of the text before it that ends so close to
  it that its lookahead would see the end of the text instead of what follows
  (``+1 555 123 4567`` is no phone number before ``DE89``); what lies before it
  is then settled: no present or future match crosses it. It is redacted
  together with the end of the text released before it (at least
  :data:`CONTEXT_CHARS` characters, from a whitespace on: a lookbehind such as
  ``Bearer `` or the left-boundary checks see the same context as on the whole
  text), and the redacted context is cut off again;
- detectors run one after another, each on the output of those before (a
  replacement can open a match for a later one), so the redacted prefix must
  also be a settled prefix of the redaction of all the text known so far (the
  same hold-point test on the redacted text); otherwise nothing is released yet.

So the concatenation of what is released equals ``PiiRedactor.redact`` of the
whole answer (tests/guards/test_guard_streaming.py splits e-mails, cards, IBANs,
phone numbers and tokens at every boundary). A config pattern the ``regex`` package
cannot compile (RE2 syntax it lacks) makes the redactor hold everything until the
end: correct, not live. Text held longer than :data:`MAX_HELD_CHARS` (an open PEM
block) is not rescanned per piece; it is released at the end.
"""

from __future__ import annotations

from typing import Any

import regex

from stagecache.guards._pii import PiiRedactor, Redaction

__all__ = ["CONTEXT_CHARS", "MAX_CONTEXT_CHARS", "MAX_HELD_CHARS", "StreamRedactor"]

#: Characters of released text redacted again as the left context of the next piece.
CONTEXT_CHARS = 64
#: The longest left context (a run this long without whitespace is cut anyway).
MAX_CONTEXT_CHARS = 4096
#: Above this many held characters the hold point is no longer recomputed.
MAX_HELD_CHARS = 20_000
# The longest lookahead of a built-in detector (``(?!\.\d)``); config patterns
# (RE2) have none.
_LOOKAHEAD = 2
# A partial-match search that takes longer than this (seconds) holds the text.
_SEARCH_TIMEOUT_S = 0.25


def _compile(pattern: Any) -> tuple[Any, Any] | None:
    """``pattern`` compiled by ``regex``: as it is, and for partial matching
    (``(?!)`` never matches, so only partial matches are found: every path that
    reaches the end of the text is one, and no complete match wins over it).
    None: ``regex`` cannot compile it."""
    source = getattr(pattern, "pattern", None)
    if not isinstance(source, str):
        return None
    try:
        return (
            regex.compile(source, regex.V0),
            regex.compile(f"(?:{source})(?!)", regex.V0),
        )
    except (regex.error, TypeError, ValueError):
        return None


def _crossing(pattern: Any, window: str, cut: int) -> int | None:
    r"""The start of a match of ``pattern`` that a cut at ``cut`` would change.

    Either a match in ``window`` that crosses the cut, or a match in
    ``window[:cut]`` that ends within :data:`_LOOKAHEAD` characters of it (its
    lookahead, e.g. ``(?![\w-])`` or ``(?!\.\d)``, would see the end of the
    text instead of what follows).
    """
    for m in pattern.finditer(window, overlapped=True, timeout=_SEARCH_TIMEOUT_S):
        if m.start() >= cut:
            break
        if m.end() > cut:
            return int(m.start())
    return _ending_near(pattern, window, cut)


def _ending_near(pattern: Any, window: str, point: int) -> int | None:
    """The start of a match in ``window[:point]`` that ends within
    :data:`_LOOKAHEAD` characters of ``point``, if any."""
    if point <= 0:
        return None
    for m in pattern.finditer(
        window, 0, point, overlapped=True, timeout=_SEARCH_TIMEOUT_S
    ):
        if m.end() >= point - _LOOKAHEAD:
            return int(m.start())
    return None


def _context_of(released: str) -> str:
    """The end of ``released`` kept as the next piece's left context.

    At least :data:`CONTEXT_CHARS` characters, starting right after a whitespace
    (there the detectors' left-boundary checks see the same as on the whole text,
    so the cut-off context cannot make up a match of its own), at most
    :data:`MAX_CONTEXT_CHARS`.
    """
    if len(released) <= CONTEXT_CHARS:
        return released
    floor = max(0, len(released) - MAX_CONTEXT_CHARS)
    end = len(released) - CONTEXT_CHARS
    for i in range(end, floor - 1, -1):
        if released[i].isspace():
            return released[i + 1 :]
    return released[floor:]


class StreamRedactor:
    """Redacts a text that arrives in pieces; see the module docstring.

    Args:
        redactor: the detectors of the output guard.

    Attributes:
        counts: replacements so far, by detector id (as ``Redaction.counts``).
        text: the raw text fed so far.
    """

    __slots__ = ("_context", "_held", "_patterns", "_redactor", "counts", "text")

    def __init__(self, redactor: PiiRedactor) -> None:
        self._redactor = redactor
        compiled = [_compile(d.pattern) for d in redactor.detectors]
        # None: some detector cannot be searched partially; hold everything.
        self._patterns: list[tuple[Any, Any]] | None = [
            c for c in compiled if c is not None
        ]
        if len(self._patterns) < len(compiled):
            self._patterns = None
        self._context = ""
        self._held = ""
        self.counts: dict[str, int] = {}
        self.text = ""

    @property
    def held(self) -> str:
        """The raw text not yet released."""
        return self._held

    def feed(self, piece: str) -> str:
        """Add ``piece``; return the redacted text that is now safe to release.

        Raises:
            Exception: whatever the detectors raise (the caller stops the stream).
        """
        self.text += piece
        self._held += piece
        if self._patterns is None or len(self._held) > MAX_HELD_CHARS:
            return ""
        window = self._context + self._held
        cut = self._hold_point(window) - len(self._context)
        if cut <= 0:
            return ""
        # Detectors run one after another, each on the output of those before:
        # a replacement can make a match of a later one (``.smith@example.com``
        # once the API key before it is a token). So the redacted prefix must also
        # be settled in the redaction of all the text known so far.
        whole = self._redactor.redact(window).text
        prefix = self._redactor.redact(self._context + self._held[:cut])
        if not whole.startswith(prefix.text):
            return ""
        if self._hold_point(whole) < len(prefix.text):
            return ""
        return self._release(cut, prefix)

    def finish(self) -> str:
        """The end of the text: release (redacted) everything still held."""
        if not self._held:
            return ""
        return self._release(len(self._held))

    def _hold_point(self, window: str) -> int:
        """The earliest start in ``window`` of a match more text could change,
        moved back before any match it would cut."""
        assert self._patterns is not None
        try:
            # Where a candidate that more text could complete starts: the text
            # may change there (a replacement token), so a match ending right
            # before it may not stand either.
            starts = {
                int(m.start())
                for _, partial in self._patterns
                for m in partial.finditer(
                    window, partial=True, overlapped=True, timeout=_SEARCH_TIMEOUT_S
                )
            }
            hold = min(starts, default=len(window))
            moved = True
            while moved and hold > 0:
                moved = False
                for whole, _ in self._patterns:
                    if (start := _crossing(whole, window, hold)) is not None:
                        hold, moved = start, True
                    for point in starts:
                        start = _ending_near(whole, window, point)
                        if start is not None and start < hold:
                            hold, moved = start, True
        except TimeoutError:
            return 0
        return hold

    def _release(self, cut: int, after: Redaction | None = None) -> str:
        piece, self._held = self._held[:cut], self._held[cut:]
        context = self._context
        before = self._redactor.redact(context) if context else None
        if after is None:
            after = self._redactor.redact(context + piece)
        if before is None:
            out, counts = after.text, after.counts
        elif after.text.startswith(before.text):
            out = after.text[len(before.text) :]
            counts = {
                k: v - before.counts.get(k, 0)
                for k, v in after.counts.items()
                if v > before.counts.get(k, 0)
            }
        else:  # the context changed meaning: redact the piece on its own
            alone = self._redactor.redact(piece)
            out, counts = alone.text, alone.counts
        for rule, count in counts.items():
            self.counts[rule] = self.counts.get(rule, 0) + count
        self._context = _context_of(context + piece)
        return out
