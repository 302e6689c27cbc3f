"""AutoGen: the conversions between AutoGen's messages and results and the pipeline's.

- :func:`chat_of`: the agent's messages as the pipeline keys them (whatever follows
  the last user message moves in front of it, see ``_common``); None for messages
  the cache cannot key (images).
- :func:`completion_of`: the inner client's ``CreateResult`` as the pipeline's
  :class:`~stagecache.stages.llm.Completion`: the text (an envelope when the reply
  has a thought or asks for read-only tools, ``_autogen_codec``), or, for a call of
  a writing tool, the calls (the LLM stage evicts the scope; nothing is stored).
- :func:`result_of`: the pipeline's outcome as the ``CreateResult`` the agent gets.
- :func:`params_of`: a ``create`` call's arguments as OpenAI request parameters.
- :func:`split_exchange`: a question followed by the model's calls of read-only
  tools and their results (an agent's tool loop inside one question) is not a
  conversation: the exchange is keyed exactly (calls, arguments, results) instead
  of counting as history, so it is cached with ``cache_multi_turn`` off too. An
  exchange with any other tool, or after earlier turns, stays history.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool

from stagecache._model import Result, ToolCall, Turn, Usage
from stagecache.integrations import _autogen_codec as codec
from stagecache.integrations._common import json_arguments, keyed_order, reorder
from stagecache.stages.input_guard import InputGuard
from stagecache.stages.llm import Completion

__all__ = [
    "chat_of",
    "completion_of",
    "keyed_exchange",
    "messages_of",
    "params_of",
    "result_of",
    "split_exchange",
    "text_of",
    "with_memory",
]


def text_of(message: LLMMessage) -> tuple[str, str] | None:
    """``(role, text)`` of an AutoGen message; None when it carries an image."""
    if isinstance(message, SystemMessage):
        return "system", message.content
    if isinstance(message, UserMessage):
        if isinstance(message.content, str):
            return "user", message.content
        if not all(isinstance(part, str) for part in message.content):
            return None
        return "user", "\n".join(str(part) for part in message.content)
    if isinstance(message, AssistantMessage):
        if isinstance(message.content, str):
            return "assistant", message.content
        calls = "; ".join(f"{c.name}({c.arguments})" for c in message.content)
        return "assistant", f"[tool calls] {calls}"
    if isinstance(message, FunctionExecutionResultMessage):
        return "tool", "\n".join(r.content for r in message.content)
    return None


def chat_of(messages: Sequence[LLMMessage]) -> list[dict[str, str]] | None:
    """The messages as the pipeline keys them, or None when they can't be keyed."""
    pairs = [text_of(m) for m in messages]
    if not pairs or any(p is None for p in pairs):
        return None
    roles = [p[0] for p in pairs if p is not None]
    if "user" not in roles:
        return None
    chat = [{"role": p[0], "content": p[1]} for p in pairs if p is not None]
    return reorder(chat, keyed_order(roles))


def messages_of(turn: Turn) -> list[LLMMessage]:
    out: list[LLMMessage] = []
    if turn.instructions and not any(m.role == "system" for m in turn.messages):
        out.append(SystemMessage(content=turn.instructions))
    for m in turn.messages:
        if m.role == "system":
            out.append(SystemMessage(content=m.content))
        elif m.role == "assistant":
            out.append(AssistantMessage(content=m.content, source="assistant"))
        else:
            out.append(UserMessage(content=m.content, source=m.role))
    return out


def with_memory(
    messages: Sequence[LLMMessage], memory: Sequence[str]
) -> Sequence[LLMMessage]:
    """Memory facts joined onto the first system message (or a new one)."""
    if not memory:
        return messages
    facts = "Known about the user:\n" + "\n".join(f"- {m}" for m in memory)
    first = messages[0] if messages else None
    if isinstance(first, SystemMessage):
        merged = SystemMessage(content=f"{first.content}\n\n{facts}")
        return [merged, *messages[1:]]
    return [SystemMessage(content=facts), *messages]


def completion_of(
    result: CreateResult, model: str, turn: Turn, *, envelopes: bool = True
) -> Completion:
    """The inner client's reply as the pipeline's completion (see the module doc).

    Args:
        result: the reply.
        model: the model id reported to the pipeline.
        turn: the turn (its tool specs say which tools are read-only).
        envelopes: store rich replies as envelopes (only the AutoGen client reads
            them); False for a plain ``pipeline.run``: the text, and the calls as
            tool calls, as any other model client.
    """
    usage = Usage(
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
    )
    if envelopes:
        stored = codec.encode(result)
    else:
        stored = result.content if isinstance(result.content, str) else None
    if isinstance(result.content, str):
        # AutoGen says "unknown" when the server gave no finish reason: trusted,
        # like a client that reports none; "length", "content_filter": not stored.
        finish: str | None = result.finish_reason
        if finish == "unknown":
            finish = None
        if stored is None:  # a thought that cannot be stored: served, not cached
            finish = "unstorable"
        return Completion(
            text=result.content if stored is None else stored,
            usage=usage,
            model=model,
            finish_reason=finish,
        )
    read_only = {t.name for t in turn.tools if t.read_only_hint}
    if stored is not None and all(c.name in read_only for c in result.content):
        # A *request* to run read-only tools: the agent runs them after a hit
        # too, so the request itself is the answer (no tool ran in the pipeline).
        finish = str(result.finish_reason)
        return Completion(
            text=stored,
            usage=usage,
            model=model,
            finish_reason=None if finish in ("function_calls", "unknown") else finish,
        )
    calls = [
        ToolCall(name=c.name, arguments=json_arguments(c.arguments))
        for c in result.content
        if isinstance(c, FunctionCall)
    ]
    # A call of a writing tool: never stored; the LLM stage sees the call (evicts).
    return Completion(text="", usage=usage, tool_calls=calls, model=model)


def result_of(
    outcome: Result, raw: CreateResult | None, hit_usage: RequestUsage | None
) -> CreateResult:
    """The ``CreateResult`` the agent gets for a pipeline outcome."""
    zero = RequestUsage(prompt_tokens=0, completion_tokens=0)
    if outcome.blocked is not None:
        return CreateResult(
            finish_reason="content_filter",
            content=outcome.answer,
            usage=zero,
            cached=False,
        )
    answer = codec.decode(outcome.answer)
    if outcome.cache.hit or raw is None:
        usage = RequestUsage(
            prompt_tokens=outcome.usage.prompt_tokens,
            completion_tokens=outcome.usage.completion_tokens,
        )
        if outcome.cache.hit:
            usage = hit_usage or zero
        calls = isinstance(answer.content, list)
        return CreateResult(
            finish_reason="function_calls" if calls else "stop",
            content=answer.content,
            usage=usage,
            cached=outcome.cache.hit,
            thought=answer.thought,
        )
    if isinstance(raw.content, str) and isinstance(answer.content, str):
        # The post-guard answer and thought (redactions applied), with the
        # model's metadata.
        update: dict[str, Any] = {"content": answer.content}
        if raw.thought is not None:
            update["thought"] = answer.thought
        return raw.model_copy(update=update)
    return raw


def split_exchange(
    messages: Sequence[LLMMessage], read_only: Collection[str]
) -> tuple[Sequence[LLMMessage], str, list[str]]:
    """``(messages to key, exchange hash, tool results)``; ``(messages, "", [])``
    when there is no read-only tool exchange after a lone question.

    Args:
        messages: the agent's request.
        read_only: names of the tools that change nothing.
    """
    last = max(
        (i for i, m in enumerate(messages) if isinstance(m, UserMessage)), default=-1
    )
    plain: tuple[Sequence[LLMMessage], str, list[str]] = (messages, "", [])
    if last < 0 or last == len(messages) - 1:
        return plain
    if not all(isinstance(m, SystemMessage) for m in messages[:last]):
        return plain  # earlier turns: the multi-turn rules apply
    exchange: list[list[Any]] = []
    results: list[str] = []
    for message in messages[last + 1 :]:
        if isinstance(message, AssistantMessage) and isinstance(message.content, list):
            calls = message.content
            if not calls or any(c.name not in read_only for c in calls):
                return plain
            exchange.append(
                ["calls", message.thought, [[c.name, c.arguments] for c in calls]]
            )
        elif isinstance(message, FunctionExecutionResultMessage):
            if any(r.name not in read_only for r in message.content):
                return plain
            exchange.append(
                ["results", [[r.name, r.content, r.is_error] for r in message.content]]
            )
            results.extend(r.content for r in message.content)
        else:
            return plain
    data = json.dumps(exchange, ensure_ascii=False, sort_keys=True)
    digest = hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return messages[: last + 1], digest, results


def keyed_exchange(
    messages: Sequence[LLMMessage], read_only: Collection[str], stages: Sequence[Any]
) -> tuple[Sequence[LLMMessage], str]:
    """The messages to key and the hash of a read-only tool exchange after them.

    The pipeline's input guard does not see an exchange keyed this way, so its
    scanner checks the tool results here first: anything it would block or flag
    keeps the exchange in the messages, where the guard acts on it as configured.

    Args:
        messages: the agent's request.
        read_only: names of the tools that change nothing.
        stages: the pipeline's stages (its input guards are asked).
    """
    keyed, exchange, results = split_exchange(messages, read_only)
    if not exchange:
        return messages, ""
    texts = [(f"tool_results[{i}]", r) for i, r in enumerate(results) if r]
    for stage in stages:
        if not isinstance(stage, InputGuard) or not stage.config.scan_tool_results:
            continue
        try:
            if stage.check(texts) is not None:
                return messages, ""
        except Exception:
            return messages, ""
    return keyed, exchange


def params_of(
    tool_choice: Tool | str,
    json_output: bool | type[Any] | None,
    extra_create_args: Mapping[str, Any],
) -> dict[str, Any]:
    """A ``create`` call's arguments as OpenAI request parameters (for the key)."""
    params = dict(extra_create_args)
    if isinstance(tool_choice, Tool):
        params["tool_choice"] = {
            "type": "function",
            "function": {"name": tool_choice.name},
        }
    else:
        params["tool_choice"] = tool_choice
    if json_output is True:
        params["response_format"] = {"type": "json_object"}
    elif isinstance(json_output, type):
        schema = getattr(json_output, "model_json_schema", None)
        params["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": json_output.__name__,
                "schema": schema() if callable(schema) else repr(json_output),
            },
        }
    return params
