"""The input guard stage: blocks prompt injection and oversize input.

It runs first in the chain and checks what the caller controls: every user message
and, unless ``scan_tool_results`` is off, tool results (``tool`` messages and the
results of tool calls already on the turn). The system instructions are the
operator's and are never scanned. The rules are those of
:class:`~stagecache.guards.InjectionScanner`, documented in ``docs/guards.md``.

A blocked request ends with ``turn.stop(name, "prompt_injection" | "oversize",
refusal)``: the runner runs no further stage, the caller gets the refusal. The
stage also records a ``GuardFinding(action="block")`` and publishes
``GuardBlocked``. With ``action = "flag"`` it records a ``flag`` finding and lets
the request through (shadow mode, to measure a new rule before it blocks).

Failure policy ``refuse``: if the guard itself crashes or times out, the request is
refused rather than let through unchecked.
"""

from __future__ import annotations

from typing import Literal, Protocol, Self

import anyio.to_thread
import msgspec

from stagecache._model import GuardFinding, Turn
from stagecache._validate import Chars, CheckNumbers, Seconds
from stagecache.guards import Detection, InjectionScanner, RuleSpec
from stagecache.pipeline._events import EventBus, GuardBlocked
from stagecache.types import FailurePolicy

__all__ = ["InputGuard", "InputGuardConfig"]

# Above this many characters the scan runs in a worker thread: a 32,000-character
# history takes milliseconds of regex work, too long to hold the event loop.
_OFFLOAD_CHARS = 8_000
_OVERSIZE = "input.oversize"


class InputGuardConfig(
    msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Config of the ``input_guard`` stage.

    Attributes:
        max_chars: the most characters all user messages together may have.
        disable: rule ids to switch off (see ``docs/guards.md``).
        extra_rules: more rules: ``{id = "...", patterns = ["..."]}``.
        scan_tool_results: also scan tool results (indirect injection).
        action: ``block`` ends the turn; ``flag`` only records a finding.
        refusal: the answer a blocked injection gets.
        oversize_refusal: the answer an oversize request gets.
        timeout_s: the longest the guard may take (None: no limit).
    """

    max_chars: Chars = 32_000
    disable: list[str] = []
    extra_rules: list[RuleSpec] = []
    scan_tool_results: bool = True
    action: Literal["block", "flag"] = "block"
    refusal: str = "Sorry, I can't help with that request."
    oversize_refusal: str = "Sorry, that request is too long for me to process."
    timeout_s: Seconds | None = None


class _HasEvents(Protocol):
    events: EventBus


class InputGuard:
    """Blocks prompt-injection attempts and oversize input before anything runs.

    Args:
        config: the stage config (defaults when None).
        events: the bus that receives ``GuardBlocked``; None publishes nothing.

    Raises:
        ConfigError: a bad ``max_chars``, an unknown id in ``disable`` or a bad
            regex in ``extra_rules`` (the message names the field and pattern).
    """

    __slots__ = ("_config", "_events", "_scanner", "timeout_s")
    Config = InputGuardConfig
    name = "input_guard"
    failure_policy: FailurePolicy = "refuse"

    def __init__(
        self, config: InputGuardConfig | None = None, *, events: EventBus | None = None
    ) -> None:
        config = config or InputGuardConfig()
        self._config = config
        self._scanner = InjectionScanner(
            extra=config.extra_rules, disable=config.disable
        )
        self._events = events
        self.timeout_s = config.timeout_s

    @classmethod
    def from_config(cls, config: InputGuardConfig, ctx: _HasEvents) -> Self:
        """Build the stage from its config and the pipeline's build context."""
        return cls(config, events=ctx.events)

    @property
    def config(self) -> InputGuardConfig:
        """The config in force."""
        return self._config

    @property
    def scanner(self) -> InjectionScanner:
        """The compiled rule set."""
        return self._scanner

    async def __call__(self, turn: Turn) -> Turn:
        """Check the turn; stop it (or flag it) if a rule matches."""
        if turn.stopped is not None:
            return turn
        texts = self._texts(turn)
        user_chars = sum(len(m.content) for m in turn.messages if m.role == "user")
        if user_chars > self._config.max_chars and self._scanner.enabled(_OVERSIZE):
            detail = f"{user_chars} characters > max_chars {self._config.max_chars}"
            return self._found(turn, _OVERSIZE, "oversize", detail)
        if sum(len(text) for _, text in texts) > _OFFLOAD_CHARS:
            hit = await anyio.to_thread.run_sync(self.check, texts)
        else:
            hit = self.check(texts)
        if hit is None:
            return turn
        where, detection = hit
        via = f" via {detection.via}" if detection.via else ""
        detail = f"{where}{via}: {detection.excerpt!r}"
        return self._found(turn, detection.rule, "prompt_injection", detail)

    def check(self, texts: list[tuple[str, str]]) -> tuple[str, Detection] | None:
        """The first rule broken by any of ``texts``, with where it was found.

        Args:
            texts: ``(where, text)`` pairs, e.g. ``("messages[0]", "...")``.

        Returns:
            ``(where, detection)``, or None when every text is clean.
        """
        for where, text in texts:
            detection = self._scanner.scan(text)
            if detection is not None:
                return where, detection
        return None

    def _texts(self, turn: Turn) -> list[tuple[str, str]]:
        roles = ("user", "tool") if self._config.scan_tool_results else ("user",)
        texts = [
            (f"messages[{i}]", m.content)
            for i, m in enumerate(turn.messages)
            if m.role in roles and m.content
        ]
        if self._config.scan_tool_results:
            texts.extend(
                (f"tool_calls[{i}].result", call.result)
                for i, call in enumerate(turn.tool_calls)
                if call.result
            )
        return texts

    def _found(self, turn: Turn, rule: str, reason: str, detail: str) -> Turn:
        if self._config.action == "flag":
            turn.findings.append(GuardFinding(self.name, rule, "flag", detail))
            return turn
        turn.findings.append(GuardFinding(self.name, rule, "block", detail))
        if self._events is not None:
            self._events.publish(
                GuardBlocked(stage=self.name, rule=rule, request_id=turn.request_id)
            )
        refusal = (
            self._config.oversize_refusal
            if reason == "oversize"
            else self._config.refusal
        )
        return turn.stop(self.name, reason, refusal)
