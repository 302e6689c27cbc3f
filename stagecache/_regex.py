"""Regular expressions from config, compiled by RE2: matching time is linear.

Python's ``re`` backtracks: ``(a+)+$`` against 30 ``a`` and a ``b`` takes minutes,
and a pattern in a config file runs on every request (a TTL pattern blocked the
event loop for 74 s on one query). Every pattern a config file gives (``[cache]
ttl_patterns``, the guards' ``extra_rules`` and ``extra_patterns``) is compiled here
by RE2 (the ``google-re2`` package), which guarantees time linear in the input. RE2
has no backreferences or lookaround: such a pattern is refused with a
:class:`~stagecache.errors.ConfigError` naming the field, and so is a pattern that
matches the empty string (it would match every text).

The compiled object has the API of :class:`re.Pattern` (``search``, ``finditer``,
``subn``, matches with ``start()``, ``end()``, ``group()``), so it is typed as one.
"""

from __future__ import annotations

import re
from typing import cast

import re2

from stagecache.errors import ConfigError

__all__ = ["MAX_PATTERN_CHARS", "compile_config_regex"]

#: The longest pattern a config may give.
MAX_PATTERN_CHARS = 1000
# A text with words, digits, spaces and punctuation: a pattern with a zero-width
# match on it matches "nothing" somewhere in almost every text.
_PROBE = "Probe text 0123 ab-cd_ef.gh@ij:kl / ÄÖ\n"


def _options(ignore_case: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would print parse errors to stderr
    options.case_sensitive = not ignore_case
    return options


def compile_config_regex(
    pattern: object,
    *,
    field: str,
    path: str | None = None,
    ignore_case: bool = False,
) -> re.Pattern[str]:
    """Compile a pattern from config with RE2.

    Args:
        pattern: the pattern text.
        field: the dotted field it came from, named in errors.
        path: the config file, named in errors.
        ignore_case: match without regard to case.

    Returns:
        The compiled pattern (an RE2 object with the API of ``re.Pattern``).

    Raises:
        ConfigError: not a string, longer than :data:`MAX_PATTERN_CHARS`, not valid
            RE2 syntax (backreferences, lookaround), or matching the empty string.
    """
    if not isinstance(pattern, str):
        raise ConfigError(f"{pattern!r:.80} must be a string", path=path, field=field)
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ConfigError(
            f"the pattern is {len(pattern):,} characters long; the limit is "
            f"{MAX_PATTERN_CHARS:,}",
            path=path,
            field=field,
        )
    try:
        compiled = re2.compile(pattern, options=_options(ignore_case))
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise ConfigError(
            f"{pattern!r:.120} is not a regular expression RE2 accepts ({detail}); "
            "RE2 has no backreferences or lookaround, which keeps matching linear "
            "in the input",
            path=path,
            field=field,
        ) from None
    if compiled.search("") is not None or any(
        m.end() == m.start() for m in compiled.finditer(_PROBE)
    ):
        raise ConfigError(
            f"{pattern!r:.120} matches the empty string, so it matches every text",
            path=path,
            field=field,
        )
    return cast("re.Pattern[str]", compiled)
