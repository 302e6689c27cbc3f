"""Cache scopes: which partition of the cache a caller reads and writes.

A scope's key is the JSON encoding of ``[mode, tenant, user, session]``. JSON quotes
and escapes every part, so no choice of ids can make two different callers share a
key (user ``"alice:x"`` without a session and user ``"alice"`` in session ``"x"``
encode differently). Telemetry only ever sees ``Scope.hash``, a short sha256 of the
key, never the raw user id.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import msgspec

from stagecache._model import Caller
from stagecache.cache._settings import CacheSettings, KeyParts

__all__ = ["Scope", "normalise_query", "query_key", "resolve_scope", "scope_hash"]

_SPACES = re.compile(r"\s+")


class Scope(msgspec.Struct, frozen=True):
    """A partition of the cache; entries are invisible outside their scope.

    Attributes:
        mode: ``per_user``, ``per_session`` or ``shared``.
        key: internal, collision-free encoding of (mode, tenant, user, session).
        hash: short sha256 hex of ``key``; the only form used in telemetry.
        user_id: the caller's user id. Entries written through the scope are
            attributed to this user, so ``purge_user`` removes them, even in a
            shared scope (where the key does not include the user).
    """

    mode: str
    key: str
    hash: str
    user_id: str | None


def scope_hash(key: str) -> str:
    """The telemetry form of a scope key: 16 hex digits of its sha256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _clean(value: str | None) -> str | None:
    # An empty string is as good as no id: caching under "" would pool every
    # caller that forgot to set the field into one scope.
    return value if value else None


def resolve_scope(settings: CacheSettings, caller: Caller) -> Scope | str:
    """The scope of ``caller`` under ``settings``, or why the request is not cached.

    Returns:
        A :class:`Scope`, or a skip reason: ``"no_user_id"`` (non-shared scope
        and no user id) or ``"no_session_id"`` (``per_session`` and no session id).
    """
    mode = settings.scope
    tenant = _clean(caller.tenant)
    user = _clean(caller.user_id)
    session = _clean(caller.session_id)
    if mode == "shared":
        parts: list[str | None] = [mode, tenant, None, None]
    elif user is None:
        return "no_user_id"
    elif mode == "per_session":
        if session is None:
            return "no_session_id"
        parts = [mode, tenant, user, session]
    else:
        parts = [mode, tenant, user, None]
    key = msgspec.json.encode(parts).decode()
    return Scope(mode=mode, key=key, hash=scope_hash(key), user_id=user)


def normalise_query(query: str) -> str:
    """The form of a query used for exact de-duplication.

    NFKC folds look-alike code points, casefold folds case, and whitespace runs
    collapse to one space: "How do I  reset?" and "how do i reset?" are one query.
    """
    text = unicodedata.normalize("NFKC", query).casefold()
    return _SPACES.sub(" ", text).strip()


def query_key(query: str, parts: KeyParts, user_id: str | None = None) -> int:
    """A 64-bit digest of (user, normalised query, parts), the de-duplication key.

    The user is part of it because an entry is attributed to one user: in a shared
    scope, bob storing alice's question makes his own entry rather than rewriting
    hers (so ``purge_user("alice")`` removes exactly what came from alice).

    blake2b rather than ``hash()``: stable across processes. A collision inside one
    scope is about n^2 / 2^65 (1e-10 at 100,000 entries) and would only merge two
    stores into one entry, never serve an answer.
    """
    h = hashlib.blake2b(digest_size=8)
    for item in (
        user_id or "",
        normalise_query(query),
        parts.model_id,
        parts.instruction_hash,
        parts.context_fingerprint,
    ):
        data = item.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return int.from_bytes(h.digest(), "little")
