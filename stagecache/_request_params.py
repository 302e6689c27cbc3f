"""The request fingerprint: which request parameters change the answer.

Two requests with the same question may still want different answers: JSON instead
of prose, a tool call instead of text, eight tokens instead of all of them. Every
parameter of a chat-completion request is therefore one of:

- ``key``: part of the cache key. The values are normalised (``None`` is absent,
  ``1.0`` is ``1``, ``stop="x"`` is ``stop=["x"]``, the order of dict keys and of
  stop sequences does not count) and hashed; a request with other values never
  gets the entry.
- ``skip``: the request is answered by the model and never cached (when the
  condition holds: ``n > 1`` in any numeric form, ``logprobs`` on, ...).
- ``ignore``: does not change the answer (``user``, ``metadata``, ``stream``), or
  is keyed elsewhere (``model``, ``messages``).

A parameter this table does not know is part of the key (the safe default: it may
change the answer); a value that is not JSON data makes the request uncacheable.
:data:`POLICY` is the one table; :func:`policy_markdown` renders it for
docs/integrations.md (a test keeps the two equal), and :func:`request_params` is
the one implementation the Python API, the proxy, AutoGen and LangChain share.

A request without parameters (and without tools) has an empty fingerprint and
keys exactly as before this module existed, so entries stored by older versions
still answer plain requests; they never answer a request with parameters.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import msgspec

from stagecache._model import ToolSpec
from stagecache.errors import InputError

__all__ = ["POLICY", "RequestParams", "Rule", "policy_markdown", "request_params"]

Action = Literal["key", "skip", "ignore"]


class Rule(msgspec.Struct, frozen=True):
    """How one parameter affects the cache.

    Attributes:
        action: ``key``, ``skip`` or ``ignore`` (see the module docstring).
        note: when it applies, in words (rendered in the docs table).
        number: the value must be a finite number (``bool`` is not one).
    """

    action: Action
    note: str = ""
    number: bool = False


_K: Action = "key"
_S: Action = "skip"
_I: Action = "ignore"

#: The policy table: parameter -> rule. Unknown parameters are keyed.
POLICY: Mapping[str, Rule] = {
    # The shape of the answer.
    "response_format": Rule(_K, "JSON mode or a JSON schema"),
    "tools": Rule(_K, "full schema and description of every tool"),
    "tool_choice": Rule(_K, '"auto" (the default) is dropped'),
    "parallel_tool_calls": Rule(_K),
    "functions": Rule(_K, "legacy tools"),
    "function_call": Rule(_K, "legacy tool_choice"),
    "modalities": Rule(_K, '["text"] only; with "audio" see audio'),
    "prediction": Rule(_K),
    "web_search_options": Rule(_K),
    # Sampling and length.
    "temperature": Rule(_K, number=True),
    "top_p": Rule(_K, number=True),
    "top_k": Rule(_K, number=True),
    "min_p": Rule(_K, number=True),
    "seed": Rule(_K, number=True),
    "stop": Rule(_K, "a string is a one-item list; order does not count"),
    "max_tokens": Rule(_K, number=True),
    "max_completion_tokens": Rule(_K, number=True),
    "presence_penalty": Rule(_K, number=True),
    "frequency_penalty": Rule(_K, number=True),
    "repetition_penalty": Rule(_K, number=True),
    "logit_bias": Rule(_K),
    "reasoning_effort": Rule(_K),
    "reasoning": Rule(_K),
    "verbosity": Rule(_K),
    # Answers the cache cannot hold.
    "n": Rule(_S, "when above 1 (2, 2.0, ...); 1 is ignored", number=True),
    "logprobs": Rule(_S, "when true"),
    "top_logprobs": Rule(_S, "when above 0", number=True),
    "audio": Rule(_S, "when set (the answer is audio)"),
    # No effect on the answer, or keyed elsewhere.
    "model": Rule(_I, "keyed on its own (run(model=...))"),
    "messages": Rule(_I, "keyed on its own (the query, history, instructions)"),
    "stream": Rule(_I, "a hit is replayed as a stream"),
    "stream_options": Rule(_I),
    "user": Rule(_I, "end-user id for the provider; identity is the caller"),
    "safety_identifier": Rule(_I),
    "metadata": Rule(_I),
    "store": Rule(_I),
    "service_tier": Rule(_I),
    "prompt_cache_key": Rule(_I),
    "prompt_cache_retention": Rule(_I),
    "cache": Rule(_I, "per-request cache control, read on its own"),
}


def _skip_when(name: str) -> Callable[[Any], bool]:
    if name == "n":
        return lambda v: v > 1
    if name == "top_logprobs":
        return lambda v: v > 0
    return bool


class RequestParams(msgspec.Struct, frozen=True):
    """The normalised parameters of one request.

    Attributes:
        keyed: the parameters that are part of the key, normalised.
        fingerprint: a hash of ``keyed`` ("" when it is empty).
        uncacheable: why the request may not be cached (None: it may).
        several_choices: ``n > 1``: the answer has a shape the chain cannot carry
            (the proxy passes such a request straight through).
    """

    keyed: dict[str, Any]
    fingerprint: str
    uncacheable: str | None = None
    several_choices: bool = False


_EMPTY = RequestParams({}, "")
_encoder = msgspec.json.Encoder(order="sorted")


def request_params(
    params: Mapping[str, Any] | None, tools: Sequence[ToolSpec] = ()
) -> RequestParams:
    """Apply :data:`POLICY` to ``params`` (OpenAI chat-completion names).

    Args:
        params: the request's parameters besides model and messages.
        tools: the turn's tool specs (``run(tools=...)``): keyed with name,
            description and parameter schema.

    Returns:
        The keyed parameters, their fingerprint and any reason not to cache.

    Raises:
        InputError: ``params`` is not a dict with string keys, or a number
            parameter is not a finite number (the field is ``params.<name>``).
    """
    if not params and not tools:
        return _EMPTY
    if params is not None and not isinstance(params, Mapping):
        raise InputError(
            f"params: expected a dict of request parameters, got "
            f"{type(params).__name__}"
        )
    keyed: dict[str, Any] = {}
    uncacheable: str | None = None
    several = False
    for name, value in (params or {}).items():
        if not isinstance(name, str):
            raise InputError(f"params: keys must be strings, got {name!r:.40}")
        if value is None:
            continue
        rule = POLICY.get(name)
        if rule is not None and rule.number:
            _check_number(name, value)
        if rule is not None and rule.action == "ignore":
            continue
        if rule is not None and rule.action == "skip":
            if _skip_when(name)(value):
                uncacheable = uncacheable or f"param_{name}"
                several = several or name == "n"
            continue
        canonical = _canonical(name, value)
        if canonical is _NOT_JSON:
            uncacheable = uncacheable or f"param_not_json_{name}"
        elif canonical is not _DROP:
            keyed[name] = canonical
    if tools:
        keyed["tool_specs"] = sorted(
            (
                {
                    "name": t.name,
                    "description": t.description,
                    "parameters": _canonical("parameters", t.parameters),
                }
                for t in tools
            ),
            key=lambda spec: str(spec["name"]),
        )
    if not keyed:
        return RequestParams({}, "", uncacheable, several)
    try:
        encoded = _encoder.encode(keyed)
    except UnicodeEncodeError:
        raise InputError(
            "params: a string holds a lone surrogate (not valid Unicode text)"
        ) from None
    digest = hashlib.sha256(encoded).hexdigest()[:32]
    return RequestParams(keyed, digest, uncacheable, several)


_DROP, _NOT_JSON = object(), object()


def _check_number(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
    ):
        raise InputError(f"params.{name}: expected a finite number, got {value!r:.40}")


def _canonical(name: str, value: Any) -> Any:
    """``value`` as canonical JSON data; ``_DROP`` for a default, ``_NOT_JSON``."""
    if name == "tool_choice" and value == "auto":
        return _DROP
    if name == "stop":
        stops = [value] if isinstance(value, str) else value
        if isinstance(stops, list) and all(isinstance(s, str) for s in stops):
            return sorted(set(stops)) if stops else _DROP
    try:
        return _json(value, 0)
    except (TypeError, RecursionError):
        return _NOT_JSON
    except ValueError:
        raise InputError(
            f"params.{name}: numbers must be finite (no NaN or infinity)"
        ) from None


def _json(value: Any, depth: int) -> Any:
    if depth > 64:
        raise RecursionError
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(value)
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(key)
            out[key] = _json(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_json(item, depth + 1) for item in value]
    raise TypeError(type(value).__name__)


def policy_markdown() -> str:
    """:data:`POLICY` as the markdown table in docs/integrations.md."""
    effect = {"key": "part of the key", "skip": "not cached", "ignore": "ignored"}
    lines = ["| parameter | effect | note |", "|---|---|---|"]
    for name, rule in POLICY.items():
        lines.append(f"| `{name}` | {effect[rule.action]} | {rule.note} |")
    lines.append(
        "| any other | part of the key | a value that is not JSON data: not cached |"
    )
    return "\n".join(lines)
