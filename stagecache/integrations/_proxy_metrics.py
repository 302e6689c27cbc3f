"""The proxy's Prometheus metrics, with label values the clients cannot choose.

A label value becomes a time series that lives until the process exits: a value a
client picks (a model id such as ``carol@example.com``, or a fresh one per
request) would both leak it to whoever scrapes ``/metrics`` and grow the registry
without bound. So every label here comes from a fixed set: the cache outcome, the
HTTP status class... and the model, which is named only when the operator listed
it (``--models``) or the upstream did (its ``/v1/models`` reply, as passed
through the proxy); every other model is ``other``. Learned names are capped.
"""

from __future__ import annotations

import json
import re
import time

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["ModelLabels", "ProxyMetrics"]

OTHER = "other"
#: ``upstream_error``: the upstream answered with an error status (not a miss);
#: ``bypass``: the client's cache control skipped the lookup.
_OUTCOMES = frozenset({"hit", "miss", "skip", "bypass", "error", "upstream_error"})
#: What a model id may look like to become a label (ids such as
#: ``meta-llama/Llama-3.1-8B-Instruct``, ``ft:gpt-4o:org::id``, ``claude@2024``).
_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,79}")


class ModelLabels:
    """The bounded set of model ids that may appear as a label value.

    Args:
        allowed: the operator's allow-list (always named).
        max_learned: how many ids learned from the upstream are kept.
    """

    __slots__ = ("_known", "_max")

    def __init__(self, allowed: frozenset[str] = frozenset(), max_learned: int = 64):
        self._known = {m for m in allowed if _SHAPE.fullmatch(m)}
        self._max = len(self._known) + max_learned

    def learn_listing(self, body: bytes) -> None:
        """Remember the ids of an upstream ``/models`` reply (``{"data": [...]}``)."""
        try:
            data = json.loads(body).get("data")
        except (ValueError, AttributeError):
            return
        if not isinstance(data, list):
            return
        for item in data:
            model = item.get("id") if isinstance(item, dict) else None
            if len(self._known) >= self._max:
                return
            if isinstance(model, str) and _SHAPE.fullmatch(model):
                self._known.add(model)

    def label(self, model: object) -> str:
        """``model`` when it is known, else ``other``."""
        return model if isinstance(model, str) and model in self._known else OTHER


def _status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else "other"


class ProxyMetrics:
    """Request counts and latencies of the proxy, in a registry of its own."""

    def __init__(self, models: ModelLabels) -> None:
        self.models = models
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "stagecache_proxy_requests",
            "Chat completion requests by outcome (hit, miss, skip, error, "
            "upstream_error), HTTP status and model "
            "(models not listed by the operator or the upstream count as 'other').",
            ["outcome", "status", "model"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stagecache_proxy_request_seconds",
            "Time to answer a chat completion request, by cache outcome.",
            ["outcome"],
            registry=self.registry,
        )

    def observe(
        self, outcome: str, status: int, started: float, model: object = None
    ) -> None:
        """Count one answered request."""
        outcome = outcome if outcome in _OUTCOMES else "error"
        self.requests.labels(
            outcome, _status_label(status), self.models.label(model)
        ).inc()
        self.latency.labels(outcome).observe(time.perf_counter() - started)
