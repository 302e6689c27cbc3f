"""Foreign error messages in telemetry: withheld by default, redacted when opted in.

An error raised by the model client, the embedder, a backend or a plugin carries a
message written by someone else, and such messages echo user content: an upstream
400 that quotes the prompt, a backend error that names a key. So by default no
foreign message reaches a span, an event or a log record. What telemetry gets:

- ``exception.type`` (the class), the chain of causes (``LLMError <- HTTPError``),
  the HTTP status of an :class:`~stagecache.errors.LLMError`, and the message's
  length: ``"[message withheld: 312 chars] LLMError (status 400)"``;
- ``exception.stacktrace`` with the frames only (file, line, function, code),
  never the messages a formatted traceback would add.

With ``record_error_messages = true`` (``[pipeline]``), the message is kept after
three steps: every run of 8 or more characters that also occurs in one of the
request's own texts (its messages and instructions, raw or JSON-escaped) becomes
``[request text]``; the PII and secret detectors of the output guard redact what is
left; the result is cut to 200 characters, control characters replaced by spaces.

The policy of the request in progress lives in a context variable set by the
runner, so every place that records an error (the runner, the cache stages, spans
of plugins) applies the same one without being handed it.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from stagecache.guards._pii import PiiRedactor

__all__ = [
    "MAX_MESSAGE_CHARS",
    "ErrorPolicy",
    "error_policy",
    "record_error",
    "redact_pii",
    "safe_error_message",
]

#: The longest error message telemetry carries (when messages are opted in).
MAX_MESSAGE_CHARS = 200
#: Shortest run of request text removed from a message.
_ECHO_MIN = 8
#: Messages are scanned up to this length (the cap comes after the scrubbing).
_SCAN_CHARS = 4000
_ECHO_TOKEN = "[request text]"
_CAUSES = 4


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """How errors of the request in progress are described in telemetry.

    Attributes:
        record_messages: keep (scrubbed) messages instead of withholding them.
        texts: the request's own texts, removed from messages when they are kept.
    """

    record_messages: bool = False
    texts: tuple[str, ...] = ()


_DEFAULT = ErrorPolicy()
_POLICY: ContextVar[ErrorPolicy | None] = ContextVar(
    "stagecache_error_policy", default=None
)


@contextmanager
def error_policy(policy: ErrorPolicy) -> Iterator[None]:
    """Apply ``policy`` to every error recorded inside the ``with`` block."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


def _type_name(exc: BaseException) -> str:
    return type(exc).__name__


def _qualified(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes (explicit or implicit), at most a few, no cycles."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < _CAUSES:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return chain


def _status(chain: Sequence[BaseException]) -> int | None:
    for exc in chain:
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    return None


def _summary(exc: BaseException) -> str:
    """The withheld form: length, the chain of types and an HTTP status."""
    chain = _chain(exc)
    text = f"[message withheld: {len(_message(exc))} chars] "
    text += " <- ".join(_type_name(e) for e in chain)
    status = _status(chain)
    return text if status is None else f"{text} (status {status})"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not break error reporting
        return ""


@lru_cache(maxsize=1)
def _redactor() -> PiiRedactor:
    from stagecache.guards._pii import PiiRedactor

    return PiiRedactor()


def redact_pii(text: str) -> str:
    """``text`` with the built-in PII and secret detectors applied."""
    return _redactor().redact(text).text


def _variants(text: str) -> list[str]:
    """``text`` as an upstream may quote it: raw, JSON-escaped, repr()."""
    forms = {
        text,
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        repr(text)[1:-1],
    }
    return [f for f in forms if len(f) >= _ECHO_MIN]


def strip_echo(message: str, texts: Sequence[str]) -> str:
    """``message`` with every run of request text (8+ characters) replaced.

    Args:
        message: the foreign error message.
        texts: the request's own texts.

    Returns:
        The message, each stretch it shares with a text as ``[request text]``.
    """
    if len(message) < _ECHO_MIN or not texts:
        return message
    grams: set[str] = set()
    for text in texts:
        for form in _variants(text):
            grams.update(form[i : i + _ECHO_MIN] for i in range(len(form) - 7))
    if not grams:
        return message
    hidden = [False] * len(message)
    for i in range(len(message) - _ECHO_MIN + 1):
        if message[i : i + _ECHO_MIN] in grams:
            hidden[i : i + _ECHO_MIN] = [True] * _ECHO_MIN
    # A few characters between two stretches (an edited word) go too.
    last = -1
    for i, flag in enumerate(hidden):
        if flag:
            if last >= 0 and 0 < i - last - 1 < 3:
                hidden[last + 1 : i] = [True] * (i - last - 1)
            last = i
    out: list[str] = []
    for i, char in enumerate(message):
        if not hidden[i]:
            out.append(char)
        elif i == 0 or not hidden[i - 1]:
            out.append(_ECHO_TOKEN)
    return "".join(out)


def _scrub(message: str, texts: Sequence[str]) -> str:
    text = strip_echo(message[:_SCAN_CHARS], texts)
    text = redact_pii(text)
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def safe_error_message(
    exc: BaseException,
    *,
    record_messages: bool | None = None,
    texts: Sequence[str] | None = None,
) -> str:
    """What telemetry may say about ``exc``'s message.

    Args:
        exc: the error.
        record_messages: keep the (scrubbed) message; default: the policy of the
            request in progress (withheld outside a request).
        texts: the request's texts to remove; default: the policy's.

    Returns:
        By default the withheld summary (``"[message withheld: 312 chars] LLMError
        (status 400)"``); with messages opted in, the message stripped of request
        text, PII-redacted and cut to :data:`MAX_MESSAGE_CHARS`.
    """
    policy = _POLICY.get() or _DEFAULT
    keep = policy.record_messages if record_messages is None else record_messages
    if not keep:
        return _summary(exc)
    return _scrub(_message(exc), policy.texts if texts is None else texts)


def _frames(exc: BaseException) -> str:
    """A traceback of frames and types only: no message of any exception in it."""
    parts: list[str] = []
    for link in reversed(_chain(exc)):
        frames = "".join(traceback.format_tb(link.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{_qualified(link)}")
    return "\n\nThe above exception led to:\n\n".join(parts) + "\n"


def record_error(span: Span, exc: BaseException, *, escaped: bool = False) -> None:
    """Add an OpenTelemetry ``exception`` event to ``span``, privacy applied.

    Use it instead of ``span.record_exception``, which copies the message (and a
    traceback that repeats it) verbatim.
    """
    if not span.is_recording():
        return
    attributes: dict[str, str | bool | int] = {
        "exception.type": _qualified(exc),
        "exception.message": safe_error_message(exc),
        "exception.stacktrace": _frames(exc),
        "exception.escaped": escaped,
    }
    status = _status(_chain(exc))
    if status is not None:
        attributes["http.response.status_code"] = status
    span.add_event("exception", attributes)
