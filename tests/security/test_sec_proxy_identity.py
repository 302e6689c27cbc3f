"""The proxy's identity, as an attacker tries it (issue 13, finding 1; issue 13,
finding 5, the proxy's part).

Default mode (no ``--api-keys``): identity is a keyed hash of the client's upstream
credential; the ``x-stagecache-user``/``x-stagecache-session`` headers only narrow
inside it. A bare header, a bad key or another organisation's key never reaches
another caller's entries; a request without a credential is not cached; duplicated
or conflicting identity headers are a 400. Real uvicorn servers, a fake upstream
that checks keys as OpenAI does, the official ``openai`` client where it fits.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stagecache import Caller
from stagecache.config import parse_config
from stagecache.integrations.proxy import ProxySettings, create_app
from stagecache.testing import SharedEmbedder

sys.path.insert(0, str(Path(__file__).parents[1] / "integrations"))
from servers import FakeUpstream, ServerThread

#: The upstream's accounts: two organisations' keys.
ORG_A, ORG_B = "sk-org-a-7f3a9e", "sk-org-b-19c2d4"
QUESTION = "What is the refund policy for order 4711?"
SECRET = "a-shared-identity-secret-of-32-chars"


class AuthUpstream(FakeUpstream):
    """The fake upstream, checking keys as OpenAI does (401 for a bad key)."""

    def __init__(self) -> None:
        super().__init__(keys=frozenset({ORG_A, ORG_B}))

    @property
    def requests(self) -> int:
        """Every chat request, refused ones included (the probe's too)."""
        return self.calls + self.refused


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[AuthUpstream, str]]:
    fake = AuthUpstream()
    with ServerThread(fake.app) as server:
        yield fake, server.url + "/v1"


@pytest.fixture(scope="module")
def options(minilm: Any) -> dict[str, Any]:
    raw = {"verifier": {"kind": "structural"}, "cache": {"timeout_s": 30.0}}
    return {"embedder": SharedEmbedder(minilm), "config": parse_config(raw)}


@pytest.fixture(scope="module")
def proxy(upstream: tuple[AuthUpstream, str], options: dict[str, Any]) -> Iterator[str]:
    """A proxy in default mode (no API keys): the client's key goes upstream."""
    app = create_app(ProxySettings(upstream=upstream[1]), **options)
    with ServerThread(app) as server:
        yield server.url


def _ask(
    url: str,
    headers: list[tuple[str, str]],
    text: str = QUESTION,
    model: str = "gpt-test",
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers)


def _key(key: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {key}")


ALICE = ("x-stagecache-user", "alice")


def _cache_alice(url: str, text: str = QUESTION) -> None:
    for expected in ("miss", "hit"):
        response = _ask(url, [_key(ORG_A), ALICE], text)
        assert response.status_code == 200, response.text
        assert response.headers["x-stagecache"] == expected


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


def test_a_bare_user_header_without_a_key_gets_no_cached_answer(
    proxy: str, upstream: tuple[AuthUpstream, str]
) -> None:
    _cache_alice(proxy)
    calls = upstream[0].requests
    response = _ask(proxy, [ALICE])
    assert response.headers["x-stagecache"] == "skip"
    assert response.status_code == 401  # the upstream's answer, not alice's entry
    assert upstream[0].requests == calls + 1


def test_a_wrong_key_gets_no_cached_answer(
    proxy: str, upstream: tuple[AuthUpstream, str]
) -> None:
    _cache_alice(proxy, "How long does shipping to Norway take?")
    response = _ask(
        proxy, [_key("sk-guessed"), ALICE], "How long does shipping to Norway take?"
    )
    assert response.status_code == 401, response.text
    assert response.headers.get("x-stagecache") != "hit"


def test_another_organisations_key_misses(
    proxy: str, upstream: tuple[AuthUpstream, str]
) -> None:
    text = "Which plan includes priority support?"
    _cache_alice(proxy, text)
    calls = upstream[0].requests
    response = _ask(proxy, [_key(ORG_B), ALICE], text)
    assert response.status_code == 200
    assert response.headers["x-stagecache"] == "miss"
    assert upstream[0].requests == calls + 1


def test_the_user_header_narrows_inside_the_key(proxy: str) -> None:
    text = "Can I change the billing address of my account?"
    _cache_alice(proxy, text)
    bob = _ask(proxy, [_key(ORG_A), ("x-stagecache-user", "bob")], text)
    assert bob.headers["x-stagecache"] == "miss"


def test_a_key_without_a_user_header_is_not_cached(proxy: str) -> None:
    # One upstream key is often shared by many end users of an application: the
    # key alone does not say whose answer it is.
    for _ in range(2):
        response = _ask(proxy, [_key(ORG_A)], "Do you ship to Iceland?")
        assert response.status_code == 200
        assert response.headers["x-stagecache"] == "skip"


@pytest.mark.parametrize(
    "headers",
    [
        [("x-stagecache-user", "bob"), ("x-stagecache-user", "mallory")],
        [("x-stagecache-user", "alice"), ("x-stagecache-user", "alice")],
        [ALICE, ("x-stagecache-session", "s1"), ("x-stagecache-session", "s2")],
        [ALICE, ("authorization", f"Bearer {ORG_B}")],
        [("x-stagecache-user", "")],
        [("x-stagecache-user", "alice\tadmin")],
    ],
    ids=["two-users", "same-user-twice", "two-sessions", "two-keys", "empty", "ctl"],
)
def test_duplicated_or_malformed_identity_headers_are_400(
    proxy: str, upstream: tuple[AuthUpstream, str], headers: list[tuple[str, str]]
) -> None:
    calls = upstream[0].requests
    error = _error(_ask(proxy, [_key(ORG_A), *headers]), 400)
    assert error["type"] == "invalid_request_error"
    assert upstream[0].requests == calls  # refused before anything went upstream


def test_the_official_client_is_cached_per_key_and_user(proxy: str) -> None:
    def client(key: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=proxy + "/v1",
            api_key=key,
            max_retries=0,
            default_headers={"x-stagecache-user": "zoe"},
        )

    def outcome(key: str) -> str:
        raw = client(key).chat.completions.with_raw_response.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "Where is my invoice?"}],
        )
        return str(raw.headers["x-stagecache"])

    assert [outcome(ORG_A), outcome(ORG_A), outcome(ORG_B)] == ["miss", "hit", "miss"]
    with pytest.raises(openai.AuthenticationError):
        client("sk-nope").chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "Where is my invoice?"}],
        )


def test_with_an_upstream_key_header_identity_is_not_cached(
    upstream: tuple[AuthUpstream, str], options: dict[str, Any]
) -> None:
    # The proxy's own key goes upstream: nothing authenticates the client, so a
    # bare header must not select a scope.
    settings = ProxySettings(upstream=upstream[1], upstream_key=ORG_A)
    with ServerThread(create_app(settings, **options)) as server:
        for _ in range(2):
            response = _ask(server.url, [ALICE], "What are the support hours?")
            assert response.status_code == 200
            assert response.headers["x-stagecache"] == "skip"


def test_a_shared_scope_is_shared_per_key_and_never_without_one(
    upstream: tuple[AuthUpstream, str], options: dict[str, Any]
) -> None:
    raw = {
        "verifier": {"kind": "structural"},
        "cache": {
            "timeout_s": 30.0,
            "scope": "shared",
            "shared_data_acknowledged": True,
        },
    }
    settings = ProxySettings(upstream=upstream[1])
    app = create_app(settings, **{**options, "config": parse_config(raw)})
    text = "What does the premium plan cost?"
    with ServerThread(app) as server:
        outcomes = [
            _ask(server.url, headers, text).headers["x-stagecache"]
            for headers in (
                [_key(ORG_A)],
                [_key(ORG_A), ("x-stagecache-user", "bob")],
                [_key(ORG_B)],
                [ALICE],
                [],
            )
        ]
    assert outcomes == ["miss", "hit", "miss", "skip", "skip"]


def test_an_upstream_that_takes_any_key_gets_nothing_cached(
    options: dict[str, Any],
) -> None:
    # A local server without auth (clients send "EMPTY"): a key names no one, so
    # the user header would be all there is. Not cached; use --api-keys there.
    with ServerThread(FakeUpstream().app) as open_upstream:
        settings = ProxySettings(upstream=open_upstream.url + "/v1")
        with ServerThread(create_app(settings, **options)) as server:
            for _ in range(2):
                response = _ask(server.url, [_key("EMPTY"), ALICE])
                assert response.status_code == 200
                assert response.headers["x-stagecache"] == "skip"


def test_api_keys_mode_refuses_a_conflicting_user_header(
    upstream: tuple[AuthUpstream, str], options: dict[str, Any]
) -> None:
    settings = ProxySettings(
        upstream=upstream[1],
        upstream_key=ORG_A,
        api_keys={"sk-proxy-alice": Caller(user_id="alice")},
    )
    with ServerThread(create_app(settings, **options)) as server:
        mine = [_key("sk-proxy-alice")]
        other = _ask(server.url, [*mine, ("x-stagecache-user", "bob")])
        assert _error(other, 400)["param"] == "x-stagecache-user"
        same = _ask(server.url, [*mine, ALICE])
        assert same.status_code == 200 and same.headers["x-stagecache"] == "miss"


def test_a_configured_secret_keeps_scopes_across_workers(
    upstream: tuple[AuthUpstream, str], options: dict[str, Any], tmp_path: Path
) -> None:
    """Workers over one backend find each other's entries only with one secret."""
    raw = {
        "verifier": {"kind": "structural"},
        "cache": {
            "timeout_s": 30.0,
            "backend": {"kind": "sqlite", "path": str(tmp_path / "cache.db")},
        },
    }
    shared = {**options, "config": parse_config(raw)}
    text = "How do I export my order history?"

    def outcome(secret: str | None) -> str:
        settings = ProxySettings(upstream=upstream[1], identity_secret=secret)
        with ServerThread(create_app(settings, **shared)) as server:
            response = _ask(server.url, [_key(ORG_A), ALICE], text)
            assert response.status_code == 200
            return str(response.headers["x-stagecache"])

    assert outcome(SECRET) == "miss"
    assert outcome(SECRET) == "hit"  # a second worker, the same secret
    assert outcome(SECRET.upper()) == "miss"  # another secret: another scope
    assert outcome(None) == "miss"  # a random per-process secret


def test_client_chosen_model_ids_are_not_metric_labels(
    upstream: tuple[AuthUpstream, str], options: dict[str, Any]
) -> None:
    settings = ProxySettings(upstream=upstream[1])
    with ServerThread(create_app(settings, **options)) as server:
        listed = httpx.get(server.url + "/v1/models", headers=[_key(ORG_A)])
        assert listed.status_code == 200
        for model in ("gpt-test", "carol.secret@example.com", "x" * 300):
            _ask(server.url, [_key(ORG_A), ALICE], "Hello there", model=model)
        metrics = httpx.get(server.url + "/metrics").text
    assert 'model="gpt-test"' in metrics  # listed by the upstream: its own label
    assert 'model="other"' in metrics
    assert "example.com" not in metrics and "xxxx" not in metrics


def test_an_admin_purge_reaches_a_default_mode_user(
    upstream: tuple[AuthUpstream, str], options: dict[str, Any]
) -> None:
    # In the default mode a user's tenant is a keyed hash of their credential, which
    # the operator cannot name: a purge of the user id must still erase them.
    settings = ProxySettings(upstream=upstream[1], admin_key="admin-" + "x" * 20)
    admin = {"authorization": f"Bearer {settings.admin_key}"}
    text = "Where do I download my monthly invoices?"
    with ServerThread(create_app(settings, **options)) as server:
        _cache_alice(server.url, text)
        purge = httpx.post(
            server.url + "/admin/purge", json={"user_id": "alice"}, headers=admin
        )
        assert purge.status_code == 200 and purge.json()["removed"] >= 1
        again = _ask(server.url, [_key(ORG_A), ALICE], text)
        assert again.headers["x-stagecache"] == "miss"
