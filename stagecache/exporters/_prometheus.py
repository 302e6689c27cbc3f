"""Metrics as a Prometheus scrape endpoint (``kind = "prometheus"``).

The exporter records events through the OpenTelemetry metrics API and serves them
with OpenTelemetry's Prometheus reader on a small HTTP server of its own (a daemon
thread of ``prometheus_client``), started in ``warm_up()`` and stopped in
``aclose()``. Each exporter has its own registry, so two pipelines in one process
do not collide.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from stagecache._validate import CheckNumbers, Port
from stagecache.errors import ConfigError
from stagecache.exporters._metrics import EntryCounts, MetricsRecorder
from stagecache.exporters._pricing import ModelPrice
from stagecache.pipeline._events import Event

_log = logging.getLogger("stagecache.exporters")

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from stagecache.pipeline._registry import BuildContext

__all__ = ["PrometheusExporter"]


def _require_reader() -> Any:
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
    except ImportError as exc:  # an optional dependency: say which one
        raise ImportError(
            "the 'prometheus' exporter needs opentelemetry-exporter-prometheus: "
            "pip install opentelemetry-exporter-prometheus"
        ) from exc
    return PrometheusMetricReader


def entry_counts_of(cache: object) -> EntryCounts | None:
    """The cache engine's ``entry_counts()`` (entries by scope mode), if it has one."""
    fn = getattr(cache, "entry_counts", None)
    return fn if callable(fn) else None


class PrometheusConfig(
    msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True
):
    """A Prometheus scrape endpoint.

    Attributes:
        host: interface to listen on (``0.0.0.0`` to be scraped from elsewhere).
        port: TCP port (9464 is OpenTelemetry's Prometheus default; 0 picks a free
            one, see ``PrometheusExporter.port``).
        prices: USD per 1k tokens by model id (``"*"``: any other model).
        required: a host/port that cannot be bound stops the start with a
            ``ConfigError`` (default); false logs a warning on
            ``stagecache.exporters`` and the pipeline starts without the endpoint
            (metrics are still recorded: ``scrape()``).
    """

    host: str = "127.0.0.1"
    port: Port = 9464
    prices: dict[str, ModelPrice] = {}
    required: bool = True


class PrometheusExporter:
    """Serves pipeline metrics at ``http://host:port/metrics``.

    Args:
        config: where to listen, and model prices.
        entry_counts: live entries by scope mode, from the cache engine (optional).
    """

    Config = PrometheusConfig

    def __init__(
        self,
        config: PrometheusConfig | None = None,
        *,
        entry_counts: EntryCounts | None = None,
    ) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import CollectorRegistry

        self.config = config or PrometheusConfig()
        self.registry = CollectorRegistry(auto_describe=True)
        reader = _require_reader()(registry=self.registry, disable_target_info=True)
        self._provider = MeterProvider(metric_readers=[reader])
        self.recorder = MetricsRecorder(
            self._provider, prices=self.config.prices, entry_counts=entry_counts
        )
        self._server: WSGIServer | None = None
        self.port = self.config.port

    @classmethod
    def from_config(
        cls, config: PrometheusConfig, ctx: BuildContext
    ) -> PrometheusExporter:
        """Build from config; live entry counts come from ``ctx.cache``, if any."""
        return cls(config, entry_counts=entry_counts_of(ctx.cache))

    @property
    def url(self) -> str:
        """The scrape URL (valid after ``warm_up()``)."""
        return f"http://{self.config.host}:{self.port}/metrics"

    def __call__(self, event: Event) -> None:
        """Record ``event``; never blocks, never raises."""
        self.recorder(event)

    def scrape(self) -> bytes:
        """The current exposition text, without HTTP (for tests and debugging)."""
        from prometheus_client import generate_latest

        text: bytes = generate_latest(self.registry)
        return text

    async def warm_up(self) -> None:
        """Start the HTTP server (idempotent)."""
        if self._server is not None:
            return
        from prometheus_client import start_http_server

        try:
            server, _thread = start_http_server(
                self.config.port, addr=self.config.host, registry=self.registry
            )
        except OSError as exc:  # an unknown host, a port in use or not allowed
            name = "host" if isinstance(exc, socket.gaierror) else "port"
            error = ConfigError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc}; set "
                "host to a local address and port to a free one (0 picks one), or "
                "required = false to start without the endpoint",
                field=f"prometheus.{name}",
            )
            if self.config.required:
                raise error from exc
            _log.warning("prometheus endpoint not started: %s", error)
            return
        self._server = server
        self.port = server.server_port

    async def aclose(self) -> None:
        """Stop the HTTP server and the meter provider."""
        server, self._server = self._server, None
        if server is not None:
            # shutdown() waits for the serving loop's next poll: off the event loop.
            await anyio.to_thread.run_sync(server.shutdown)
            server.server_close()
        self._provider.shutdown()
