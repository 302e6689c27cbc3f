"""``stagecache serve``: an OpenAI-compatible caching proxy (Starlette + uvicorn).

::

    stagecache serve --upstream http://127.0.0.1:8000/v1 --port 8080 \\
        --api-keys keys.json --admin-key-env STAGECACHE_ADMIN_KEY

Endpoints: ``POST /v1/chat/completions`` (JSON and SSE streaming), ``GET /v1/models``
(passed through), ``GET /healthz``, ``GET /metrics`` (Prometheus text), and the
admin endpoints ``POST /admin/purge {user_id}``, ``POST /admin/invalidate {user_id,
session_id?}``, ``POST /admin/feedback {entry_id, correct}`` (``Authorization:
Bearer <admin key>``).

Identity (:mod:`._proxy_identity`, docs/security.md): with ``--api-keys`` every
request needs a known key and runs as its user; otherwise the client's upstream
credential identifies it (a keyed hash of it is the tenant) and the
``x-stagecache-user`` / ``x-stagecache-session`` headers narrow inside it. A
request without a credential, or without a user under a non-shared scope, is not
cached; duplicated identity headers are a 400.

Every answer carries ``x-stagecache: hit|miss|skip|error`` (and
``x-stagecache-similarity`` when a candidate was found). A miss returns the
upstream's reply with only the answer text changed by the output guard; upstream
errors come back verbatim; if the cache machinery fails, the request is forwarded
as it is. A streamed request is answered once the whole answer is known (the output
guard must see all of it), replayed as ``chat.completion.chunk`` events; requests
the cache cannot key (images, ``n > 1``) are streamed straight through.

Needs ``pip install 'stagecache[serve]'``.
"""

from __future__ import annotations

import argparse
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from stagecache._model import Caller, Result
from stagecache.errors import InputError, StagecacheError
from stagecache.integrations._common import keyed_order, reorder, require_extra
from stagecache.integrations._openai_shapes import (
    chunks_of,
    completion,
    error_body,
    sse,
)
from stagecache.integrations._proxy_config import (
    ProxySettings,
    add_serve_arguments,
    load_api_keys,
    settings_from_namespace,
)
from stagecache.integrations._upstream import (
    CURRENT,
    ForwardingModel,
    ProxyRequest,
)
from stagecache.pipeline import Pipeline

require_extra("starlette", "serve")

from starlette.applications import Starlette  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from stagecache.exporters._propagation import TraceContextMiddleware  # noqa: E402
from stagecache.integrations._proxy_identity import (  # noqa: E402
    IdentityError,
    IdentityResolver,
    UpstreamAuthCheck,
    bearer,
)
from stagecache.integrations._proxy_metrics import (  # noqa: E402
    ModelLabels,
    ProxyMetrics,
)

__all__ = ["ProxySettings", "create_app", "load_api_keys", "serve", "serve_main"]


def _error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(message, type_, param=param, code=code), status_code=status
    )


def _chat_of(messages: list[Any]) -> list[dict[str, str]] | None:
    """The request's messages as the pipeline keys them; None: not keyable."""
    chat: list[dict[str, str]] = []
    for message in messages:
        if not isinstance(message, dict):
            return None
        role, content = message.get("role"), message.get("content")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            return None
        if isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            if len(parts) != len(content) or not all(isinstance(p, str) for p in parts):
                return None  # images, audio, files: not keyable by text
            content = "\n".join(str(p) for p in parts)
        elif content is None:
            content = ""
        elif not isinstance(content, str):
            return None
        if message.get("tool_calls"):
            content += " [tool calls] " + json.dumps(
                message["tool_calls"], sort_keys=True
            )
        chat.append({"role": str(role), "content": content})
    roles = [m["role"] for m in chat]
    if "user" not in roles:
        return None
    return reorder(chat, keyed_order(roles))


class _Proxy:
    def __init__(
        self,
        settings: ProxySettings,
        pipeline: Pipeline,
        model: ForwardingModel,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.model = model
        self.identity = IdentityResolver(settings)
        self.upstream_auth = UpstreamAuthCheck(self.probe_upstream)
        self.metrics = ProxyMetrics(ModelLabels(settings.models))

    # -- helpers ------------------------------------------------------------------

    def upstream_headers(self, request: Request) -> dict[str, str]:
        if self.settings.upstream_key:
            return {"authorization": f"Bearer {self.settings.upstream_key}"}
        if not self.settings.api_keys and "authorization" in request.headers:
            return {"authorization": request.headers["authorization"]}
        return {}

    def caller_of(self, request: Request) -> Caller | JSONResponse | None:
        """The request's caller (None: not cached), or the error refusing it."""
        try:
            return self.identity.resolve(request.headers)
        except IdentityError as exc:
            return _error(exc.status, exc.message, param=exc.param, code=exc.code)

    async def probe_upstream(self, key: str) -> int | None:
        """POST an empty chat request with ``key``: the upstream's status."""
        try:
            response = await self.model.client.post(
                self.model.base_url + "/chat/completions",
                json={},
                headers={"authorization": f"Bearer {key}"},
            )
        except Exception:  # httpx errors: unreachable, the verdict is unknown
            return None
        return response.status_code

    def anonymous_is_cached(self) -> bool:
        """Whether a caller without identity would get a cache scope (``shared``)."""
        try:
            return not isinstance(self.pipeline.cache.engine.scope_for(Caller()), str)
        except StagecacheError:  # no cache stage: nothing to keep apart
            return False

    def cacheable(self, caller: Caller) -> bool:
        """Whether ``caller`` has a cache scope (for the outcome of an error)."""
        try:
            return not isinstance(self.pipeline.cache.engine.scope_for(caller), str)
        except StagecacheError:
            return False

    async def read_json(self, request: Request) -> dict[str, Any] | JSONResponse:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(413, f"The request body exceeds {limit} bytes.")
        raw = b""
        async for piece in request.stream():
            raw += piece
            if len(raw) > limit:
                return _error(413, f"The request body exceeds {limit} bytes.")
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        return body

    def respond(
        self,
        body: dict[str, Any],
        stream: bool,
        include_usage: bool,
        headers: dict[str, str],
    ) -> Response:
        if not stream:
            return JSONResponse(body, headers=headers)
        chunks = chunks_of(
            body, chunk_chars=self.settings.chunk_chars, include_usage=include_usage
        )
        return StreamingResponse(
            _aiter(sse(chunks)), media_type="text/event-stream", headers=headers
        )

    async def passthrough(
        self, body: dict[str, Any], request: Request, outcome: str
    ) -> Response:
        """Forward the request as it is (streaming included)."""
        headers = {"x-stagecache": outcome}
        upstream_headers = self.upstream_headers(request)
        url = self.model.base_url + "/chat/completions"
        try:
            if not body.get("stream"):
                response = await self.model.client.post(
                    url, json=body, headers=upstream_headers
                )
                return Response(
                    response.content,
                    status_code=response.status_code,
                    media_type=response.headers.get("content-type"),
                    headers=headers,
                )
            outgoing = self.model.client.build_request(
                "POST", url, json=body, headers=upstream_headers
            )
            response = await self.model.client.send(outgoing, stream=True)
        except Exception as exc:  # httpx errors: the upstream is unreachable
            return _error(502, f"cannot reach the upstream: {exc}", "api_error")
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            media_type=response.headers.get("content-type"),
            headers=headers,
            background=BackgroundTask(response.aclose),
        )

    # -- endpoints ----------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._chat(request)
        outcome = response.headers.get("x-stagecache", "error")
        model = getattr(request.state, "model", None)
        self.metrics.observe(outcome, response.status_code, started, model)
        return response

    async def _chat(self, request: Request) -> Response:
        try:
            caller = self.caller_of(request)
        except InputError as exc:  # an id header that is no valid id
            return _error(400, str(exc))
        if isinstance(caller, JSONResponse):
            return caller
        body = await self.read_json(request)
        if isinstance(body, JSONResponse):
            return body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "you must provide a model parameter", param="model")
        request.state.model = model
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty array", param="messages")
        if self.settings.models and model not in self.settings.models:
            return _error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        chat = _chat_of(messages)
        n = body.get("n", 1)
        if chat is None or (isinstance(n, int) and n > 1):
            return await self.passthrough(body, request, "skip")
        if (
            caller is not None
            and self.identity.by_credential
            and not await self.upstream_auth.authenticates()
        ):
            caller = None  # the upstream takes any key: a key is no identity
        if caller is None:
            # Nothing authenticates the client: never cached. The chain still
            # runs (the guards apply) unless the scope is shared, where even a
            # caller without identity would read and write entries.
            if self.anonymous_is_cached():
                return await self.passthrough(body, request, "skip")
            caller = Caller()
        stream = bool(body.get("stream"))
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        proxied = ProxyRequest(body, self.upstream_headers(request))
        tools = [
            {
                "name": str(fn.get("name", "")),
                "description": str(fn.get("description") or ""),
                "read_only_hint": fn.get("name") in self.settings.read_only_tools,
            }
            for t in body.get("tools") or []
            if isinstance(t, dict) and isinstance(fn := t.get("function"), dict)
        ]
        token = CURRENT.set(proxied)
        try:
            result = await self.pipeline.run(
                chat, caller=caller, model=model, tools=tools
            )
        except Exception as exc:
            outcome = "miss" if self.cacheable(caller) else "skip"
            return await self._failed(
                exc, proxied, body, request, stream, include_usage, outcome
            )
        finally:
            CURRENT.reset(token)
        return self.respond(
            self._body_of(result, proxied, model),
            stream,
            include_usage,
            _outcome_headers(result),
        )

    async def _failed(
        self,
        exc: Exception,
        proxied: ProxyRequest,
        body: dict[str, Any],
        request: Request,
        stream: bool,
        include_usage: bool,
        outcome: str,
    ) -> Response:
        if proxied.error is not None:  # the upstream said no: say it verbatim
            error = proxied.error
            return Response(
                error.content,
                status_code=error.status,
                media_type=error.content_type,
                headers={"x-stagecache": outcome},
            )
        if proxied.response is not None:  # answered, then the chain failed
            return self.respond(
                proxied.response, stream, include_usage, {"x-stagecache": "error"}
            )
        if isinstance(exc, InputError):
            return _error(400, str(exc), param="messages")
        if isinstance(exc, StagecacheError) and "cannot reach" in str(exc):
            return _error(502, str(exc), "api_error")
        # The cache machinery failed before the model call: forward as it is.
        return await self.passthrough(body, request, "error")

    def _body_of(
        self, result: Result, proxied: ProxyRequest, model: str
    ) -> dict[str, Any]:
        if result.blocked is not None:
            return completion(result.answer, model, finish_reason="content_filter")
        raw = proxied.response
        if result.cache.hit or raw is None:
            return completion(result.answer, model)
        message = raw["choices"][0]["message"]
        if isinstance(message.get("content"), str) and not message.get("tool_calls"):
            message["content"] = result.answer  # the post-guard answer
        return raw

    async def models(self, request: Request) -> Response:
        if (
            self.settings.api_keys
            and self.settings.api_keys.get(bearer(request.headers) or "") is None
        ):
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            response = await self.model.client.get(
                self.model.base_url + "/models", headers=self.upstream_headers(request)
            )
        except Exception as exc:  # httpx errors: the upstream is unreachable
            return _error(502, f"cannot reach the upstream: {exc}", "api_error")
        if response.status_code == 200:  # the upstream's models become labels
            self.metrics.models.learn_listing(response.content)
        return Response(
            response.content,
            status_code=response.status_code,
            media_type=response.headers.get("content-type"),
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def prometheus(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(
            generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    # -- admin --------------------------------------------------------------------

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

    async def purge(self, request: Request) -> Response:
        body = await self._admin_body(request)
        if isinstance(body, JSONResponse):
            return body
        user = body.get("user_id")
        if not isinstance(user, str) or not user:
            return _error(400, "user_id: a non-empty string", param="user_id")
        tenant = body.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            return _error(400, "tenant: a string", param="tenant")
        try:
            # No tenant named: the id in every tenant. In the default mode a tenant
            # is a keyed hash of a credential, which an operator cannot name.
            removed = await self.pipeline.cache.purge_user(
                user, tenant=tenant, all_tenants=tenant is None
            )
        except InputError as exc:
            return _error(400, str(exc))
        return JSONResponse({"removed": removed})

    async def invalidate(self, request: Request) -> Response:
        body = await self._admin_body(request)
        if isinstance(body, JSONResponse):
            return body
        user, session = body.get("user_id"), body.get("session_id")
        if not isinstance(user, str) or not user:
            return _error(400, "user_id: a non-empty string", param="user_id")
        if session is not None and not isinstance(session, str):
            return _error(400, "session_id: a string", param="session_id")
        tenant = body.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            return _error(400, "tenant: a string", param="tenant")
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
            return _error(400, "expected {entry_id: str, correct: bool}")
        found = await self.pipeline.cache.feedback(entry, correct)
        return JSONResponse({"found": found}, status_code=200 if found else 404)


def _outcome_headers(result: Result) -> dict[str, str]:
    status: str = result.cache.status
    outcome = status if status in ("hit", "miss", "error") else "skip"
    headers: dict[str, str] = {"x-stagecache": outcome}
    if result.cache.similarity is not None:
        headers["x-stagecache-similarity"] = f"{result.cache.similarity:.4f}"
    if result.cache.entry_id is not None:
        headers["x-stagecache-entry"] = result.cache.entry_id
    return headers


async def _aiter(items: Iterator[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def create_app(
    settings: ProxySettings,
    *,
    pipeline: Pipeline | None = None,
    model: ForwardingModel | None = None,
    **pipeline_options: Any,
) -> Starlette:
    """The proxy as an ASGI app (its lifespan opens and closes the pipeline).

    Args:
        settings: upstream, keys, limits.
        pipeline: a pipeline whose model client is ``model`` (default: built from
            ``settings.config_path`` or ``Pipeline.default``).
        model: the forwarding client (default: one for ``settings.upstream``).
        **pipeline_options: for building the pipeline (``embedder=``, ``config=``).
    """
    forward = model or ForwardingModel(settings.upstream, timeout_s=settings.timeout_s)
    if pipeline is None:
        if settings.config_path is not None:
            pipeline = Pipeline.load(
                settings.config_path, llm=forward, **pipeline_options
            )
        else:
            pipeline = Pipeline.default(llm=forward, **pipeline_options)
    proxy = _Proxy(settings, pipeline, forward)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with proxy.pipeline:
            try:
                yield
            finally:
                await forward.aclose()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", proxy.chat, methods=["POST"]),
            Route("/v1/models", proxy.models, methods=["GET"]),
            Route("/healthz", proxy.healthz, methods=["GET"]),
            Route("/metrics", proxy.prometheus, methods=["GET"]),
            Route("/admin/purge", proxy.purge, methods=["POST"]),
            Route("/admin/invalidate", proxy.invalidate, methods=["POST"]),
            Route("/admin/feedback", proxy.feedback, methods=["POST"]),
        ],
        lifespan=lifespan,
        # An incoming traceparent/tracestate/baggage is the requests' context.
        middleware=[Middleware(TraceContextMiddleware)],
    )
    app.state.proxy = proxy
    return app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stagecache serve", description="OpenAI-compatible caching proxy"
    )
    add_serve_arguments(parser)
    return parser


def serve(args: argparse.Namespace) -> int:
    """Run the proxy from parsed ``stagecache serve`` arguments until stopped.

    Raises:
        StagecacheError: a bad setting (a missing variable, a short secret, an
            unreadable key file or pipeline file).
    """
    import uvicorn

    app = create_app(settings_from_namespace(args))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def serve_main(argv: list[str]) -> int:
    """``stagecache serve`` with its own argument list; returns the exit code."""
    import sys

    args = _parser().parse_args(list(argv))
    try:
        return serve(args)
    except StagecacheError as exc:
        print(f"stagecache serve: error: {exc}", file=sys.stderr)
        return 2
