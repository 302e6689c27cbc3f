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
from collections.abc import Mapping

from starlette.datastructures import Headers

from stagecache._model import Caller
from stagecache.integrations._proxy_config import ProxySettings

__all__ = ["CREDENTIAL_TENANT_PREFIX", "IdentityError", "IdentityResolver"]

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
        return Caller(
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
        return Caller(
            user_id=known.user_id,
            session_id=session or known.session_id,
            tenant=known.tenant,
        )


def _credential(authorization: str | None) -> str | None:
    """What authenticates the client upstream: the bearer token, or the header."""
    if authorization is None:
        return None
    value = authorization.strip()
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer":
        value = token.strip()
    return value or None
