"""Who a proxied request runs as: identity from what authenticates it, never a header.

Three modes, chosen by the settings:

- **API keys** (``--api-keys``): the proxy checks the client's bearer key; the
  key's user (and tenant) is the caller. ``x-stagecache-user``, when sent, must
  name that same user; ``x-stagecache-session`` narrows to a session.
- **Upstream credential** (default): the client's ``Authorization`` goes upstream,
  and the upstream is what authenticates it. The caller's tenant is
  ``key:`` + an HMAC-SHA256 of that credential under the identity secret, so
  only a request carrying the same credential reaches the same entries; the
  user and session headers narrow inside it. An entry is stored only after the
  upstream answered, so a scope only fills for a credential the upstream took.
  That holds only if the upstream checks keys: :class:`UpstreamAuthCheck` asks it
  once with a random key, and an upstream that does not refuse it (a local
  server without auth, where every client sends ``EMPTY``) gets nothing cached.
- **Proxy-held upstream key** (``--upstream-key`` without ``--api-keys``):
  nothing authenticates the client, so nothing is cached.

A request without a credential is not cached (its caller is None). Duplicated
identity headers, empty or malformed values, and a user header that contradicts
the API key are refused with a 400 before anything goes upstream.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping

import anyio
from starlette.datastructures import Headers

from stagecache._model import Caller
from stagecache.errors import InputError
from stagecache.integrations._proxy_config import ProxySettings

__all__ = [
    "CREDENTIAL_TENANT_PREFIX",
    "IdentityError",
    "IdentityResolver",
    "UpstreamAuthCheck",
    "bearer",
]

_log = logging.getLogger("stagecache.proxy")

#: The tenant of a caller identified by its upstream credential starts with this.
CREDENTIAL_TENANT_PREFIX = "key:"
USER_HEADER = "x-stagecache-user"
SESSION_HEADER = "x-stagecache-session"
_MAX_ID_CHARS = 256
#: Domain separation: this HMAC key is used for nothing else.
_CONTEXT = b"stagecache proxy identity v1\x00"


class IdentityError(Exception):
    """The request's identity headers are refused (an OpenAI-shaped error)."""

    def __init__(
        self, status: int, message: str, *, param: str | None, code: str
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def _single(headers: Headers, name: str) -> str | None:
    values = headers.getlist(name)
    if len(values) > 1:
        raise IdentityError(
            400,
            f"The {name} header was sent {len(values)} times; send it once.",
            param=name,
            code="duplicate_header",
        )
    return values[0] if values else None


def _header_id(headers: Headers, name: str) -> str | None:
    """The header's value as an id (UTF-8), or None when absent."""
    raw = _single(headers, name)
    if raw is None:
        return None
    try:
        # Starlette decodes header bytes as latin-1; clients send UTF-8.
        value = raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        value = ""
        problem = "is not valid UTF-8"
    else:
        problem = ""
    if not problem:
        if not value.strip():
            problem = "is empty"
        elif value != value.strip():
            problem = "has leading or trailing spaces"
        elif len(value) > _MAX_ID_CHARS:
            problem = f"is longer than {_MAX_ID_CHARS} characters"
        elif any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
            problem = "contains control characters"
    if problem:
        raise IdentityError(
            400,
            f"The {name} header {problem}; send a printable id "
            f"of 1-{_MAX_ID_CHARS} characters, or leave the header out.",
            param=name,
            code="invalid_header",
        )
    return value


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    header = headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class IdentityResolver:
    """Maps a request's headers to the :class:`Caller` it runs as.

    Args:
        settings: the proxy's settings (API keys, upstream key, identity secret).
    """

    __slots__ = ("_secret", "_settings")

    def __init__(self, settings: ProxySettings) -> None:
        self._settings = settings
        if settings.identity_secret is not None:
            self._secret = settings.identity_secret.encode("utf-8")
        else:
            self._secret = secrets.token_bytes(32)
            if not settings.api_keys and settings.upstream_key is None:
                _log.warning(
                    "no identity secret configured: cache scopes are keyed by a "
                    "random per-process secret, so other workers and restarts do "
                    "not see these entries (set --identity-secret-env)"
                )
        if settings.upstream_key is not None and not settings.api_keys:
            _log.warning(
                "an upstream key without --api-keys: nothing authenticates the "
                "clients, so no request is cached (configure --api-keys)"
            )

    @property
    def by_credential(self) -> bool:
        """Whether identity comes from the client's upstream credential."""
        return not self._settings.api_keys and self._settings.upstream_key is None

    def credential_tenant(self, credential: str) -> str:
        """The tenant of an upstream credential: a keyed hash, never the key."""
        digest = hmac.new(
            self._secret, _CONTEXT + credential.encode("latin-1"), hashlib.sha256
        )
        return CREDENTIAL_TENANT_PREFIX + digest.hexdigest()[:32]

    def resolve(self, headers: Headers) -> Caller | None:
        """The request's caller; None: nothing authenticates it (not cached).

        Raises:
            IdentityError: duplicated or malformed identity headers (400), a
                missing or unknown API key in API-key mode (401), a user header
                that contradicts the API key (400).
        """
        authorization = _single(headers, "authorization")
        user = _header_id(headers, USER_HEADER)
        session = _header_id(headers, SESSION_HEADER)
        if self._settings.api_keys:
            return self._api_key_caller(headers, user, session)
        if self._settings.upstream_key is not None:
            return None  # the proxy's own key goes upstream: the client is unknown
        credential = _credential(authorization)
        if credential is None:
            return None
        return _caller(
            user_id=user, session_id=session, tenant=self.credential_tenant(credential)
        )

    def _api_key_caller(
        self, headers: Headers, user: str | None, session: str | None
    ) -> Caller:
        key = bearer(headers)
        if key is None:
            raise IdentityError(
                401,
                "You didn't provide an API key: Authorization: Bearer <key>.",
                param=None,
                code="missing_api_key",
            )
        known = self._settings.api_keys.get(key)
        if known is None:
            raise IdentityError(
                401, "Incorrect API key provided.", param=None, code="invalid_api_key"
            )
        if user is not None and user != known.user_id:
            raise IdentityError(
                400,
                f"The {USER_HEADER} header names another user than the API key's; "
                "leave it out (the key says who you are).",
                param=USER_HEADER,
                code="conflicting_identity",
            )
        return _caller(
            user_id=known.user_id,
            session_id=session or known.session_id,
            tenant=known.tenant,
        )


def _caller(
    *, user_id: str | None, session_id: str | None, tenant: str | None
) -> Caller:
    try:
        return Caller(user_id=user_id, session_id=session_id, tenant=tenant)
    except (InputError, ValueError, TypeError) as exc:  # the Caller's own checks
        raise IdentityError(
            400, f"Invalid identity: {exc}", param=USER_HEADER, code="invalid_header"
        ) from None


def _credential(authorization: str | None) -> str | None:
    """What authenticates the client upstream: the bearer token, or the header."""
    if authorization is None:
        return None
    value = authorization.strip()
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer":
        value = token.strip()
    return value or None


#: Probe answers that say "this key is refused" / "this request was looked at
#: without a key check" (a validation error or an answer).
_REFUSED = frozenset({401, 403})
_OPEN = frozenset({200, 201, 400, 422})


class UpstreamAuthCheck:
    """Whether the upstream authenticates clients, probed with a random key.

    A credential is an identity only if the upstream refuses a wrong one. The
    probe sends a random key with an empty body: 401/403 means keys are checked;
    a validation error (400/422) or an answer means they are not (nothing is
    cached then); anything else (unreachable, 5xx, 404) is unknown: not cached,
    asked again after ``retry_s``. A verdict is asked again after ``recheck_s``.

    Args:
        probe: sends the probe with the given bearer key; the HTTP status, or
            None when the upstream could not be reached.
        retry_s: wait before asking again after an unknown answer.
        recheck_s: how long a verdict holds.
    """

    __slots__ = ("_lock", "_probe", "_recheck_s", "_retry_s", "_until", "_verdict")

    def __init__(
        self,
        probe: Callable[[str], Awaitable[int | None]],
        *,
        retry_s: float = 30.0,
        recheck_s: float = 600.0,
    ) -> None:
        self._probe = probe
        self._retry_s = retry_s
        self._recheck_s = recheck_s
        self._verdict = False
        self._until = 0.0  # the verdict holds until then (monotonic seconds)
        self._lock: anyio.Lock | None = None

    async def authenticates(self) -> bool:
        """True once the upstream refused a random key (cached for a while)."""
        if time.monotonic() < self._until:
            return self._verdict
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if time.monotonic() >= self._until:
                await self._ask()
            return self._verdict

    async def _ask(self) -> None:
        status = await self._probe("sk-stagecache-probe-" + secrets.token_hex(16))
        previous = self._verdict
        if status in _REFUSED:
            self._verdict, hold = True, self._recheck_s
        elif status in _OPEN:
            self._verdict, hold = False, self._recheck_s
            _log.warning(
                "the upstream answered %s to a random API key: it does not "
                "authenticate clients, so the proxy cannot tell them apart and "
                "caches nothing (configure --api-keys)",
                status,
            )
        else:
            self._verdict, hold = False, self._retry_s
            _log.warning(
                "cannot tell whether the upstream checks API keys (probe: %s); "
                "not caching until it can",
                status if status is not None else "unreachable",
            )
        if self._verdict and not previous:
            _log.info("the upstream refuses unknown keys: caching per credential")
        self._until = time.monotonic() + hold
