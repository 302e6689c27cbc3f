"""Scope encoding, skip reasons and settings validation."""

from __future__ import annotations

import pytest

import stagecache.cache as cache_pkg
from stagecache._model import Caller
from stagecache.cache import (
    BackendSettings,
    CacheSettings,
    KeyParts,
    Scope,
    SemanticCache,
    TtlPattern,
    resolve_scope,
)
from stagecache.errors import ConfigError

PARTS = KeyParts("m", "i", "c")


def test_public_names_are_sorted_and_importable() -> None:
    assert cache_pkg.__all__ == sorted(cache_pkg.__all__)
    for name in cache_pkg.__all__:
        assert getattr(cache_pkg, name) is not None


def test_colon_in_user_id_cannot_collide_with_session() -> None:
    settings = CacheSettings(scope="per_session")
    a = resolve_scope(settings, Caller(user_id="alice:x", session_id="y"))
    b = resolve_scope(settings, Caller(user_id="alice", session_id="x:y"))
    assert isinstance(a, Scope) and isinstance(b, Scope)
    assert a.key != b.key and a.hash != b.hash


def test_user_with_separator_differs_from_user_plus_session() -> None:
    per_user = resolve_scope(CacheSettings(), Caller(user_id="alice:x"))
    per_session = resolve_scope(
        CacheSettings(scope="per_session"), Caller(user_id="alice", session_id="x")
    )
    assert isinstance(per_user, Scope) and isinstance(per_session, Scope)
    assert per_user.key != per_session.key


def test_tenant_is_part_of_the_key() -> None:
    a = resolve_scope(CacheSettings(), Caller(user_id="u", tenant="t1"))
    b = resolve_scope(CacheSettings(), Caller(user_id="u", tenant="t2"))
    assert isinstance(a, Scope) and isinstance(b, Scope) and a.key != b.key


def test_hash_never_contains_the_user_id() -> None:
    scope = resolve_scope(CacheSettings(), Caller(user_id="alice"))
    assert isinstance(scope, Scope)
    assert "alice" not in scope.hash and len(scope.hash) == 16


@pytest.mark.parametrize(
    ("settings", "caller", "reason"),
    [
        (CacheSettings(), Caller(), "no_user_id"),
        (CacheSettings(scope="per_session"), Caller(user_id="u"), "no_session_id"),
        (CacheSettings(scope="per_session"), Caller(session_id="s"), "no_user_id"),
    ],
)
def test_missing_ids_skip(settings: CacheSettings, caller: Caller, reason: str) -> None:
    assert resolve_scope(settings, caller) == reason


def test_shared_scope_needs_no_user_and_ignores_it_in_the_key() -> None:
    settings = CacheSettings(scope="shared", shared_data_acknowledged=True)
    a = resolve_scope(settings, Caller(user_id="alice"))
    b = resolve_scope(settings, Caller())
    assert isinstance(a, Scope) and isinstance(b, Scope)
    assert a.key == b.key and a.user_id == "alice" and b.user_id is None


@pytest.mark.anyio
async def test_colliding_looking_scopes_do_not_share_entries(embed) -> None:
    q = "How do I reset my password?"
    async with SemanticCache(CacheSettings(scope="per_session")) as cache:
        a = cache.scope_for(Caller(user_id="alice:x", session_id="y"))
        b = cache.scope_for(Caller(user_id="alice", session_id="x:y"))
        assert isinstance(a, Scope) and isinstance(b, Scope)
        await cache.store(a, q, embed(q), PARTS, "a")
        assert (await cache.lookup(b, embed(q), PARTS, q)).hit is None


def test_shared_without_acknowledgement_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        CacheSettings(scope="shared").check()
    text = str(info.value)
    assert "cache.scope" in text and "shared_data_acknowledged" in text
    assert "every other user" in text
    with pytest.raises(ConfigError):
        SemanticCache(CacheSettings(scope="shared"))


@pytest.mark.parametrize(
    ("settings", "field", "hint"),
    [
        (CacheSettings(threshold=1.5), "cache.threshold", "(0, 1]"),
        (CacheSettings(threshold=0.0), "cache.threshold", "(0, 1]"),
        (CacheSettings(default_ttl=0), "cache.default_ttl", "> 0"),
        (CacheSettings(max_entries_per_user=0), "cache.max_entries_per_user", ">= 1"),
        (CacheSettings(max_total_entries=0), "cache.max_total_entries", ">= 1"),
        (CacheSettings(top_k=0), "cache.top_k", ">= 1"),
        (
            CacheSettings(ttl_patterns=[TtlPattern("(unclosed", 10)]),
            "cache.ttl_patterns[0].pattern",
            "regular expression",
        ),
        (
            CacheSettings(ttl_patterns=[TtlPattern("ok", -1)]),
            "cache.ttl_patterns[0].ttl_s",
            "> 0",
        ),
        (CacheSettings(max_hot_scopes=10), "cache.max_hot_scopes", "index_dir"),
        (
            CacheSettings(backend=BackendSettings(kind="sqlite")),
            "cache.backend.path",
            "file path",
        ),
    ],
)
def test_bad_settings_name_the_field(
    settings: CacheSettings, field: str, hint: str
) -> None:
    with pytest.raises(ConfigError) as info:
        settings.check(path="pipeline.toml")
    assert info.value.field == field
    assert str(info.value).startswith(f"pipeline.toml: {field}: ")
    assert hint in str(info.value)


def test_unknown_field_is_rejected_on_decode() -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError, match="threshhold"):
        msgspec.convert({"threshhold": 0.9}, CacheSettings)
