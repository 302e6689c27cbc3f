"""Cache scopes: which partition of the cache a caller reads and writes.

A scope's key is the JSON encoding of ``[mode, tenant, user, session]``. JSON quotes
and escapes every part, so no choice of ids can make two different callers share a
key (user ``"alice:x"`` without a session and user ``"alice"`` in session ``"x"``
encode differently). Telemetry only ever sees ``Scope.hash``, a short sha256 of the
key, never the raw user id.

A user exists inside a tenant: entries are attributed to the *owner* (tenant, user),
and the per-user cap, ``purge_user`` and the ``users`` count all work on owners, so
user "1001" of tenant "acme" and user "1001" of tenant "globex" are two users.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import msgspec

from stagecache._model import Caller, check_id
from stagecache.cache._settings import CacheSettings, KeyParts
from stagecache.errors import InputError

__all__ = [
    "OWNER_SEPARATOR",
    "Scope",
    "check_purge",
    "normalise_query",
    "owner_key",
    "query_key",
    "resolve_scope",
    "scope_hash",
]

#: Joins tenant and user in an owner key. A control character, which no valid id
#: contains (``check_id``), so no two (tenant, user) pairs share a key.
OWNER_SEPARATOR = "\x1f"

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
        tenant: the caller's tenant (None: no tenant); entries record it.
    """

    mode: str
    key: str
    hash: str
    user_id: str | None
    tenant: str | None = None

    @property
    def owner(self) -> str | None:
        """The owner key of entries written through the scope (None: no user)."""
        return owner_key(self.tenant, self.user_id)


def owner_key(tenant: str | None, user_id: str | None) -> str | None:
    """The key of user ``user_id`` inside ``tenant``: what caps and purges count.

    Without a tenant it is the user id itself (so data written before tenants
    were counted apart keeps its key); with one, ``tenant + "\\x1f" + user``.
    Returns None when there is no user.
    """
    if user_id is None:
        return None
    if tenant is None:
        return user_id
    return tenant + OWNER_SEPARATOR + user_id


def check_purge(user_id: object, tenant: object, all_tenants: object) -> None:
    """Check the arguments of a ``purge_user`` call.

    Raises:
        InputError: ``user_id`` or ``tenant`` is not a valid id (see
            :func:`~stagecache._model.check_id`), or both ``tenant`` and
            ``all_tenants`` are given.
    """
    if check_id(user_id, "user_id") is None:
        raise InputError("user_id: purge_user needs a user id (a non-empty string)")
    check_id(tenant, "tenant")
    if not isinstance(all_tenants, bool):
        raise InputError(
            f"all_tenants: expected True or False, got {type(all_tenants).__name__}"
        )
    if all_tenants and tenant is not None:
        raise InputError(
            "tenant, all_tenants: give a tenant to purge the user of that tenant, "
            "or all_tenants=True (and no tenant) to purge the id in every tenant"
        )


def scope_hash(key: str) -> str:
    """The telemetry form of a scope key: 16 hex digits of its sha256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _clean(value: str | None) -> str | None:
    # Callers refuse empty ids (check_id); this only guards objects built around
    # the constructor: "" must never become a scope of its own.
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
    return Scope(mode=mode, key=key, hash=scope_hash(key), user_id=user, tenant=tenant)


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
