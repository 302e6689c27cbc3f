"""The data that flows through a pipeline: callers, messages, turns and outcomes.

A :class:`Turn` carries one request through the stages. Stages read it, add what
they found (memory context, the query embedding, the cache outcome, the answer,
tool calls, guard findings) and return it. Turns are mutable msgspec Structs: a
stage changes the fields it owns and returns the same object, so the hot path
allocates nothing per stage.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

import msgspec

from stagecache._cachecontrol import CacheControl
from stagecache.errors import InputError

__all__ = [
    "CacheOutcome",
    "CacheStatus",
    "Caller",
    "Candidate",
    "EarlyExit",
    "GuardFinding",
    "Message",
    "Result",
    "ToolCall",
    "ToolSpec",
    "Turn",
    "Usage",
    "Verdict",
    "check_id",
]

CacheStatus = Literal["hit", "miss", "skip", "error", "off"]
Role = Literal["system", "user", "assistant", "tool"]
_ROLES = frozenset(("system", "user", "assistant", "tool"))


#: The longest id (user, session or tenant) accepted, in characters.
ID_MAX_CHARS = 256
# C0 and C1 control characters (Unicode category Cc) and surrogate code points: a
# lone surrogate cannot be encoded as UTF-8, so it would fail every scope hash.
_BAD_ID_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_id(value: object, field: str) -> str | None:
    """``value`` if it is a valid id or None, else an :class:`InputError`.

    An id (user, session, tenant) is a non-empty ``str`` of at most
    :data:`ID_MAX_CHARS` characters, without control characters or lone
    surrogates. Anything else (bytes, numbers, UUIDs, containers) is refused rather
    than converted: ``b"alice"`` would encode as ``"YWxpY2U="`` and share that
    user's scope, a UUID its string form's.

    Args:
        value: the id to check.
        field: the field path named in the error (``"caller.user_id"``).

    Raises:
        InputError: naming ``field`` and the fix.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(
            f"{field}: expected a string or None, got {type(value).__name__}; "
            "convert the id to str yourself (str(uuid), bytes.decode())"
        )
    if not value:
        raise InputError(f"{field}: expected a non-empty string; use None for no id")
    if len(value) > ID_MAX_CHARS:
        raise InputError(
            f"{field}: expected a string of at most {ID_MAX_CHARS} characters, "
            f"got {len(value)}; hash long ids first"
        )
    bad = _BAD_ID_CHARS.search(value)
    if bad is not None:
        raise InputError(
            f"{field}: expected a string without control characters or lone "
            f"surrogates, found U+{ord(bad.group()):04X} at index {bad.start()}"
        )
    return value


class Caller(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who is asking. No ``user_id`` means no caching under a non-shared scope.

    Ids are checked at construction (see :func:`check_id`): each is None or a
    non-empty ``str`` of at most 256 characters without control characters or
    lone surrogates; anything else raises :class:`~stagecache.errors.InputError`
    naming the field (a ``msgspec.ValidationError`` when decoded from JSON).

    Attributes:
        user_id: stable id of the end user; never exported raw in telemetry.
        session_id: conversation id, used by the ``per_session`` scope.
        tenant: optional tenant or workspace id; part of every scope key, of
            memory, of the per-user cap and of ``purge_user``. None is the one
            "no tenant" (the empty string is refused).
        metadata: free-form string labels (not part of any cache key).
    """

    user_id: str | None = None
    session_id: str | None = None
    tenant: str | None = None
    metadata: dict[str, str] = {}

    def __post_init__(self) -> None:
        check_id(self.user_id, "caller.user_id")
        check_id(self.session_id, "caller.session_id")
        check_id(self.tenant, "caller.tenant")


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One chat message."""

    role: str
    content: str


class ToolSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tool the model may call.

    ``read_only_hint=False`` marks a tool that writes: calling it evicts the
    caller's cache scope (when ``invalidate_on_write`` is on), as in MCP's
    tool annotations.
    """

    name: str
    description: str = ""
    read_only_hint: bool = True
    parameters: dict[str, Any] = {}


class ToolCall(msgspec.Struct, forbid_unknown_fields=True):
    """A tool call the model made during a turn."""

    name: str
    arguments: dict[str, Any] = {}
    read_only_hint: bool = True
    result: str | None = None


class GuardFinding(msgspec.Struct, frozen=True):
    """Something a guard found: a blocked rule or a redaction."""

    guard: str
    rule: str
    action: Literal["block", "redact", "flag"]
    detail: str = ""


class Usage(msgspec.Struct):
    """Token usage reported by the model client (zero on a cache hit)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class CacheOutcome(msgspec.Struct):
    """What the cache did for a turn.

    Attributes:
        status: ``hit``, ``miss``, ``skip`` (not cacheable), ``error`` (the cache
            failed and the request went on without it) or ``off`` (no cache stage).
        similarity: cosine of the best candidate (also set on a miss, if any).
        threshold: the cosine floor in force: ``[cache] threshold`` when set
            (a hard floor), else the verifier's own (its calibrated floor; 0.92
            for the cosine rules; 0.95 for an uncalibrated embedder).
        floor: the cosine floor of the rule that decided (the threshold, a
            band's floor, the high band's cosine), or the floor in force when no
            rule was reached.
        score: the verifier's score of the decisive candidate (the learned
            score, or the cosine for the cosine rules); None when no verifier
            judged one.
        entry_id: the id of the entry that answered (hit) or was stored (miss).
        entry_age_s: age of the entry that answered.
        reason: why it was a miss, a skip or an error.
        rule: the verifier's rule that accepted the hit (``high cosine``,
            ``trivially equivalent``, ``combined`` for the learned score,
            ``uncalibrated: ...``) or rejected the last candidate it saw
            (``structural: entity``, ``below threshold: ...``); None when no
            verifier judged one. The whole story: ``pipeline.cache.explain`` /
            ``stagecache explain``.
        stored: whether the answer of this turn was stored.
        metadata: on a hit, the metadata stored with the entry that answered
            (model, token counts, what an adapter kept beside the answer).
    """

    status: CacheStatus = "off"
    similarity: float | None = None
    threshold: float | None = None
    floor: float | None = None
    score: float | None = None
    entry_id: str | None = None
    entry_age_s: float | None = None
    reason: str | None = None
    rule: str | None = None
    stored: bool = False
    metadata: dict[str, str] = {}

    @property
    def hit(self) -> bool:
        """True when the answer came from the cache."""
        return self.status == "hit"


class Candidate(msgspec.Struct, frozen=True):
    """A cache entry found by the vector search, offered to a verifier."""

    entry_id: str
    query: str
    similarity: float
    answer: str = ""
    hits: int = 0
    created_at: float = 0.0
    metadata: dict[str, str] = {}


class Verdict(msgspec.Struct, frozen=True):
    """A verifier's decision on one candidate.

    Attributes:
        accept: whether the candidate answers the query.
        score: the verifier's score (the learned score, or the cosine for the
            cosine rules).
        reason: the rule that decided (``high cosine``, ``structural: entity``,
            ``uncalibrated: cosine 0.870 < 0.950``).
        floor: the cosine floor that rule applied (None: the floor in force).
    """

    accept: bool
    score: float = 0.0
    reason: str = ""
    floor: float | None = None


class EarlyExit(msgspec.Struct, frozen=True):
    """The value a stage leaves on a turn to end it early (not an error).

    Attributes:
        stage: the stage that ended the turn.
        reason: a short machine-readable reason (``"prompt_injection"``).
        answer: the answer the caller gets (a refusal message).
    """

    stage: str
    reason: str
    answer: str


class Turn(msgspec.Struct, kw_only=True):
    """One request on its way through the stages."""

    caller: Caller
    messages: list[Message]
    model: str = "default"
    instructions: str = ""
    tools: list[ToolSpec] = []
    # The request's other parameters (temperature, response_format, ...), as given;
    # their normalised hash is part of the key (see stagecache._request_params).
    params: dict[str, Any] = {}
    params_fingerprint: str = ""
    uncacheable: str | None = None
    cache_control: CacheControl | None = None
    request_id: str = msgspec.field(default_factory=lambda: uuid.uuid4().hex)
    started_at: float = msgspec.field(default_factory=time.time)
    # Filled in by the stages.
    memory: list[str] = []
    context_fingerprint: str = ""
    embedding: Any = None
    cache: CacheOutcome = msgspec.field(default_factory=CacheOutcome)
    answer: str | None = None
    answer_source: Literal["cache", "llm", "guard"] | None = None
    usage: Usage = msgspec.field(default_factory=Usage)
    # Why the model stopped ("stop", "length", ...); None when the client does not
    # say. The store stage keeps only answers that ended normally.
    finish_reason: str | None = None
    tool_calls: list[ToolCall] = []
    findings: list[GuardFinding] = []
    stopped: EarlyExit | None = None
    errors: list[str] = []
    scratch: dict[str, Any] = {}

    @property
    def query(self) -> str:
        """The text of the last user message (what the cache keys on)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""

    @property
    def history(self) -> list[Message]:
        """Every non-system message but the last user message.

        Tool results or assistant messages *after* the last user message count as
        history too: a turn in the middle of a tool loop is not a plain question.
        """
        last = -1
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i].role == "user":
                last = i
                break
        return [
            m for i, m in enumerate(self.messages) if i != last and m.role != "system"
        ]

    def stop(self, stage: str, reason: str, answer: str) -> Turn:
        """End the turn early with ``answer``; the runner runs no further stage."""
        self.stopped = EarlyExit(stage=stage, reason=reason, answer=answer)
        self.answer = answer
        self.answer_source = "guard"
        return self


class Result(msgspec.Struct, frozen=True):
    """What :meth:`stagecache.Pipeline.run` returns.

    Attributes:
        answer: the post-guard answer (a refusal when the turn was blocked).
        cache: the cache outcome; ``result.cache.hit`` tells whether it was cached.
        blocked: the early exit when a guard ended the turn, else None.
        request_id: the id of the request (also on its root span).
        trace_id: the hex trace id of the request span ("" when tracing is off).
        latency_s: wall time of the whole run.
        usage: token usage of the model call (zero on a hit).
        tool_calls: tool calls made during the turn.
        findings: guard findings (redactions, blocks).
        errors: contained stage failures, as ``"stage: message"`` strings.
    """

    answer: str
    cache: CacheOutcome
    blocked: EarlyExit | None
    request_id: str
    trace_id: str
    latency_s: float
    usage: Usage
    tool_calls: list[ToolCall]
    findings: list[GuardFinding]
    errors: list[str]


def coerce_messages(value: str | list[Message] | list[dict[str, Any]]) -> list[Message]:
    """Turn the ``run()`` input (text or chat messages) into messages.

    Raises:
        InputError: for an empty list, a wrong role, or a non-string content.
    """
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    if not isinstance(value, list) or not value:
        raise InputError(
            "messages: expected a string or a non-empty list of "
            "{'role': ..., 'content': ...} dicts"
        )
    out: list[Message] = []
    for i, item in enumerate(value):
        if isinstance(item, Message):
            message = item
        elif isinstance(item, dict):
            role, content = item.get("role"), item.get("content")
            if content is None:
                content = ""
            if not isinstance(role, str) or not isinstance(content, str):
                raise InputError(
                    f"messages[{i}]: 'role' and 'content' must be strings, "
                    f"got role={role!r}, content of type {type(content).__name__}"
                )
            message = Message(role=role, content=content)
        else:
            raise InputError(
                f"messages[{i}]: expected a dict or a Message, "
                f"got {type(item).__name__}"
            )
        if message.role not in _ROLES:
            raise InputError(
                f"messages[{i}].role: {message.role!r} is not one of "
                f"{', '.join(sorted(_ROLES))}"
            )
        out.append(message)
    if not any(m.role == "user" for m in out):
        raise InputError("messages: at least one message must have role 'user'")
    return out
