"""What the LangChain cache and runnable share: prompts and messages as the
pipeline sees them, the model id of an ``llm_string``, the caller check, and the
metadata of the entry a hit came from.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue

from stagecache._model import Caller
from stagecache.errors import ConfigError, StagecacheError
from stagecache.integrations._common import keyed_order, reorder
from stagecache.pipeline import Pipeline

__all__ = [
    "LC_ROLES",
    "Chat",
    "chat_of",
    "check_caller",
    "llm_model_id",
    "llm_params",
    "messages_of",
    "parse_prompt",
    "safe_params",
    "with_memory",
]

_log = logging.getLogger("stagecache.integrations.langchain")

Chat = list[dict[str, str]]
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
#: Pipeline roles as LangChain message types.
LC_ROLES = {"user": "human", "assistant": "ai"}


def llm_model_id(llm_string: str) -> str:
    """The model part of the key for a LangChain ``llm_string``."""
    return "lc-" + hashlib.sha256(llm_string.encode()).hexdigest()[:16]


def llm_params(llm_string: str) -> dict[str, Any]:
    """The invocation parameters in a LangChain ``llm_string``, where readable.

    LangChain writes them as ``str(sorted(params.items()))`` (after ``---`` for a
    serialisable model). Values that are not Python literals make them unreadable:
    then {} (the whole ``llm_string`` is still hashed into the key).
    """
    tail = llm_string.rpartition("---")[2]
    try:
        items = ast.literal_eval(tail)
        params = dict(items)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return {}
    return {k: v for k, v in params.items() if isinstance(k, str)}


def safe_params(llm_string: str) -> dict[str, Any]:
    """The ``llm_string`` parameters to hand to the pipeline: only when the policy
    does not cache them (``n > 1``, ``logprobs``), else none.

    The whole ``llm_string`` is in the key already (the model id), so the
    parameters only need to say when a request is not cacheable; passing them
    otherwise would change the key of every entry stored before. A value the
    policy rejects never fails a lookup.
    """
    from stagecache._request_params import request_params
    from stagecache.errors import InputError

    params = llm_params(llm_string)
    try:
        uncacheable = request_params(params).uncacheable
    except InputError:
        return {}
    return params if uncacheable else {}


def check_caller(
    pipeline: Pipeline,
    caller: Caller | None,
    caller_from: Callable[[], Caller | None] | None,
    owner: str,
) -> None:
    """Refuse a cache that could never store anything: no identity under a
    non-shared scope.

    Raises:
        ConfigError: naming ``caller`` or ``caller.user_id`` and the fix.
    """
    if caller_from is not None:
        return
    try:
        engine = pipeline.cache.engine
    except StagecacheError:
        return  # no cache stage: nothing to key
    if engine.settings.scope == "shared":
        return
    if caller is None:
        raise ConfigError(
            f"{owner} needs caller=stagecache.Caller(user_id=...) or caller_from= "
            f"(a callable returning the current Caller): under the "
            f"{engine.settings.scope!r} scope nothing is cached without a user id",
            field="caller",
        )
    reason = engine.scope_for(caller)
    if isinstance(reason, str):
        field = "caller.session_id" if reason == "no_session_id" else "caller.user_id"
        raise ConfigError(
            f"{owner}: this caller cannot be cached for under the "
            f"{engine.settings.scope!r} scope ({reason}); give it a user_id (and "
            "a session_id for 'per_session'), or pass caller_from=",
            field=field,
        )


# -- conversions ----------------------------------------------------------------


def messages_of(value: Any) -> list[BaseMessage]:
    if isinstance(value, str):
        return convert_to_messages([("human", value)])
    if isinstance(value, PromptValue):
        return value.to_messages()
    return convert_to_messages(value)


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            return None  # an image or other media: not keyable by text
    return "\n".join(parts)


def _keyed(pairs: Sequence[tuple[str, str]]) -> Chat | None:
    roles = [role for role, _ in pairs]
    if "user" not in roles:
        return None
    chat = [{"role": role, "content": text} for role, text in pairs]
    return reorder(chat, keyed_order(roles))


def chat_of(messages: Sequence[BaseMessage]) -> Chat | None:
    pairs: list[tuple[str, str]] = []
    for message in messages:
        role = _ROLES.get(message.type, getattr(message, "role", None))
        text = _text(message.content)
        if role not in ("user", "assistant", "system", "tool") or text is None:
            return None
        calls = getattr(message, "tool_calls", None)
        if calls:
            text += " [tool calls] " + json.dumps(calls, sort_keys=True, default=str)
        pairs.append((str(role), text))
    return _keyed(pairs)


def parse_prompt(prompt: str) -> tuple[Chat | None, bool]:
    """LangChain's cache prompt: serialised chat messages, or an LLM's raw text."""
    try:
        data = json.loads(prompt)
    except ValueError:
        data = None
    if not isinstance(data, list) or not all(
        isinstance(item, dict) and isinstance(item.get("kwargs"), dict) for item in data
    ):
        return [{"role": "user", "content": prompt}], False
    pairs: list[tuple[str, str]] = []
    for item in data:
        kwargs = item["kwargs"]
        kind = str(kwargs.get("type", ""))
        role = _ROLES.get(kind, kwargs.get("role") if kind == "chat" else None)
        text = _text(kwargs.get("content", ""))
        if role is None or text is None:
            return None, True
        if kwargs.get("tool_calls"):
            text += " [tool calls] " + json.dumps(
                kwargs["tool_calls"], sort_keys=True, default=str
            )
        pairs.append((str(role), text))
    return _keyed(pairs), True


def with_memory(
    messages: list[BaseMessage], memory: Sequence[str]
) -> list[BaseMessage]:
    if not memory:
        return messages
    facts = "Known about the user:\n" + "\n".join(f"- {m}" for m in memory)
    first = messages[0] if messages else None
    if isinstance(first, SystemMessage) and isinstance(first.content, str):
        return [SystemMessage(content=f"{first.content}\n\n{facts}"), *messages[1:]]
    return [SystemMessage(content=facts), *messages]
