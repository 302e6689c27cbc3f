"""Where OTLP telemetry goes: the config and its resolution against ``OTEL_*``.

Every field left unset falls back to the standard OpenTelemetry variable, then to
the OpenTelemetry default:

=================  ===========================================  ====================
field              variables (signal-specific first)            default
=================  ===========================================  ====================
``endpoint``       ``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_       ``localhost:4317``
                   ENDPOINT``, ``OTEL_EXPORTER_OTLP_ENDPOINT``  (gRPC) / ``:4318``
``protocol``       ``OTEL_EXPORTER_OTLP_{...}_PROTOCOL``,       ``http/protobuf``
                   ``OTEL_EXPORTER_OTLP_PROTOCOL``
``headers``        ``OTEL_EXPORTER_OTLP_{...}_HEADERS``, ...    none
``timeout_s``      ``OTEL_EXPORTER_OTLP_{...}_TIMEOUT``, ...    10 s
``service_name``   ``OTEL_SERVICE_NAME``                        ``stagecache``
=================  ===========================================  ====================

As in the OpenTelemetry SDK, ``endpoint`` is a *base* URL: over HTTP the signal's
path (``/v1/traces``, ``/v1/metrics``) is appended. ``traces_endpoint`` and
``metrics_endpoint`` are full URLs used as they are.
"""

from __future__ import annotations

import math
import os
from typing import Annotated, Literal

import msgspec

from stagecache._validate import CheckNumbers, Seconds, problem_at
from stagecache.errors import ConfigError
from stagecache.exporters._pricing import ModelPrice

__all__ = ["OtlpConfig", "Protocol", "resolve_endpoint", "resolve_protocol"]

Protocol = Literal["grpc", "http/protobuf"]
Signal = Literal["traces", "metrics"]

_DEFAULT_BASE = {
    "grpc": "http://localhost:4317",
    "http/protobuf": "http://localhost:4318",
}
_PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http/protobuf")


class OtlpConfig(msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True):
    """OTLP export of traces and metrics (TOML: ``[[exporters]] kind = "otlp"``).

    Attributes:
        endpoint: base URL of the collector (``http://collector:4317``).
        traces_endpoint: full URL for traces, overriding ``endpoint``.
        metrics_endpoint: full URL for metrics, overriding ``endpoint``.
        protocol: ``grpc`` or ``http/protobuf``.
        headers: extra request headers (auth tokens).
        insecure: gRPC without TLS (default: from the URL scheme).
        timeout_s: per-export timeout; a down collector costs a background thread
            at most this long per batch, never a request.
        service_name: the ``service.name`` resource attribute.
        traces: export spans (the pipeline's tracer provider is set up from this
            config by :func:`setup_tracing`).
        metrics: export metrics over OTLP.
        max_queue_size: spans held for export; past it spans are dropped and
            counted (``stagecache_telemetry_dropped_total``).
        max_export_batch_size: spans per export request.
        schedule_delay_s: how long spans wait in the queue at most.
        export_interval_s: how often metrics are exported.
        prices: USD per 1k tokens by model id (``"*"``: any other model), for
            ``stagecache_llm_cost_saved_usd_total``.
        openinference: spans gain ``openinference.span.kind`` and ``metadata``
            (Arize Phoenix and other OpenInference viewers show the request,
            stages and cache lookups for what they are) and the resource
            ``openinference.project.name`` (the service name: Phoenix's project).
    """

    endpoint: str | None = None
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    protocol: Protocol | None = None
    headers: dict[str, str] = {}
    insecure: bool | None = None
    timeout_s: Seconds | None = None
    service_name: str | None = None
    traces: bool = True
    metrics: bool = True
    max_queue_size: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 2048
    max_export_batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 512
    schedule_delay_s: Seconds = 1.0
    export_interval_s: Seconds = 10.0
    prices: dict[str, ModelPrice] = {}
    openinference: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()  # every number within its bounds
        if self.max_export_batch_size > self.max_queue_size:
            raise ValueError(
                "max_export_batch_size: must be between 1 and max_queue_size "
                f"({self.max_queue_size}), got {self.max_export_batch_size}"
            )


def _env(signal: Signal, name: str) -> str | None:
    value = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}")
    if value is None:
        value = os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")
    return value.strip() if value else None


def resolve_protocol(config: OtlpConfig, signal: Signal) -> Protocol:
    """The protocol for ``signal``: config, then ``OTEL_*`` variables, then HTTP.

    Raises:
        ValueError: a variable names a protocol we do not speak (the message lists
            the valid ones).
    """
    if config.protocol is not None:
        return config.protocol
    value = _env(signal, "PROTOCOL") or "http/protobuf"
    for protocol in _PROTOCOLS:
        if value == protocol:
            return protocol
    raise ValueError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported value {value!r}; "
        f"valid choices: {', '.join(_PROTOCOLS)}"
    )


def resolve_endpoint(config: OtlpConfig, signal: Signal) -> str:
    """The full URL ``signal`` is exported to (see the module docstring)."""
    protocol = resolve_protocol(config, signal)
    specific = config.traces_endpoint if signal == "traces" else config.metrics_endpoint
    if specific:
        return specific
    base = config.endpoint
    if base is None:
        specific_env = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        if specific_env:
            return specific_env.strip()
        base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or _DEFAULT_BASE[protocol]
    if protocol == "grpc":
        return base
    return f"{base.rstrip('/')}/v1/{signal}"


def resolve_timeout(config: OtlpConfig, signal: Signal) -> float | None:
    """The export timeout in seconds (None: the exporter's default)."""
    if config.timeout_s is not None:
        return config.timeout_s
    value = _env(signal, "TIMEOUT")
    if not value:
        return None
    # The variables hold milliseconds (OTLP exporter specification).
    try:
        seconds = float(value) / 1000.0
    except ValueError:
        seconds = math.nan
    problem = problem_at(OtlpConfig, ["timeout_s"], seconds)  # the field's bounds
    if problem is not None:
        specific = f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT"
        raise ConfigError(
            f"{value!r} milliseconds is not a valid timeout: {problem}",
            field=specific
            if os.environ.get(specific)
            else "OTEL_EXPORTER_OTLP_TIMEOUT",
        )
    return seconds


def service_name(config: OtlpConfig) -> str:
    """``service.name``: config, ``OTEL_SERVICE_NAME``, then ``stagecache``."""
    return config.service_name or os.environ.get("OTEL_SERVICE_NAME") or "stagecache"
