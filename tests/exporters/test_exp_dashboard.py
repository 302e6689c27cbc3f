"""Every PromQL query of the Grafana dashboard, run against a real Prometheus.

Prometheus (``/usr/bin/prometheus``, Debian's package) scrapes the Prometheus
exporter of a demo pipeline every second; after two waves of traffic each
dashboard query goes through ``/api/v1/query`` and must parse and return data.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml

from stagecache.exporters import PrometheusConfig, PrometheusExporter

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "stagecache.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

#: The proxy's metrics (``stagecache serve``'s own ``/metrics``).
PROXY_METRIC = "stagecache_proxy_"

# Grafana's variables, as Grafana would expand them for a short test run.
VARIABLES = {"$__rate_interval": "30s", "$__range": "5m", "$scope_mode": ".*"}


def dashboard_queries() -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every Prometheus target in the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if target.get("datasource", panel.get("datasource", {}))["type"] == (
                "prometheus"
            ):
                queries.append((panel["title"], target["expr"]))
    return queries


def expand(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unexpanded Grafana variable in {expr!r}"
    return expr


def test_dashboard_has_the_promised_panels_and_a_trace_link() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(e for _, e in dashboard_queries())
    for metric in (
        "stagecache_requests_total",
        "stagecache_cache_distance_bucket",
        "stagecache_cache_threshold",
        "stagecache_stage_duration_seconds_bucket",
        "stagecache_llm_calls_total",
        "stagecache_llm_cost_saved_usd_total",
        "stagecache_cache_evictions_total",
        "stagecache_embedding_cache_lookups_total",
        "gen_ai_client_token_usage_bucket",
        "gen_ai_client_operation_duration_seconds_bucket",
    ):
        assert metric in exprs
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le, stagecache_stage)" in exprs
    jaeger = [p for p in dashboard["panels"] if p.get("datasource", {}).get("type")
              == "jaeger"]  # fmt: skip
    assert jaeger, "a panel listing Jaeger traces"


def test_grafana_files_are_valid_yaml_referencing_each_other() -> None:
    compose = yaml.safe_load((ROOT / "grafana" / "compose.yaml").read_text())
    assert {"jaeger", "prometheus", "grafana"} <= set(compose["services"])
    mounts = " ".join(compose["services"]["grafana"]["volumes"])
    assert "./provisioning:/etc/grafana/provisioning" in mounts
    assert "./dashboards:/var/lib/grafana/dashboards" in mounts
    provisioning = ROOT / "grafana" / "provisioning"
    sources = yaml.safe_load(
        (provisioning / "datasources" / "datasources.yaml").read_text()
    )
    uids = {d["uid"]: d["type"] for d in sources["datasources"]}
    assert uids == {"prometheus": "prometheus", "jaeger": "jaeger"}
    providers = yaml.safe_load(
        (provisioning / "dashboards" / "dashboards.yaml").read_text()
    )
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """A function starting Prometheus scraping ``target`` (host:port) every second."""
    if not Path(PROMETHEUS).exists():
        pytest.skip(
            "Prometheus is not installed (/usr/bin/prometheus): "
            "apt-get install -y prometheus (the CI script does)"
        )
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: stagecache\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        port = _free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _wait_until(check: Any, what: str) -> None:
    with anyio.fail_after(30):
        while True:
            try:
                if await check():
                    return
            except (httpx.HTTPError, KeyError, IndexError, ValueError):
                pass  # Prometheus still starting (a 503 in plain text, not JSON)
            await anyio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")  # pragma: no cover


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_every_dashboard_query_parses_and_returns_data_in_prometheus(
    prometheus: Any, make_demo: Any, drive: Any, anyio_backend: str
) -> None:
    exporter = PrometheusExporter(PrometheusConfig(port=0))
    async with make_demo(None, [exporter]) as pipeline, httpx.AsyncClient() as client:
        base = prometheus(f"127.0.0.1:{exporter.port}")

        async def scrapes() -> float:
            query = "count_over_time(up{job='stagecache'}[5m])"
            r = await client.get(f"{base}/api/v1/query", params={"query": query})
            return float(r.json()["data"]["result"][0]["value"][1])

        await _wait_until(scrapes, "Prometheus' first scrape")
        await drive(pipeline)  # first wave
        first = await scrapes()

        async def after(n: int) -> bool:
            return await scrapes() >= first + n

        await _wait_until(lambda: after(2), "two scrapes after the first wave")
        await drive(pipeline)  # second wave: rates are positive
        await _wait_until(lambda: after(5), "scrapes after the second wave")

        failures = []
        for title, expr in dashboard_queries():
            if PROXY_METRIC in expr:  # the proxy's own, tested below
                continue
            r = await client.get(f"{base}/api/v1/query", params={"query": expand(expr)})
            body = r.json()
            if r.status_code != 200 or body.get("status") != "success":
                failures.append(f"{title}: {expr}: {body.get('error', r.text)}")
            elif not body["data"]["result"]:
                failures.append(f"{title}: {expr}: no data")
        assert not failures, "\n".join(failures)
        # The scope-mode variable's values exist as a label.
        r = await client.get(f"{base}/api/v1/label/cache_scope_mode/values")
        assert "per_user" in r.json()["data"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_proxy_panels_return_data_from_a_scraped_proxy(
    prometheus: Any, embedder: Any, anyio_backend: str
) -> None:
    import sys

    from stagecache import Caller
    from stagecache.config import parse_config
    from stagecache.integrations.proxy import ProxySettings, create_app

    sys.path.insert(0, str(ROOT / "tests" / "integrations"))
    from servers import FakeUpstream, ServerThread

    queries = [(t, e) for t, e in dashboard_queries() if PROXY_METRIC in e]
    assert len(queries) >= 2, "panels for the proxy's requests and latency"
    fake = FakeUpstream()
    config = parse_config(
        {"verifier": {"kind": "structural"}, "cache": {"timeout_s": 30.0}}
    )
    with ServerThread(fake.app) as upstream:
        settings = ProxySettings(
            upstream=upstream.url + "/v1", api_keys={"sk-a": Caller(user_id="alice")}
        )
        app = create_app(settings, embedder=embedder, config=config)
        with ServerThread(app) as proxy:
            async with httpx.AsyncClient(timeout=60) as client:
                base = prometheus(f"127.0.0.1:{proxy.port}")

                async def scrapes() -> float:
                    query = "count_over_time(up{job='stagecache'}[5m])"
                    r = await client.get(
                        f"{base}/api/v1/query", params={"query": query}
                    )
                    result = r.json()["data"]["result"]
                    return float(result[0]["value"][1]) if result else 0.0

                async def ask() -> None:
                    for text in ("How do I reset my password?", "What is 2+2?"):
                        await client.post(
                            proxy.url + "/v1/chat/completions",
                            headers={"authorization": "Bearer sk-a"},
                            json={"model": "gpt-test",
                                  "messages": [{"role": "user", "content": text}]},
                        )  # fmt: skip

                await _wait_until(scrapes, "Prometheus' first scrape")
                await ask()
                first = await scrapes()
                await _wait_until(lambda: _at_least(scrapes, first + 2), "two scrapes")
                await ask()
                await _wait_until(
                    lambda: _at_least(scrapes, first + 5), "scrapes after wave 2"
                )
                failures = []
                for title, expr in queries:
                    r = await client.get(
                        f"{base}/api/v1/query", params={"query": expand(expr)}
                    )
                    body = r.json()
                    if body.get("status") != "success" or not body["data"]["result"]:
                        failures.append(f"{title}: {expr}: {body}")
                assert not failures, "\n".join(failures)


async def _at_least(scrapes: Any, n: float) -> bool:
    return bool(await scrapes() >= n)
