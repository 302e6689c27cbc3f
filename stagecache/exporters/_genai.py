"""The model call in OpenTelemetry's GenAI semantic conventions.

The LLM stage wraps each model call in a ``CLIENT`` span named ``chat {model}``
with the ``gen_ai.*`` request, response and usage attributes, so a GenAI-aware
viewer (Jaeger, Grafana Tempo, Arize Phoenix, Langfuse) shows it as the model
call, with its tokens. The attribute names and metric names are the constants of
the installed ``opentelemetry-semantic-conventions`` package. No other span
carries ``gen_ai.*`` attributes: the request and ``cache.*`` spans name the model
in ``stagecache.model``, so viewers do not count them as model calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Span

__all__ = [
    "DURATION_BUCKETS",
    "OPERATION_DURATION",
    "SCOPE",
    "TOKEN_BUCKETS",
    "TOKEN_USAGE",
    "chat_attributes",
    "provider_name",
    "record_response",
    "request_model",
    "scope_version",
]

#: Instrumentation scope of every span and metric.
SCOPE = "stagecache"
#: The GenAI client metrics (names from the semantic-conventions package).
TOKEN_USAGE = gm.GEN_AI_CLIENT_TOKEN_USAGE
OPERATION_DURATION = gm.GEN_AI_CLIENT_OPERATION_DURATION
#: Recommended bucket boundaries of ``gen_ai.client.token.usage``.
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144,
    1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
#: Recommended bucket boundaries of ``gen_ai.client.operation.duration`` (s).
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
    10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

OPERATION = "chat"
UNKNOWN_PROVIDER = "unknown"


def scope_version() -> str:
    """The stagecache version (the instrumentation scope's version)."""
    try:
        from stagecache import __version__

        return __version__
    except ImportError:  # stagecache half-imported: ask the installed metadata
        return metadata.version("stagecache")


def provider_name(client: object) -> str:
    """``gen_ai.provider.name`` of a model client: its ``provider_name`` or unknown."""
    name = getattr(client, "provider_name", None)
    return name if isinstance(name, str) and name else UNKNOWN_PROVIDER


def request_model(model: str, client: object) -> str:
    """The model asked for: the turn's, or the client's own for ``"default"``."""
    if model and model != "default":
        return model
    own = getattr(client, "model_id", None)
    return own if isinstance(own, str) and own else model or "default"


_REQUEST_PARAMS = {
    "temperature": ga.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": ga.GEN_AI_REQUEST_TOP_P,
    "top_k": ga.GEN_AI_REQUEST_TOP_K,
    "max_tokens": ga.GEN_AI_REQUEST_MAX_TOKENS,
    "max_completion_tokens": ga.GEN_AI_REQUEST_MAX_TOKENS,
    "frequency_penalty": ga.GEN_AI_REQUEST_FREQUENCY_PENALTY,
    "presence_penalty": ga.GEN_AI_REQUEST_PRESENCE_PENALTY,
    "seed": ga.GEN_AI_REQUEST_SEED,
    "n": ga.GEN_AI_REQUEST_CHOICE_COUNT,
}


def request_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``gen_ai.request.*`` attributes of an OpenAI-shaped request body's parameters.

    Only numbers (and a list of stop sequences) are kept: never message text.
    """
    out: dict[str, Any] = {}
    for key, attr in _REQUEST_PARAMS.items():
        value = (params or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[attr] = value
    stop = (params or {}).get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        out[ga.GEN_AI_REQUEST_STOP_SEQUENCES] = [s[:64] for s in stop[:8]]
    return out


def chat_attributes(
    model: str, provider: str, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The attributes a ``chat {model}`` span starts with."""
    return {
        ga.GEN_AI_OPERATION_NAME: OPERATION,
        ga.GEN_AI_PROVIDER_NAME: provider,
        ga.GEN_AI_REQUEST_MODEL: model,
        **request_params(params),
    }


def record_response(span: Span, completion: object) -> None:
    """Set the ``gen_ai.response.*`` and ``gen_ai.usage.*`` attributes of ``span``."""
    if not span.is_recording():
        return
    response_id = getattr(completion, "response_id", None)
    if isinstance(response_id, str) and response_id:
        span.set_attribute(ga.GEN_AI_RESPONSE_ID, response_id)
    model = getattr(completion, "model", None)
    if isinstance(model, str) and model:
        span.set_attribute(ga.GEN_AI_RESPONSE_MODEL, model)
    finish = getattr(completion, "finish_reason", None)
    if finish is not None and finish != "":
        finish = getattr(finish, "value", finish)
        span.set_attribute(ga.GEN_AI_RESPONSE_FINISH_REASONS, [str(finish)])
    usage = getattr(completion, "usage", None)
    prompt = getattr(usage, "prompt_tokens", None)
    output = getattr(usage, "completion_tokens", None)
    if isinstance(prompt, int):
        span.set_attribute(ga.GEN_AI_USAGE_INPUT_TOKENS, prompt)
    if isinstance(output, int):
        span.set_attribute(ga.GEN_AI_USAGE_OUTPUT_TOKENS, output)


def record_failure(span: Span, exc: BaseException) -> None:
    """Set ``error.type`` of a failed model call's span (the status comes on exit)."""
    if span.is_recording():
        span.set_attribute(ERROR_TYPE, type(exc).__name__)
