"""Guards: the pure, synchronous checks behind the input and output guard stages.

- :class:`InjectionScanner` applies the prompt-injection rule set
  (:data:`BUILTIN_RULES`, plus :class:`RuleSpec` extras from config) to a text.
- :class:`PiiRedactor` replaces PII and secrets found by :data:`BUILTIN_DETECTORS`
  (plus :class:`PatternSpec` extras) with ``[REDACTED:LABEL]``.

Both compile everything at construction (a bad config pattern raises
:class:`~stagecache.errors.ConfigError` there) and are safe to share between
threads. The rule set and the detectors are documented in ``docs/guards.md``.
"""

from __future__ import annotations

from stagecache.guards._injection import Detection, InjectionScanner
from stagecache.guards._normalize import canonical
from stagecache.guards._pii import (
    BUILTIN_DETECTORS,
    Detector,
    PatternSpec,
    PiiRedactor,
    Redaction,
    iban_valid,
    luhn_valid,
    redaction_token,
)
from stagecache.guards._rules import BUILTIN_RULES, Rule, RuleSpec

__all__ = [
    "BUILTIN_DETECTORS",
    "BUILTIN_RULES",
    "Detection",
    "Detector",
    "InjectionScanner",
    "PatternSpec",
    "PiiRedactor",
    "Redaction",
    "Rule",
    "RuleSpec",
    "canonical",
    "iban_valid",
    "luhn_valid",
    "redaction_token",
]
