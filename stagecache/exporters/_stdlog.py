"""The library's own loggers: structlog over the standard-library ``stagecache`` logger.

A library must not decide where its logs go. Every module logs through
:func:`get_logger`, a structlog ``BoundLogger`` (keyword fields, as before) whose
records go to the stdlib logger of the same name, under ``stagecache``. Nothing is
configured globally: ``structlog.configure`` is never called here, so the host's
structlog set-up is untouched, and ours does not depend on it.

- Without logging configured by the host, nothing is written anywhere: the
  ``stagecache`` logger has a ``NullHandler`` (the stdlib HOWTO "Configuring
  Logging for a Library"), so not even warnings fall through to standard error.
- With ``logging.basicConfig(...)`` (or any handler), records arrive on
  ``stagecache.pipeline``, ``stagecache.cache``, ... as ordinary records whose
  message reads ``stage failed stage=llm policy=fail error_type=LLMError``; the
  fields are also on the record as a dict attribute, ``record.stagecache_fields``.
- :func:`~stagecache.exporters.configure_logging` renders those fields as JSON
  (or for a console).

User data in fields is reduced to hashes and lengths before the record is made
(see :mod:`stagecache.exporters._privacy`).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog

from stagecache.exporters._privacy import RedactSensitive
from stagecache.pipeline._tracing import add_trace_ids

__all__ = ["FIELDS_ATTR", "REDACT", "ROOT_LOGGER", "get_logger"]

ROOT_LOGGER = "stagecache"
#: Attribute of a ``LogRecord`` holding the structured fields of our records.
FIELDS_ATTR = "stagecache_fields"

# Silent unless the host configures logging (no "last resort" stderr output).
logging.getLogger(ROOT_LOGGER).addHandler(logging.NullHandler())

#: The redaction every record passes; ``configure_logging(include_query_text=True)``
#: relaxes it.
REDACT = RedactSensitive()


# Frames between the stdlib call and our caller: structlog's BoundLoggerBase and
# stdlib BoundLogger ``_proxy_to_logger`` and the level method (``warning``), so that
# ``%(filename)s:%(lineno)d`` name the line that logged.
_STACKLEVEL = 4


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        plain = value and not any(ch.isspace() or ch in "='\"" for ch in value)
        return value if plain else repr(value)
    return repr(value) if isinstance(value, bytes) else str(value)


def _to_stdlib(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Last processor: a readable message, the fields beside it on the record."""
    fields = dict(event_dict)
    event = str(fields.pop("event", ""))
    text = event + "".join(f" {k}={_format_value(v)}" for k, v in fields.items())
    extra = {FIELDS_ATTR: {"event": event, **fields}}
    return (text,), {"extra": extra, "stacklevel": _STACKLEVEL}


_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # a disabled level costs one check
    add_trace_ids,
    REDACT,
    _to_stdlib,
]


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """The structlog logger of module group ``name`` (``stagecache.cache``, ...).

    Args:
        name: a dotted name under ``stagecache``.

    Returns:
        A bound logger writing to the stdlib logger ``name``.
    """
    return structlog.stdlib.BoundLogger(
        logging.getLogger(name), processors=_PROCESSORS, context={}
    )
