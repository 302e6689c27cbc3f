"""Ids are non-empty strings (issue 13, finding 3): bytes, numbers, UUIDs,
containers, empty strings, lone surrogates, control characters and overlong ids
are an InputError naming the field, at the construction of a Caller and at every
operator entry point (purge_user, remember, the proxy)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pytest
from tenant_backends import MakeSettings, anyio_backend, cache_settings

import stagecache
from stagecache import Caller
from stagecache.config import PipelineConfig, build
from stagecache.errors import InputError
from stagecache.memory import MemoryStore
from stagecache.testing import ScriptedLLM

__all__ = ["anyio_backend", "cache_settings"]

FIELDS = ("user_id", "session_id", "tenant")
BAD = {
    "bytes": b"alice",
    "int": 1001,
    "float": 1001.0,
    "bool": True,
    "tuple": ("alice",),
    "list": ["alice"],
    "dict": {"id": "alice"},
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "empty": "",
    "lone-surrogate": "alice\ud800",
    "nul": "a\x00b",
    "tab": "a\tb",
    "newline": "alice\n",
    "c1-control": "alice\x85",
    "overlong": "u" * 257,
}
GOOD = ["alice", "Zoë", "用户-7", "a b", "u" * 256, '["per_user",null', "😀"]


class HashEmbedder:
    """Identical texts get identical unit vectors (a custom embedder)."""

    model_id = "hash-embedder"
    dim = 384

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", list(BAD.values()), ids=list(BAD))
def test_a_bad_id_is_an_input_error_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(InputError, match=rf"caller\.{field}: .*(string|characters)"):
        Caller(**{field: value})


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", GOOD)
def test_a_good_id_is_accepted(field: str, value: str) -> None:
    assert getattr(Caller(**{field: value}), field) == value


def test_no_user_id_is_still_allowed_and_not_cached() -> None:
    assert Caller().user_id is None
    assert Caller(user_id=None, session_id=None, tenant=None).tenant is None


@pytest.mark.parametrize("raw", [b'{"user_id": ""}', b'{"tenant": "a\\u0000"}'])
def test_a_bad_id_in_untrusted_json_is_a_validation_error(raw: bytes) -> None:
    with pytest.raises(msgspec.ValidationError, match="caller"):
        msgspec.json.decode(raw, type=Caller)


def test_replace_cannot_sneak_a_bad_id_in() -> None:
    with pytest.raises(InputError, match=r"caller\.user_id"):
        msgspec.structs.replace(Caller(user_id="alice"), user_id=b"alice")


@pytest.mark.anyio
async def test_bytes_never_reach_the_entry_of_their_base64_twin(
    cache_settings: MakeSettings,
) -> None:
    # The replay of the finding: with a custom embedder, Caller(user_id=b"alice")
    # was served the entry of user "YWxpY2U=" (msgspec encodes bytes as base64).
    pipeline = build(
        PipelineConfig(cache=cache_settings()),
        llm=ScriptedLLM(lambda p: "the answer of YWxpY2U="),
        embedder=HashEmbedder(),
    )
    question = "What is my account balance?"
    async with pipeline:
        stored = await pipeline.run(question, caller=Caller(user_id="YWxpY2U="))
        assert stored.cache.stored
        with pytest.raises(InputError, match=r"caller\.user_id"):
            await pipeline.run(question, caller=Caller(user_id=b"alice"))  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "value", [b"alice", 7, ("a",), ["a"], {"a": 1}, "", "a\x00", "\udc00"]
)
async def test_purge_and_remember_reject_bad_ids(embedder: Any, value: Any) -> None:
    pipeline = build(llm=ScriptedLLM(lambda p: "ok"), embedder=embedder)
    async with pipeline:
        with pytest.raises(InputError, match="user_id"):
            await pipeline.cache.purge_user(value)
        with pytest.raises(InputError, match="tenant"):
            await pipeline.cache.purge_user("alice", tenant=value)
        with pytest.raises(InputError, match="user_id"):
            await pipeline.cache.remember(value, "a fact")
        with pytest.raises(InputError, match="tenant"):
            await pipeline.cache.remember("alice", "a fact", tenant=value)


@pytest.mark.anyio
async def test_the_memory_store_rejects_bad_ids(embedder: Any) -> None:
    store = MemoryStore(embedder)
    with pytest.raises(InputError, match="user_id"):
        await store.remember(["alice"], "a fact")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="user_id"):
        store.search({"a": 1}, np.ones(384, dtype=np.float32))  # type: ignore[arg-type]


def _proxy_client() -> Any:
    from starlette.testclient import TestClient

    from stagecache.integrations.proxy import ProxySettings, create_app

    pipeline = stagecache.Pipeline.default(
        llm=ScriptedLLM(lambda p: "ok"), embedder=HashEmbedder()
    )
    settings = ProxySettings(upstream="http://127.0.0.1:9/v1", admin_key="admin")
    return TestClient(create_app(settings, pipeline=pipeline))


@pytest.mark.parametrize("header", ["x-stagecache-user", "x-stagecache-session"])
@pytest.mark.parametrize("value", ["a\tb", "alice\x85"])
def test_the_proxy_answers_a_bad_id_header_with_a_400(header: str, value: str) -> None:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    raw = value.encode("latin-1")
    with _proxy_client() as client:
        response = client.post(
            "/v1/chat/completions",
            json=body,
            headers=[(header.encode(), raw), (b"x-stagecache-user", b"bob")]
            if header != "x-stagecache-user"
            else [(header.encode(), raw)],
        )
    assert response.status_code == 400, response.text
    # The proxy checks its identity headers first and names the header.
    assert header in response.json()["error"]["message"]


def test_the_proxy_admin_endpoints_answer_bad_ids_with_a_400() -> None:
    auth = {"authorization": "Bearer admin"}
    with _proxy_client() as client:
        purge = client.post("/admin/purge", json={"user_id": "a\x00b"}, headers=auth)
        tenant = client.post(
            "/admin/purge", json={"user_id": "alice", "tenant": 5}, headers=auth
        )
        invalidate = client.post(
            "/admin/invalidate", json={"user_id": "alice", "tenant": ""}, headers=auth
        )
        fine = client.post(
            "/admin/purge", json={"user_id": "alice", "tenant": "acme"}, headers=auth
        )
    assert [purge.status_code, tenant.status_code, invalidate.status_code] == [400] * 3
    assert fine.status_code == 200 and fine.json() == {"removed": 0}
