"""The proxy's operator endpoints: ``POST /admin/purge``, ``/admin/invalidate`` and
``/admin/feedback``, behind ``Authorization: Bearer <admin key>``.

Each checks the admin key (constant-time; 403 when the proxy has none), then its
JSON body field by field: a field of the wrong type is an OpenAI-shaped 400 naming
it (``param``), never a traceback.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stagecache._model import Caller
from stagecache.errors import InputError
from stagecache.integrations._proxy_config import ProxySettings
from stagecache.integrations._proxy_embeddings import EmbeddingCaches
from stagecache.integrations._proxy_errors import error_response
from stagecache.integrations._proxy_identity import bearer
from stagecache.pipeline import Pipeline

__all__ = ["AdminEndpoints"]


def _error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> JSONResponse:
    return error_response(
        status, message, "invalid_request_error", param=param, code=code
    )


JsonReader = Callable[[Request], Awaitable["dict[str, Any] | JSONResponse"]]


class AdminEndpoints:
    """The admin routes of one proxy.

    Args:
        settings: the proxy's settings (``admin_key``: None disables them).
        pipeline: the pipeline whose cache they act on.
        embedding_caches: the embedding caches a purge also empties.
        read_json: the proxy's body reader (size limit, JSON object check).
    """

    def __init__(
        self,
        settings: ProxySettings,
        pipeline: Pipeline,
        embedding_caches: EmbeddingCaches,
        *,
        read_json: JsonReader,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.embedding_caches = embedding_caches
        self.read_json = read_json

    async def _admin_body(self, request: Request) -> dict[str, Any] | JSONResponse:
        if self.settings.admin_key is None:
            return _error(
                403, "admin endpoints are disabled (no admin key)", code="forbidden"
            )
        key = bearer(request.headers)
        if key is None:
            return _error(401, "admin key required", code="missing_api_key")
        if not hmac.compare_digest(key.encode(), self.settings.admin_key.encode()):
            return _error(403, "wrong admin key", code="forbidden")
        return await self.read_json(request)

    async def _user_body(
        self, request: Request
    ) -> tuple[dict[str, Any], str, str | None] | JSONResponse:
        """The admin body with its ``user_id`` and optional ``tenant`` checked."""
        body = await self._admin_body(request)
        if isinstance(body, JSONResponse):
            return body
        user, tenant = body.get("user_id"), body.get("tenant")
        if not isinstance(user, str) or not user:
            return _error(400, "user_id: a non-empty string", param="user_id")
        if tenant is not None and not isinstance(tenant, str):
            return _error(400, "tenant: a string", param="tenant")
        return body, user, tenant

    async def purge(self, request: Request) -> Response:
        asked = await self._user_body(request)
        if isinstance(asked, JSONResponse):
            return asked
        _, user, tenant = asked
        try:
            # No tenant named: the id in every tenant. In the default mode a tenant
            # is a keyed hash of a credential, which an operator cannot name.
            removed = await self.pipeline.cache.purge_user(
                user, tenant=tenant, all_tenants=tenant is None
            )
        except InputError as exc:
            return _error(400, str(exc))
        removed += self.embedding_caches.purge(user, tenant)  # the user's vectors
        return JSONResponse({"removed": removed})

    async def invalidate(self, request: Request) -> Response:
        asked = await self._user_body(request)
        if isinstance(asked, JSONResponse):
            return asked
        body, user, tenant = asked
        session = body.get("session_id")
        if session is not None and not isinstance(session, str):
            return _error(400, "session_id: a string", param="session_id")
        try:
            caller = Caller(user_id=user, session_id=session, tenant=tenant)
            removed = await self.pipeline.cache.invalidate(caller)
        except InputError as exc:
            return _error(400, str(exc), param="user_id")
        return JSONResponse({"removed": removed})

    async def feedback(self, request: Request) -> Response:
        body = await self._admin_body(request)
        if isinstance(body, JSONResponse):
            return body
        entry, correct = body.get("entry_id"), body.get("correct")
        if not isinstance(entry, str) or not isinstance(correct, bool):
            return _error(400, "expected {entry_id: str, correct: bool, query?: str}")
        query = body.get("query")
        if query is not None and not isinstance(query, str):
            return _error(
                400, "query: the text that got the hit, a string", param="query"
            )
        try:  # with the query, the verdict joins the feedback log `tune` reads
            found = await self.pipeline.cache.feedback(entry, correct, query=query)
        except InputError as exc:
            return _error(400, str(exc), param="query")
        return JSONResponse({"found": found}, status_code=200 if found else 404)
