"""What makes an answer unfit to cache, apart from who asked and how.

The store stage asks two questions of a fresh answer here:

- :func:`unfinished`: did the model stop normally? A reply cut by the token limit
  (``length``, ``max_tokens``), by a content filter, or that only called tools is
  not an answer to replay. Only known normal stops are stored; an unknown reason is
  treated as abnormal; a client that reports none (``None``) is trusted.
- :func:`transient_error`: is the "answer" an error message? Some gateways and
  model servers answer ``200 OK`` with a text such as "Service temporarily
  unavailable" or "Rate limit exceeded". A status code or finish reason from the
  client is the reliable signal (a client raises on 429 and 5xx); these rules catch
  what gets past it. They only look at short answers (an error message is short)
  and only at an error phrase that opens the answer, after at most four words
  ("Error:", "Sorry, the", "HTTP 503"), so an answer that *explains* rate limits or
  an outage is still stored.

Both are pure functions; the rule ids are documented in ``docs/guards.md``.
"""

from __future__ import annotations

import re

from stagecache.guards._normalize import canonical

__all__ = ["NORMAL_FINISH", "TRANSIENT_RULES", "transient_error", "unfinished"]

#: Finish reasons that mean the model ended its answer on its own: OpenAI and
#: compatible servers (``stop``), Anthropic (``end_turn``, ``stop_sequence``),
#: Gemini (``STOP``), and text-generation servers (``eos``, ``eos_token``).
NORMAL_FINISH = frozenset({"stop", "end_turn", "stop_sequence", "eos", "eos_token"})

# The error phrase may follow at most four short words ("error:", "sorry, the",
# "http/1.1 503").
_OPENING = r"^[\W_]*(?:[\w./']+[\W_]+){0,4}?"
_SERVICE = (
    r"(?:service|server|servers|api|model|backend|upstream|endpoint|engine|system)"
)

#: ``(rule id, pattern)``: each pattern matches the canonical view (lower case,
#: look-alikes folded) of a short answer, from its start.
TRANSIENT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (rule_id, re.compile(_OPENING + pattern))
    for rule_id, pattern in (
        (
            "transient.unavailable",
            rf"(?:{_SERVICE}[\W_]+(?:is[\W_]+|are[\W_]+)?(?:temporarily[\W_]+"
            r"|currently[\W_]+)?(?:unavailable|overloaded|down\b|busy\b|at capacity"
            r"|over capacity|not available)|service unavailable"
            r"|^[\W_]*(?:temporarily|currently) unavailable)",
        ),
        (
            "transient.rate_limit",
            r"(?:rate[\W_]?limit(?:ed)?\b|too many requests|quota (?:exceeded"
            r"|exhausted)|insufficient[\W_]quota|request limit (?:exceeded|reached))",
        ),
        (
            "transient.server_error",
            r"(?:internal server error|bad gateway|gateway time[\W_]?out"
            r"|^[\W_]*(?:(?:sorry|oops|error)[\W_]+)?an? (?:unexpected |internal"
            r" |unknown )?error (?:has )?occurred"
            r"|no healthy upstream|upstream (?:connect )?error"
            r"|(?:429|500|502|503|504)[\W_]*(?:error\b|$))",
        ),
        (
            "transient.timeout",
            r"(?:(?:the )?(?:request|connection|operation|call|generation) (?:has )?"
            r"timed out|timeout (?:error|exceeded))",
        ),
    )
)


def unfinished(finish_reason: str | None) -> bool:
    """Whether ``finish_reason`` says the model did not end its answer normally.

    Args:
        finish_reason: as reported by the model client; None when it reports none.
    """
    if finish_reason is None:
        return False
    return finish_reason.strip().lower() not in NORMAL_FINISH


def transient_error(answer: str, max_chars: int) -> str | None:
    """The id of the rule by which ``answer`` reads as a transient error, or None.

    Args:
        answer: the answer text.
        max_chars: only answers at most this long are checked (0: never).
    """
    if not answer or len(answer) > max_chars:
        return None
    view = canonical(answer.strip())
    for rule_id, pattern in TRANSIENT_RULES:
        if pattern.search(view) is not None:
            return rule_id
    return None
