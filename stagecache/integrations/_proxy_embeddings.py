"""``POST /v1/embeddings`` through the library's embedding cache.

A text the proxy has embedded before, for the same caller scope, model and
``dimensions``, is not sent upstream again: each request forwards only the texts
it has not seen (de-duplicated, in one upstream call) and the reply is assembled
in the request's order. The cache is :class:`~stagecache.embeddings.CachedEmbedder`
(in memory), one per (scope, model, dimensions), so its key is the model and the
normalised text (NFC, whitespace runs collapsed: the normalised text is what goes
upstream), and a scope never reads another's vectors. Scopes are the chat
cache's (a keyed hash of the credential, narrowed by the user header, or the API
key's user); a request without one is passed through uncached.

The cache keeps vectors as L2-normalised float32 rows (OpenAI's already are),
so a hit returns the vector the first request got, to float32 precision, in
``float`` or ``base64`` encoding as asked. ``usage`` counts the tokens of what
went upstream (0 for a full hit). ``x-stagecache`` is ``hit`` (nothing sent),
``miss`` (everything sent) or ``partial``. Token-array inputs are passed through.
"""

from __future__ import annotations

import base64
import contextvars
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
from starlette.responses import JSONResponse, Response

from stagecache.cache import Scope
from stagecache.embeddings import CachedEmbedder
from stagecache.errors import EmbeddingError, InputError
from stagecache.integrations._proxy_errors import error_response
from stagecache.integrations._proxy_passthrough import forward
from stagecache.integrations._upstream import (
    UpstreamFailure,
    failure_of,
    forwarded_headers,
)
from stagecache.types import Vectors

__all__ = ["EmbeddingCaches", "texts_of"]

#: How many (scope, model, dimensions) caches are kept (least recently used go).
MAX_CACHES = 128
#: Vectors kept in memory per cache.
MEMORY_ITEMS = 4096


class _UpstreamReply(Exception):
    """The upstream answered the misses with an error status (kept verbatim)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class _Call:
    """One proxied embeddings request: what goes upstream and what came back."""

    __slots__ = (
        "body",
        "client",
        "headers",
        "sent",
        "upstream_headers",
        "url",
        "usage",
    )

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> None:
        self.client = client
        self.url = url
        self.body = body
        self.headers = headers
        self.sent = 0
        self.usage = 0
        self.upstream_headers: dict[str, str] = {}


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "stagecache_proxy_embeddings", default=None
)


class _ForwardingEmbedder:
    """The inner embedder of a scope's cache: sends the current request's misses."""

    __slots__ = ("_dim", "model_id")

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise EmbeddingError(f"{self.model_id}: dimension not known yet")
        return self._dim

    async def embed(self, texts: Sequence[str]) -> Vectors:
        call = _CALL.get()
        if call is None:
            raise EmbeddingError("the proxy's embedder only answers proxy requests")
        body = {**call.body, "input": list(texts), "encoding_format": "float"}
        call.sent += len(texts)
        try:
            response = await call.client.post(call.url, json=body, headers=call.headers)
        except httpx.HTTPError as exc:
            raise failure_of(exc) from exc
        call.upstream_headers = forwarded_headers(response.headers)
        if response.status_code >= 400:
            raise _UpstreamReply(response)
        try:
            data = response.json()
            rows = sorted(data["data"], key=lambda item: int(item["index"]))
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
            usage = data.get("usage") or {}
            call.usage += int(usage.get("prompt_tokens") or 0)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UpstreamFailure(
                502,
                "bad_upstream_response",
                "The upstream's embeddings reply has no readable data[].embedding.",
            ) from None
        if vectors.ndim == 2 and vectors.shape[0] == len(texts):
            self._dim = self._dim or int(vectors.shape[1])
        return vectors


def texts_of(value: object) -> list[str] | None:
    """The input's texts (a string or a list of strings); None: not cacheable."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None  # token arrays, empty lists, ...: the upstream decides


class EmbeddingCaches:
    """The proxy's embedding caches, one per (scope, model, dimensions)."""

    def __init__(self) -> None:
        self._caches: OrderedDict[tuple[str, str, str], CachedEmbedder] = OrderedDict()
        #: scope key -> (user id, tenant) of its owner, for purges.
        self._owners: dict[str, tuple[str | None, str | None]] = {}

    def _cache(self, scope: Scope, model: str, dimensions: object) -> CachedEmbedder:
        key = (scope.key, model, repr(dimensions))
        cache = self._caches.get(key)
        if cache is None:
            inner = _ForwardingEmbedder(f"{model}|dimensions={dimensions!r}")
            cache = CachedEmbedder(inner, memory_items=MEMORY_ITEMS)
            self._caches[key] = cache
            self._owners[scope.key] = (scope.user_id, scope.tenant)
            while len(self._caches) > MAX_CACHES:
                (gone, _, _), _ = self._caches.popitem(last=False)
                if not any(k[0] == gone for k in self._caches):
                    self._owners.pop(gone, None)
        self._caches.move_to_end(key)
        return cache

    def purge(self, user_id: str, tenant: str | None = None) -> int:
        """Drop every cache of ``user_id`` (in ``tenant``, or in every tenant).

        Returns:
            The number of vectors dropped.
        """
        scopes = {
            key
            for key, (user, owner_tenant) in self._owners.items()
            if user == user_id and (tenant is None or owner_tenant == tenant)
        }
        removed = 0
        for key in [k for k in self._caches if k[0] in scopes]:
            cache = self._caches.pop(key)
            removed += cache.stats.misses
            cache.clear_memory()
        for scope in scopes:
            self._owners.pop(scope, None)
        return removed

    async def serve(
        self,
        body: dict[str, Any],
        *,
        scope: Scope | None,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        models: frozenset[str],
    ) -> Response:
        """Answer an embeddings request (``scope`` None: passed through uncached).

        Args:
            body: the validated JSON body.
            scope: the caller's cache scope.
            client: the upstream connection pool.
            url: the upstream's ``/embeddings`` URL.
            headers: the credential to send upstream.
            models: the operator's model allow-list (empty: any).
        """
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error_response(
                400, "you must provide a model parameter", param="model"
            )
        if models and model not in models:
            return error_response(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        if body.get("encoding_format") not in (None, "float", "base64"):
            return error_response(
                400,
                "encoding_format: 'float' or 'base64'",
                param="encoding_format",
            )
        texts = texts_of(body.get("input"))
        if texts is None or scope is None:
            return await forward(
                client, "POST", url, json_body=body, headers=headers, outcome="skip"
            )
        return await self._answer(
            scope=scope, body=body, texts=texts, client=client, url=url, headers=headers
        )

    async def _answer(
        self,
        *,
        scope: Scope,
        body: dict[str, Any],
        texts: list[str],
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
    ) -> Response:
        """Embed ``texts`` from the scope's cache, sending only its misses upstream."""
        model = str(body["model"])
        cache = self._cache(scope, model, body.get("dimensions"))
        upstream_body = {
            k: v for k, v in body.items() if k not in ("input", "encoding_format")
        }
        call = _Call(client, url, upstream_body, headers)
        token = _CALL.set(call)
        try:
            vectors = await cache.embed(texts)
        except _UpstreamReply as exc:
            reply = exc.response
            return Response(
                reply.content,
                status_code=reply.status_code,
                media_type=reply.headers.get("content-type"),
                headers={**call.upstream_headers, "x-stagecache": "miss"},
            )
        except UpstreamFailure as exc:
            return error_response(
                exc.status,
                exc.message,
                code=exc.code,
                headers={**call.upstream_headers, "x-stagecache": "error"},
            )
        except InputError as exc:
            return error_response(400, str(exc), param="input", code="invalid_input")
        except EmbeddingError as exc:  # rows or dimensions that do not fit
            return error_response(
                502,
                f"The upstream's embeddings do not fit: {exc}",
                code="bad_upstream_response",
                headers={"x-stagecache": "error"},
            )
        finally:
            _CALL.reset(token)
        distinct = len({cache.key(t) for t in texts})
        outcome = (
            "hit" if not call.sent else "miss" if call.sent >= distinct else "partial"
        )
        encoding = body.get("encoding_format") or "float"
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(row, encoding)}
            for i, row in enumerate(vectors)
        ]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": call.usage, "total_tokens": call.usage},
            },
            headers={**call.upstream_headers, "x-stagecache": outcome},
        )


def _encode(row: Vectors, encoding: object) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in row]
