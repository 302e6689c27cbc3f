"""Logs: JSON lines (production) or a console rendering (development), on request.

The library logs through the standard-library ``stagecache`` logger and is silent
until the host configures logging (see :mod:`stagecache.exporters._stdlog`).
:func:`configure_logging` is for hosts that want stagecache to set up logging for
them: it puts a handler on the ``stagecache`` (and ``opentelemetry``) loggers that
renders every record, ours with its fields or the OpenTelemetry SDK's warnings
about a down collector, as one JSON line carrying ``trace_id`` and ``span_id`` when
a span is current, and configures structlog for the application's own structlog
loggers the same way. User data is reduced to hashes and lengths (see
:mod:`stagecache.exporters._privacy`).

:class:`LogExporter` (``kind = "log"``) writes every pipeline event as a log record.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import IO, TYPE_CHECKING, Any, Literal, TextIO

import msgspec
import structlog

from stagecache.exporters._privacy import RedactSensitive
from stagecache.exporters._stdlog import FIELDS_ATTR, REDACT, get_logger
from stagecache.pipeline._events import Event, event_to_dict
from stagecache.pipeline._tracing import add_trace_ids

if TYPE_CHECKING:
    from stagecache.pipeline._registry import BuildContext

__all__ = ["LogExporter", "configure_logging"]

LogMode = Literal["json", "console", "auto"]
Level = Literal["debug", "info", "warning", "error"]

_STDLIB_LOGGERS = ("stagecache", "opentelemetry")
_HANDLER_MARK = "_stagecache_handler"


def _pick_mode(mode: LogMode, stream: IO[str]) -> Literal["json", "console"]:
    if mode != "auto":
        return mode
    forced = os.environ.get("STAGECACHE_LOG_FORMAT", "").strip().lower()
    if forced in ("json", "console"):
        return "json" if forced == "json" else "console"
    if os.environ.get("CI"):
        return "json"
    isatty = getattr(stream, "isatty", None)
    return "console" if callable(isatty) and isatty() else "json"


def configure_logging(
    mode: LogMode = "auto",
    level: Level | int = "info",
    *,
    include_query_text: bool = False,
    stream: TextIO | None = None,
) -> Literal["json", "console"]:
    """Write stagecache's records to ``stream``; safe to call again.

    Not needed to use the library (which is silent until the host configures
    logging); call it to get JSON lines without a logging set-up of your own. It
    also configures structlog globally, for the application's structlog loggers.

    Args:
        mode: ``json`` (one JSON object a line), ``console`` (coloured, for a
            terminal), or ``auto``: ``STAGECACHE_LOG_FORMAT`` if set, else JSON
            under CI or when the stream is not a terminal, else console.
        level: the lowest level written.
        include_query_text: keep ``query``/``prompt`` values in records (off by
            default: they are replaced by hash and length).
        stream: where records go (default: standard error).

    Returns:
        The mode chosen.
    """
    out = stream or sys.stderr
    REDACT.include_query_text = include_query_text
    chosen = _pick_mode(mode, out)
    numeric = (
        level
        if isinstance(level, int)
        else logging.getLevelNamesMapping()[level.upper()]
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        RedactSensitive(include_query_text=include_query_text),
    ]
    renderer: Any
    if chosen == "json":
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_colors(out))
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        # Not cached: module-level loggers must follow a later reconfiguration.
        cache_logger_on_first_use=False,
    )
    _route_stdlib(shared, renderer, out, numeric)
    return chosen


def _colors(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())


def _route_stdlib(shared: list[Any], renderer: Any, out: TextIO, level: int) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, _our_fields, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    for name in _STDLIB_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level if name == "stagecache" else max(level, logging.WARNING))
        logger.propagate = False


def _our_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Put the fields of a stagecache record back as keys (not as message text)."""
    fields = getattr(event_dict.get("_record"), FIELDS_ATTR, None)
    if isinstance(fields, dict):
        event_dict.update(fields)
    return event_dict


class LogConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Pipeline events as log records.

    Attributes:
        level: level of ordinary events (failures are always ``warning``).
        events: event tags to log (``["cache.hit", "cache.miss"]``); empty: all.
    """

    level: Level = "info"
    events: list[str] = []


_WARN = frozenset({"stage.failed", "cache.error", "guard.blocked"})


class LogExporter:
    """Writes each pipeline event as a record of ``stagecache.events`` (by its tag).

    Args:
        config: level and the events to log.
    """

    Config = LogConfig

    def __init__(self, config: LogConfig | None = None) -> None:
        self.config = config or LogConfig()
        self._only = frozenset(self.config.events)
        self._log = get_logger("stagecache.events")

    @classmethod
    def from_config(cls, config: LogConfig, ctx: BuildContext) -> LogExporter:
        """Build from TOML config."""
        return cls(config)

    def __call__(self, event: Event) -> None:
        """Log ``event``; never raises."""
        try:
            fields = event_to_dict(event)
            tag = str(fields.pop("event", type(event).__name__))
            if self._only and tag not in self._only:
                return
            fields.pop("ts", None)
            level = "warning" if tag in _WARN else self.config.level
            getattr(self._log, level)(tag, **fields)
        except Exception:  # a log exporter must never fail a request
            logging.getLogger("stagecache.exporters").debug("event log failed")
