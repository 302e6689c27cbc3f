"""The output guard stage: redacts PII and secrets from the answer.

It runs on whatever answer the turn has, cached or fresh, before the store stage
and before the caller sees it. A fresh answer it redacted is never stored (the
finding makes the store stage skip it).
Matches become ``[REDACTED:LABEL]``; the detectors are those of
:class:`~stagecache.guards.PiiRedactor`, documented in ``docs/guards.md``. For each
kind found the stage records a ``GuardFinding(action="redact", detail=<count>)`` and
publishes ``GuardRedacted``. Redaction is idempotent: a cached answer that was
redacted when stored comes out unchanged, with no new findings.

Failure policy ``refuse``: if redaction crashes or times out, the caller gets a
refusal, never the unredacted answer.
"""

from __future__ import annotations

from typing import Protocol, Self

import anyio.to_thread
import msgspec

from stagecache._model import GuardFinding, Turn
from stagecache._validate import CheckNumbers, Seconds
from stagecache.guards import PatternSpec, PiiRedactor, Redaction
from stagecache.pipeline._events import EventBus, GuardRedacted
from stagecache.types import FailurePolicy

__all__ = ["OutputGuard", "OutputGuardConfig"]

# Above this many characters redaction runs in a worker thread (about a
# millisecond of regex work; a 1 KB answer takes tens of microseconds inline).
_OFFLOAD_CHARS = 32_000


class OutputGuardConfig(
    msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Config of the ``output_guard`` stage.

    Attributes:
        disable: detector ids to switch off (see ``docs/guards.md``).
        extra_patterns: more detectors: ``{id = "...", pattern = "...", label =
            "..."}``; they run before the built-in ones.
        timeout_s: the longest the guard may take (None: no limit).
    """

    disable: list[str] = []
    extra_patterns: list[PatternSpec] = []
    timeout_s: Seconds | None = None


class _HasEvents(Protocol):
    events: EventBus


class OutputGuard:
    """Replaces PII and secrets in ``turn.answer`` with ``[REDACTED:LABEL]``.

    Args:
        config: the stage config (defaults when None).
        events: the bus that receives ``GuardRedacted``; None publishes nothing.

    Raises:
        ConfigError: an unknown id in ``disable`` or a bad entry in
            ``extra_patterns`` (the message names the field and the pattern).
    """

    __slots__ = ("_config", "_events", "_redactor", "timeout_s")
    Config = OutputGuardConfig
    name = "output_guard"
    failure_policy: FailurePolicy = "refuse"

    def __init__(
        self, config: OutputGuardConfig | None = None, *, events: EventBus | None = None
    ) -> None:
        config = config or OutputGuardConfig()
        self._config = config
        self._redactor = PiiRedactor(
            extra=config.extra_patterns, disable=config.disable
        )
        self._events = events
        self.timeout_s = config.timeout_s

    @classmethod
    def from_config(cls, config: OutputGuardConfig, ctx: _HasEvents) -> Self:
        """Build the stage from its config and the pipeline's build context."""
        return cls(config, events=ctx.events)

    @property
    def config(self) -> OutputGuardConfig:
        """The config in force."""
        return self._config

    @property
    def redactor(self) -> PiiRedactor:
        """The compiled detectors."""
        return self._redactor

    async def __call__(self, turn: Turn) -> Turn:
        """Redact the turn's answer in place; record what was redacted."""
        answer = turn.answer
        if not answer:
            return turn
        result: Redaction
        if len(answer) > _OFFLOAD_CHARS:
            result = await anyio.to_thread.run_sync(self._redactor.redact, answer)
        else:
            result = self._redactor.redact(answer)
        if not result.counts:
            return turn
        turn.answer = result.text
        for rule, count in result.counts.items():
            turn.findings.append(GuardFinding(self.name, rule, "redact", str(count)))
            if self._events is not None:
                self._events.publish(
                    GuardRedacted(
                        stage=self.name,
                        rule=rule,
                        count=count,
                        request_id=turn.request_id,
                    )
                )
        return turn
