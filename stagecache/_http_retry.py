"""Retries of an HTTP call (tenacity), honouring the server's ``Retry-After``.

The OpenAI-compatible chat client and embedder send each request through
:meth:`RetryPolicy.send`: a transport error (timeout, refused connection) or a
retryable status (408, 409, 425, 429, 5xx) is retried up to ``max_retries`` times.
The wait before a retry is exponential backoff with jitter
(``backoff_s * 2**(n-1)`` plus up to ``backoff_s``, capped at ``max_backoff_s``) or,
when the reply says how long to wait (``retry-after-ms``, then ``retry-after`` in
seconds or as an HTTP date), at least that long. A server that asks for more than
``max_retry_after_s`` is not retried: the caller reports it at once instead of
blocking a request for minutes.

Each retry is logged on the ``stagecache.http`` logger (``delay_s``, the status,
the ``retry_after_s`` the server asked for), so an operator sees rate limiting.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

__all__ = ["RETRY_STATUS", "Attempts", "RetryPolicy", "retry_after_s"]

_log = logging.getLogger("stagecache.http")

#: Statuses worth another try: timeouts, conflicts, rate limits, server errors.
RETRY_STATUS = frozenset((408, 409, 425, 429, 500, 502, 503, 504))


def retry_after_s(headers: httpx.Headers, now: float | None = None) -> float | None:
    """The wait a reply asks for, in seconds, or None when it asks for none.

    ``retry-after-ms`` (OpenAI's) wins over ``retry-after``, which is either a
    number of seconds or an HTTP date. Negative values count as 0; unreadable
    values as absent.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(value, 0.0)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT
            return None
        value = when.timestamp() - (time.time() if now is None else now)
    return max(value, 0.0) if math.isfinite(value) else None


def _asked(state: RetryCallState) -> float | None:
    """What the last reply of ``state`` asked to wait (None: no reply, or no ask)."""
    outcome = state.outcome
    if outcome is None or outcome.failed:
        return None
    response = outcome.result()
    return (
        retry_after_s(response.headers)
        if isinstance(response, httpx.Response)
        else None
    )


class _WaitAsked(wait_base):
    """The backoff, or what the server asked when that is longer."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = float(self.backoff(retry_state))
        asked = _asked(retry_state)
        return delay if asked is None else max(delay, asked)


class _StopAskedTooLong(stop_base):
    """Stop when the server asks for a longer wait than ``limit_s``."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        asked = _asked(retry_state)
        return asked is not None and asked > self.limit_s


@dataclass(frozen=True, slots=True)
class Attempts:
    """How a call ended after its attempts.

    Attributes:
        response: the last reply (None when the last attempt raised).
        error: the transport error of the last attempt (None when it answered).
        attempts: how many requests were sent.
        retry_after_s: the wait the last reply asked for, when that was longer
            than the policy allows (the reason the retries stopped early).
    """

    response: httpx.Response | None
    error: httpx.TransportError | None
    attempts: int
    retry_after_s: float | None = None


class RetryPolicy:
    """When and how long to retry an HTTP call.

    Args:
        max_retries: retries after the first attempt.
        backoff_s: the first retry's base delay; it doubles each time (plus up to
            ``backoff_s`` of jitter).
        max_backoff_s: the longest backoff (a server's ``Retry-After`` may be longer).
        max_retry_after_s: the longest ``Retry-After`` honoured; a longer one
            ends the retries.
        sleep: how to wait (default ``anyio.sleep``).
    """

    __slots__ = (
        "backoff_s",
        "max_backoff_s",
        "max_retries",
        "max_retry_after_s",
        "sleep",
    )

    def __init__(
        self,
        *,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
        max_retry_after_s: float,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
    ) -> None:
        for name, value in (
            ("backoff_s", backoff_s),
            ("max_backoff_s", max_backoff_s),
            ("max_retry_after_s", max_retry_after_s),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.sleep = sleep

    def _retrying(self, url: str) -> AsyncRetrying:
        def log_retry(state: RetryCallState) -> None:
            outcome = state.outcome
            status: int | None = None
            error: str | None = None
            if outcome is not None and outcome.failed:
                error = type(outcome.exception()).__name__
            elif outcome is not None:
                status = int(outcome.result().status_code)
            _log.warning(
                "retrying HTTP call",
                extra={
                    "url": url,
                    "attempt": state.attempt_number,
                    "status": status,
                    "error": error,
                    "retry_after_s": _asked(state),
                    "delay_s": state.upcoming_sleep,
                },
            )

        backoff = wait_exponential(
            multiplier=self.backoff_s, max=self.max_backoff_s
        ) + wait_random(0, self.backoff_s)
        return AsyncRetrying(
            sleep=self.sleep,
            stop=stop_after_attempt(self.max_retries + 1)
            | _StopAskedTooLong(self.max_retry_after_s),
            wait=_WaitAsked(backoff),
            retry=retry_if_exception_type(httpx.TransportError)
            | retry_if_result(
                lambda r: (
                    isinstance(r, httpx.Response) and r.status_code in RETRY_STATUS
                )
            ),
            before_sleep=log_retry,
            retry_error_callback=lambda state: state,
        )

    async def send(
        self, url: str, request: Callable[[], Awaitable[httpx.Response]]
    ) -> Attempts:
        """Call ``request()`` (one HTTP request to ``url``) until it may stop.

        Returns:
            The last reply (a success, a status not worth retrying, or the last
            retryable one) or the last transport error, with the attempt count.
            Other exceptions (and cancellation) propagate.
        """
        retrying = self._retrying(url)
        result: httpx.Response | RetryCallState = await retrying(request)
        if isinstance(result, httpx.Response):
            return Attempts(result, None, int(retrying.statistics["attempt_number"]))
        outcome = result.outcome
        assert outcome is not None
        attempts = result.attempt_number
        if outcome.failed:
            exc = outcome.exception()
            assert isinstance(exc, httpx.TransportError)
            return Attempts(None, exc, attempts)
        response = outcome.result()
        asked = retry_after_s(response.headers)
        too_long = (
            asked if asked is not None and asked > self.max_retry_after_s else None
        )
        return Attempts(response, None, attempts, too_long)
