"""Subscribers to pipeline events: OpenTelemetry traces and metrics, logs."""

from __future__ import annotations

__all__: list[str] = []
