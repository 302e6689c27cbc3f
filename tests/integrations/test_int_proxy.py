"""The proxy: the official openai client against a real uvicorn server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from servers import FakeUpstream, ServerThread

from stagecache import Caller
from stagecache.integrations.proxy import ProxySettings, create_app

KEY, ADMIN = "sk-alice", "admin-secret"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with ServerThread(fake.app) as server:
        yield fake, server.url


@pytest.fixture(scope="module")
def keyed_upstream() -> Iterator[tuple[FakeUpstream, str]]:
    """An upstream that checks keys, as OpenAI does: its keys identify callers."""
    fake = FakeUpstream(keys=frozenset({"sk-org", "sk-cli"}))
    with ServerThread(fake.app) as server:
        yield fake, server.url


@pytest.fixture(scope="module")
def proxy_url(
    upstream: tuple[FakeUpstream, str], pipeline_options: dict[str, Any]
) -> Iterator[str]:
    settings = ProxySettings(
        upstream=upstream[1] + "/v1",
        api_keys={KEY: Caller(user_id="alice"), "sk-bob": Caller(user_id="bob")},
        admin_key=ADMIN,
        models=frozenset({"gpt-test", "gone-model", "broken"}),
        max_body_bytes=20_000,
    )
    with ServerThread(create_app(settings, **pipeline_options)) as server:
        yield server.url


def _client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def _ask(client: openai.OpenAI, text: str) -> tuple[Any, httpx.Headers]:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": text}]
    )
    return raw.parse(), raw.headers


def _shape(value: Any) -> Any:
    """The keys (recursively) of a JSON-like value: its shape without the data."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__ if value is not None else None


def test_a_hit_has_the_shape_of_a_miss(
    proxy_url: str, upstream: tuple[FakeUpstream, str]
) -> None:
    client = _client(proxy_url)
    calls = upstream[0].calls
    miss, miss_headers = _ask(client, "How do I reset my password?")
    hit, hit_headers = _ask(client, "How can I reset my password?")
    assert miss_headers["x-stagecache"] == "miss"
    assert hit_headers["x-stagecache"] == "hit"
    assert float(hit_headers["x-stagecache-similarity"]) > 0.9
    assert upstream[0].calls == calls + 1
    assert hit.choices[0].message.content == miss.choices[0].message.content
    assert _shape(hit.model_dump()) == _shape(miss.model_dump())


def _stream(client: openai.OpenAI, text: str) -> list[Any]:
    stream = client.chat.completions.create(
        model="gpt-test",
        messages=[{"role": "user", "content": text}],
        stream=True,
    )
    return list(stream)


def test_a_streamed_hit_has_the_shape_of_a_streamed_miss(proxy_url: str) -> None:
    client = _client(proxy_url, "sk-bob")
    miss = _stream(client, "What is the capital of France?")
    hit = _stream(client, "What's the capital city of France?")
    for chunks in (miss, hit):
        assert {c.object for c in chunks} == {"chat.completion.chunk"}
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason == "stop"
    text = ["".join(c.choices[0].delta.content or "" for c in s) for s in (miss, hit)]
    assert text[0] == text[1] == "answer to: What is the capital of France?"
    assert _shape(hit[1].model_dump()) == _shape(miss[1].model_dump())


def test_another_user_misses(proxy_url: str) -> None:
    _ask(_client(proxy_url), "What is the weather in Paris?")
    _, headers = _ask(_client(proxy_url, "sk-bob"), "What is the weather in Paris?")
    assert headers["x-stagecache"] == "miss"


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


def _post(url: str, content: bytes, key: str | None = KEY) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(url + "/v1/chat/completions", content=content, headers=headers)


def test_malformed_json_is_400(proxy_url: str) -> None:
    _error(_post(proxy_url, b'{"model": "gpt-test", "messages": ['), 400)


def test_missing_model_or_messages_is_400(proxy_url: str) -> None:
    assert _error(_post(proxy_url, b'{"messages": []}'), 400)["param"] == "model"
    body = b'{"model": "gpt-test"}'
    assert _error(_post(proxy_url, body), 400)["param"] == "messages"


def test_unknown_model_is_404(proxy_url: str) -> None:
    client = _client(proxy_url)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as upstream_404:
        _ask_model(client, "gone-model")
    assert upstream_404.value.message.endswith("upstream says 404")


def _ask_model(client: openai.OpenAI, model: str) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Are you there?"}]
    )


def test_upstream_errors_pass_through_verbatim(proxy_url: str) -> None:
    body = b'{"model": "broken", "messages": [{"role": "user", "content": "hi"}]}'
    error = _error(_post(proxy_url, body), 500)
    assert error["message"] == "upstream says 500" and error["type"] == "server_error"


def test_oversize_body_is_413(proxy_url: str) -> None:
    text = "x" * 30_000
    body = '{"model": "gpt-test", "messages": [{"role": "user", "content": "%s"}]}'
    _error(_post(proxy_url, (body % text).encode()), 413)


def test_missing_or_wrong_key_is_401(proxy_url: str) -> None:
    body = b'{"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}'
    _error(_post(proxy_url, body, key=None), 401)
    _error(_post(proxy_url, body, key="sk-wrong"), 401)
    with pytest.raises(openai.AuthenticationError):
        _ask_model(_client(proxy_url, "sk-wrong"), "gpt-test")


def test_admin_endpoints_need_the_admin_key(proxy_url: str) -> None:
    url = proxy_url + "/admin/purge"
    _error(httpx.post(url, json={"user_id": "alice"}), 401)
    wrong = {"authorization": "Bearer nope"}
    _error(httpx.post(url, json={"user_id": "alice"}, headers=wrong), 403)
    right = {"authorization": f"Bearer {ADMIN}"}
    _ask(_client(proxy_url), "How do I export my data?")
    response = httpx.post(url, json={"user_id": "alice"}, headers=right)
    assert response.status_code == 200 and response.json()["removed"] >= 1
    _, headers = _ask(_client(proxy_url), "How do I export my data?")
    assert headers["x-stagecache"] == "miss"
    invalidate = httpx.post(
        proxy_url + "/admin/invalidate", json={"user_id": "alice"}, headers=right
    )
    assert invalidate.status_code == 200 and invalidate.json()["removed"] == 1
    bad_tenant = {"user_id": "alice", "tenant": ["acme"]}
    response = httpx.post(
        proxy_url + "/admin/invalidate", json=bad_tenant, headers=right
    )
    assert _error(response, 400)["param"] == "tenant"


def test_models_health_and_metrics(proxy_url: str) -> None:
    models = _client(proxy_url).models.list()
    assert [m.id for m in models.data] == ["gpt-test"]
    assert httpx.get(proxy_url + "/healthz").json() == {"status": "ok"}
    metrics = httpx.get(proxy_url + "/metrics").text
    assert "stagecache_proxy_requests_total" in metrics


def test_header_identity_and_anonymous_requests(
    keyed_upstream: tuple[FakeUpstream, str], pipeline_options: dict[str, Any]
) -> None:
    settings = ProxySettings(upstream=keyed_upstream[1] + "/v1")
    with ServerThread(create_app(settings, **pipeline_options)) as server:
        client = openai.OpenAI(
            base_url=server.url + "/v1",
            api_key="sk-org",
            max_retries=0,
            default_headers={"x-stagecache-user": "zoe"},
        )
        for expected in ("miss", "hit"):
            _, headers = _ask(client, "Where is my invoice?")
            assert headers["x-stagecache"] == expected
        anonymous = _client(server.url, "sk-org")
        _, headers = _ask(anonymous, "Where is my invoice?")
        assert headers["x-stagecache"] == "skip"


# -- the installed console script ---------------------------------------------------

STAGECACHE = Path(sys.executable).with_name("stagecache")
ROOT = Path(__file__).parents[2]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_help_lists_every_option_with_its_help() -> None:
    done = subprocess.run(
        [str(STAGECACHE), "serve", "--help"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for option in (
        "--upstream URL",
        "--port PORT",
        "--host HOST",
        "--config FILE",
        "--upstream-key-env NAME",
        "--api-keys FILE",
        "--identity-secret-env NAME",
        "--admin-key-env NAME",
        "--models LIST",
        "--max-body-bytes N",
        "--read-only-tools LIST",
        "--timeout SECONDS",
        "--log-level LEVEL",
    ):
        assert option in text, option
    assert "args" not in done.stdout.split()
    assert "127.0.0.1" in text  # the default host is loopback


def test_serve_without_an_upstream_is_a_usage_error() -> None:
    done = subprocess.run(
        [str(STAGECACHE), "serve", "--port", "1"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--upstream" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [("short", "identity_secret: too short"), ("", "STAGECACHE_TEST_SECRET is not")],
)
def test_a_bad_identity_secret_is_a_usage_error(value: str, message: str) -> None:
    done = subprocess.run(
        [
            str(STAGECACHE),
            "serve",
            "--upstream",
            "http://127.0.0.1:9/v1",
            "--identity-secret-env",
            "STAGECACHE_TEST_SECRET",
        ],
        env={**_env(), "STAGECACHE_TEST_SECRET": value},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_every_serve_option_has_help() -> None:
    from stagecache.cli import _parser

    sub = next(a for a in _parser()._actions if a.dest == "command")
    serve = sub.choices["serve"]
    options = [a for a in serve._actions if a.option_strings and a.dest != "help"]
    assert len(options) == 14
    assert all(a.help and len(a.help) > 10 for a in options)


def test_the_documented_serve_command_works_with_the_openai_client(
    keyed_upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('[verifier]\nkind = "structural"\n[cache]\ntimeout_s = 30.0\n')
    port = _free_port()
    command = [
        str(STAGECACHE),
        "serve",
        "--upstream",
        keyed_upstream[1] + "/v1",
        "--port",
        str(port),
        "--config",
        str(config),
    ]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(command, env=_env(), stdout=sink, stderr=sink)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        client = openai.OpenAI(
            base_url=base + "/v1",
            api_key="sk-cli",
            max_retries=0,
            default_headers={"x-stagecache-user": "cli-user"},
        )
        outcomes = []
        for _ in range(2):
            miss, headers = _ask(client, "How do I rotate my API token?")
            outcomes.append(headers["x-stagecache"])
            assert miss.choices[0].message.content == (
                "answer to: How do I rotate my API token?"
            )
        assert outcomes == ["miss", "hit"]
    finally:
        server.terminate()
        server.wait(timeout=60)
