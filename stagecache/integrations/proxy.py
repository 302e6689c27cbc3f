"""``stagecache serve``: an OpenAI-compatible caching proxy (Starlette + uvicorn).

::

    stagecache serve --upstream http://127.0.0.1:8000/v1 --port 8080 \\
        --api-keys keys.json --admin-key-env STAGECACHE_ADMIN_KEY

Endpoints: ``POST /v1/chat/completions`` (JSON and SSE streaming), ``POST
/v1/embeddings`` (through an embedding cache: :mod:`._proxy_embeddings`), ``GET
/v1/models`` and every other ``/v1/...`` endpoint (passed through uncached:
:mod:`._proxy_passthrough`), ``GET /healthz``, ``GET /metrics`` (Prometheus text),
and the admin endpoints ``POST /admin/purge {user_id}``, ``POST /admin/invalidate
{user_id, session_id?}``, ``POST /admin/feedback {entry_id, correct, query?}``
(``Authorization: Bearer <admin key>``).

Identity (:mod:`._proxy_identity`, docs/security.md): with ``--api-keys`` every
request needs a known key and runs as its user; otherwise the client's upstream
credential identifies it (a keyed hash of it is the tenant) and the
``x-stagecache-user`` / ``x-stagecache-session`` headers narrow inside it. A
request without a credential, or without a user under a non-shared scope, is not
cached; duplicated identity headers are a 400.

Every answer carries ``x-stagecache: hit|miss|skip|bypass|error`` (``bypass``: the
client's ``Cache-Control: no-cache`` or ``extra_body={"cache": {"no-cache": true}}``
skipped the lookup), ``x-stagecache-age`` on a hit, and ``x-stagecache-similarity``
when a candidate was found. The body's parameters are keyed by the request-parameter
policy (``stagecache._request_params``; docs/integrations.md). A miss returns the
upstream's reply with only the answer text changed by the output guard; upstream
errors come back verbatim; the upstream's request id, rate-limit and
``retry-after`` headers are forwarded. A request goes upstream at most once: if
the cache machinery fails before the model call, the request is forwarded as it
is; a timeout is a 504, an unreachable upstream or an unreadable reply a 502.
Every error the proxy itself produces is OpenAI-shaped (:mod:`._proxy_errors`). A
guard's block is a refusal in ``message.refusal``. A streamed miss is streamed
live, its text through the output guard's detectors as it comes
(:mod:`._proxy_stream`); a streamed hit is replayed as ``chat.completion.chunk``
events; requests the cache cannot key (images, ``n > 1``) are streamed straight
through.

Needs ``pip install 'stagecache[serve]'``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from stagecache._cachecontrol import http_cache_control
from stagecache._model import Caller, Result
from stagecache._request_params import request_params
from stagecache.cache import Scope
from stagecache.errors import InputError, StagecacheError
from stagecache.integrations._common import keyed_order, reorder, require_extra
from stagecache.integrations._openai_shapes import chunks_of, completion, sse
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
from starlette.exceptions import HTTPException  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from stagecache.exporters._propagation import TraceContextMiddleware  # noqa: E402
from stagecache.integrations._proxy_admin import AdminEndpoints  # noqa: E402
from stagecache.integrations._proxy_embeddings import EmbeddingCaches  # noqa: E402
from stagecache.integrations._proxy_errors import (  # noqa: E402
    BodyError,
    error_response,
    http_exception_handler,
    parse_json,
    read_body,
    server_error_handler,
)
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
from stagecache.integrations._proxy_passthrough import (  # noqa: E402
    forward,
    forward_request,
)
from stagecache.integrations._proxy_stream import run_live  # noqa: E402

__all__ = ["ProxySettings", "create_app", "load_api_keys", "serve", "serve_main"]


def _error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    return error_response(status, message, type_, param=param, code=code)


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
        self.embedding_caches = EmbeddingCaches()

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
        """The body as a JSON object fit to send on, or the 400/413 refusing it."""
        try:
            raw = await read_body(request, self.settings.max_body_bytes)
            return parse_json(raw)
        except BodyError as exc:
            return exc.response

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
        """Forward the chat request as it is (streaming included), once."""
        return await forward(
            self.model.client,
            "POST",
            self.model.base_url + "/chat/completions",
            json_body=body,
            headers=self.upstream_headers(request),
            outcome=outcome,
            api_reply=True,
        )

    # -- endpoints ----------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._chat(request)
        outcome = response.headers.get("x-stagecache", "error")
        if response.status_code >= 400 and outcome in ("miss", "skip"):
            outcome = "upstream_error"  # the upstream said no: not a cache outcome
        model = getattr(request.state, "model", None)
        self.metrics.observe(outcome, response.status_code, started, model)
        return response

    async def caller_and_body(
        self, request: Request
    ) -> tuple[Caller | None, dict[str, Any]] | JSONResponse:
        """Who asks (identity first: nothing is read for a refused caller) and the
        checked JSON body, or the error response refusing the request."""
        try:
            caller = self.caller_of(request)
        except InputError as exc:  # an id header that is no valid id
            return _error(400, str(exc))
        if isinstance(caller, JSONResponse):
            return caller
        body = await self.read_json(request)
        if isinstance(body, JSONResponse):
            return body
        return caller, body

    async def _chat(self, request: Request) -> Response:
        asked = await self.caller_and_body(request)
        if isinstance(asked, JSONResponse):
            return asked
        caller, body = asked
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
        raw_body_cache = body.get("cache")
        chat = _chat_of(messages)
        # The body's parameters go through the one request-parameter policy
        # (stagecache._request_params); "cache" is the per-request cache control
        # (LiteLLM's spelling) and never goes upstream.
        body = {k: v for k, v in body.items() if k != "cache"}
        params = {k: v for k, v in body.items() if k not in ("model", "messages")}
        try:
            control = http_cache_control(
                raw_body_cache, request.headers.get("cache-control")
            )
            several = request_params(params).several_choices
        except InputError as exc:
            return _error(400, str(exc), param=_param_of(exc))
        if chat is None or several:
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
        tools: list[dict[str, Any]] = [
            {
                "name": str(fn.get("name", "")),
                "description": str(fn.get("description") or ""),
                "read_only_hint": fn.get("name") in self.settings.read_only_tools,
                "parameters": fn.get("parameters")
                if isinstance(fn.get("parameters"), dict)
                else {},
            }
            for t in body.get("tools") or []
            if isinstance(t, dict) and isinstance(fn := t.get("function"), dict)
        ]
        token = CURRENT.set(proxied)
        try:
            run = self.pipeline.run(
                chat,
                caller=caller,
                model=model,
                tools=tools,
                params=params,
                cache=control,
            )
            # [streaming] a streamed miss is answered live (_proxy_stream.run_live)
            result = await (run_live(proxied, run, self.pipeline) if stream else run)
            if isinstance(result, Response):
                return result
        except Exception as exc:
            outcome = "miss" if self.cacheable(caller) else "skip"
            return await self._failed(
                exc, proxied, body, request, stream, include_usage, outcome
            )
        finally:
            CURRENT.reset(token)
        headers = _outcome_headers(result)
        if not result.cache.hit:
            headers = {**proxied.upstream_headers, **headers}
        return self.respond(
            self._body_of(result, proxied, model), stream, include_usage, headers
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
        upstream = proxied.upstream_headers
        if proxied.error is not None:  # the upstream said no: say it verbatim
            error = proxied.error
            return Response(
                error.content,
                status_code=error.status,
                media_type=error.content_type,
                headers={**upstream, "x-stagecache": outcome},
            )
        if proxied.response is not None:  # answered, then the chain failed
            return self.respond(
                proxied.response,
                stream,
                include_usage,
                {**upstream, "x-stagecache": "error"},
            )
        if proxied.failure is not None:  # timeout, unreachable, unreadable
            failure = proxied.failure
            return error_response(
                failure.status,
                failure.message,
                code=failure.code,
                headers={**upstream, "x-stagecache": "error"},
            )
        if proxied.sent:  # sent, and no reply we can use: never a second call
            return error_response(
                502,
                "The upstream's reply could not be used.",
                code="bad_upstream_response",
                headers={"x-stagecache": "error"},
            )
        if isinstance(exc, InputError):
            return _error(400, str(exc), param="messages")
        # The cache machinery failed before the model call: forward as it is.
        return await self.passthrough(body, request, "error")

    def _body_of(
        self, result: Result, proxied: ProxyRequest, model: str
    ) -> dict[str, Any]:
        if result.blocked is not None:  # a guard's refusal, as OpenAI sends one
            return completion(result.answer, model, refusal=True)
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
        response = await forward(
            self.model.client,
            "GET",
            self.model.base_url + "/models",
            headers=self.upstream_headers(request),
            outcome="skip",
        )
        if response.status_code == 200 and not isinstance(response, StreamingResponse):
            self.metrics.models.learn_listing(bytes(response.body))  # become labels
        return response

    async def embedding_scope(self, caller: Caller | None) -> Scope | None:
        """The cache scope of an embeddings request's caller (None: uncached)."""
        if caller is None:
            return None
        if self.identity.by_credential and not await self.upstream_auth.authenticates():
            return None  # the upstream takes any key: a key is no identity
        try:
            scope = self.pipeline.cache.engine.scope_for(caller)
        except StagecacheError:  # no cache stage
            return None
        return None if isinstance(scope, str) else scope

    async def embeddings(self, request: Request) -> Response:
        """``POST /v1/embeddings``: texts seen before in the scope are not resent."""
        asked = await self.caller_and_body(request)
        if isinstance(asked, JSONResponse):
            return asked
        caller, body = asked
        return await self.embedding_caches.serve(
            body,
            scope=await self.embedding_scope(caller),
            client=self.model.client,
            url=self.model.base_url + "/embeddings",
            headers=self.upstream_headers(request),
            models=self.settings.models,
        )

    async def other(self, request: Request) -> Response:
        """Any other ``/v1/...`` endpoint: passed through uncached, streams too."""
        if (
            self.settings.api_keys
            and self.settings.api_keys.get(bearer(request.headers) or "") is None
        ):
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        return await forward_request(
            self.model.client,
            self.model.base_url,
            request,
            credential=self.upstream_headers(request),
            max_body_bytes=self.settings.max_body_bytes,
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def prometheus(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(
            generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )


def _param_of(exc: InputError) -> str | None:
    """The request field an InputError names (``params.temperature: ...``)."""
    field, sep, _ = str(exc).partition(":")
    if not sep or " " in field:
        return None
    return field.removeprefix("params.")


#: Cache reasons that mean the client's cache control bypassed the lookup.
_BYPASS = frozenset({"no_cache", "no_cache_no_store"})


def _outcome_headers(result: Result) -> dict[str, str]:
    status: str = result.cache.status
    outcome = status if status in ("hit", "miss", "error") else "skip"
    if result.cache.reason in _BYPASS:
        outcome = "bypass"
    headers: dict[str, str] = {"x-stagecache": outcome}
    if result.cache.hit and result.cache.entry_age_s is not None:
        headers["x-stagecache-age"] = str(int(result.cache.entry_age_s))
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
    admin = AdminEndpoints(
        settings, pipeline, proxy.embedding_caches, read_json=proxy.read_json
    )

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
            Route("/v1/embeddings", proxy.embeddings, methods=["POST"]),
            Route("/healthz", proxy.healthz, methods=["GET"]),
            Route("/metrics", proxy.prometheus, methods=["GET"]),
            Route("/admin/purge", admin.purge, methods=["POST"]),
            Route("/admin/invalidate", admin.invalidate, methods=["POST"]),
            Route("/admin/feedback", admin.feedback, methods=["POST"]),
            Route(
                "/v1/{path:path}",
                proxy.other,
                methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
            ),
        ],
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_exception_handler,
            Exception: server_error_handler,
        },
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

    from stagecache.integrations._proxy_workers import check_workers, run_workers

    workers = getattr(args, "workers", 1)
    check_workers(args)
    settings = settings_from_namespace(args)  # checked here, before any worker
    if workers > 1:
        run_workers(args)
        return 0
    app = create_app(settings)
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
