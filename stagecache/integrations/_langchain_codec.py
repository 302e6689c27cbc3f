"""LangChain generations in a cache entry: what is stored, and what a hit gives back.

An entry's ``answer`` is the text the guards saw: the text of the one generation,
or the texts of several joined by a blank line. Everything else LangChain returned
(``generation_info``, the message's ``usage_metadata``, ``response_metadata``,
``additional_kwargs``, the generation classes) is kept as JSON in the entry's
metadata under :data:`ENTRY_KEY`, and restored on a hit. The message ``id`` is not
kept: a hit is a new message, and LangGraph merges messages that share an id.

What is not stored (:func:`storable` returns None): no generation, a generation
that calls tools or holds non-text content, one that did not stop normally
(``finish_reason`` ``length``, ``content_filter``, ...), a class this module does
not know, or a serialised form over :data:`MAX_ENCODED_CHARS`.

On a hit the output guard has run over the answer again. When it still matches the
stored texts, the generations come back exactly as stored; a single generation
whose text the guard changed comes back with the new text; several whose joined
text changed cannot be split again and the lookup is a miss.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    message_to_dict,
    messages_from_dict,
)
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
)

from stagecache._model import Usage
from stagecache.guards._storable import unfinished

__all__ = [
    "ENTRY_KEY",
    "JOIN",
    "MAX_ENCODED_CHARS",
    "Storable",
    "finish_reason",
    "message_entry",
    "restore",
    "restore_message",
    "storable",
    "usage_of",
]

_log = logging.getLogger("stagecache.integrations.langchain")

#: The entry-metadata key of the serialised generations.
ENTRY_KEY = "langchain"
#: What joins the texts of several generations in the stored answer.
JOIN = "\n\n"
#: The longest serialised form stored (logprobs can be large).
MAX_ENCODED_CHARS = 256_000
_VERSION = 1
_KINDS: dict[str, type[Generation]] = {
    cls.__name__: cls
    for cls in (Generation, GenerationChunk, ChatGeneration, ChatGenerationChunk)
}


class Storable(NamedTuple):
    """What a model's generations put in the cache.

    Attributes:
        text: the answer the guards see and the entry keeps.
        finish_reason: why the model stopped (the first one reported), or None.
        usage: the token usage the messages reported.
        metadata: the entry metadata holding the serialised generations.
    """

    text: str
    finish_reason: str | None
    usage: Usage
    metadata: dict[str, str]


def finish_reason(*sources: object) -> str | None:
    """The finish reason in LangChain metadata: ``finish_reason`` (OpenAI, Gemini),
    ``stop_reason`` (Anthropic) or ``done_reason`` (Ollama); None when absent."""
    for source in sources:
        if isinstance(source, Mapping):
            for key in ("finish_reason", "stop_reason", "done_reason"):
                value = source.get(key)
                if isinstance(value, str) and value:
                    return value
    return None


def storable(generations: Sequence[Generation]) -> Storable | None:
    """What to store for LangChain's ``return_val``, or None to store nothing."""
    if not generations:
        return None
    texts: list[str] = []
    reasons: list[str | None] = []
    usage = Usage()
    items: list[dict[str, Any]] = []
    for generation in generations:
        kind = type(generation).__name__
        if _KINDS.get(kind) is not type(generation):
            return None  # a class we could not build again
        message = getattr(generation, "message", None)
        reason = finish_reason(
            generation.generation_info, getattr(message, "response_metadata", None)
        )
        if unfinished(reason):
            return None  # cut by the token limit or a filter
        item: dict[str, Any] = {"kind": kind, "info": generation.generation_info}
        if isinstance(message, BaseMessage):
            if getattr(message, "tool_calls", None) or not isinstance(
                message.content, str
            ):
                return None  # tool calls and media are never stored
            texts.append(message.content)
            item["message"] = message_to_dict(message.model_copy(update={"id": None}))
            used = usage_of(message)
            usage.prompt_tokens += used.prompt_tokens
            usage.completion_tokens += used.completion_tokens
        else:
            texts.append(generation.text)
            item["text"] = generation.text
        reasons.append(reason)
        items.append(item)
    encoded = _encode(items)
    if encoded is None:
        return None
    reason = next((r for r in reasons if r is not None), None)
    return Storable(JOIN.join(texts), reason, usage, {ENTRY_KEY: encoded})


def message_entry(message: BaseMessage) -> Storable | None:
    """:func:`storable` for the one message a chat model answered."""
    return storable([ChatGeneration(message=message)])


def restore(
    metadata: Mapping[str, str] | None, answer: str, is_chat: bool, mark: dict[str, Any]
) -> list[Generation] | None:
    """The generations of a hit, or None when they cannot be given back exactly.

    Args:
        metadata: the entry's metadata; None when it could not be read.
        answer: the post-guard answer of the hit.
        is_chat: whether the prompt was a chat model's (for entries stored
            without generations, e.g. imported pairs).
        mark: put into each chat message's ``response_metadata["stagecache"]``.
    """
    if metadata is None:
        return None
    encoded = metadata.get(ENTRY_KEY)
    if encoded is None:
        plain: Generation = (
            ChatGeneration(message=AIMessage(content=answer)) if is_chat else
            Generation(text=answer)
        )  # fmt: skip
        return [_marked(plain, mark)]
    generations = _decode(encoded)
    if generations is None:
        return None
    if JOIN.join(_text(g) for g in generations) != answer:
        if len(generations) != 1:
            return None  # a guard changed the joined text: it cannot be split
        generations = [_with_text(generations[0], answer)]
    return [_marked(g, mark) for g in generations]


def restore_message(metadata: Mapping[str, str] | None) -> BaseMessage | None:
    """The one stored message of an entry written by :func:`message_entry`."""
    encoded = (metadata or {}).get(ENTRY_KEY)
    generations = _decode(encoded) if encoded is not None else None
    if not generations or len(generations) != 1:
        return None
    return getattr(generations[0], "message", None)


# -- helpers ----------------------------------------------------------------------


def usage_of(message: BaseMessage) -> Usage:
    """The token usage a message reports in ``usage_metadata`` (zeros if none)."""
    counts = getattr(message, "usage_metadata", None) or {}
    return Usage(
        prompt_tokens=_count(counts.get("input_tokens")),
        completion_tokens=_count(counts.get("output_tokens")),
    )


def _count(value: object) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok else 0  # type: ignore[return-value]


def _jsonable(value: object) -> object:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return str(value)  # a datetime, an enum, ...: kept as text


def _encode(items: list[dict[str, Any]]) -> str | None:
    try:
        encoded = json.dumps(
            {"v": _VERSION, "generations": items},
            default=_jsonable,
            allow_nan=False,
            ensure_ascii=False,
        )
    except (TypeError, ValueError) as exc:
        _log.debug("generations not stored: not serialisable (%s)", type(exc).__name__)
        return None
    if len(encoded) > MAX_ENCODED_CHARS:
        _log.debug("generations not stored: %d chars serialised", len(encoded))
        return None
    return encoded


def _decode(encoded: str) -> list[Generation] | None:
    try:
        data = json.loads(encoded)
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            raise ValueError("unknown format")
        out: list[Generation] = []
        for item in data["generations"]:
            cls = _KINDS[item["kind"]]
            info = item.get("info")
            if "message" in item:
                message = messages_from_dict([item["message"]])[0]
                out.append(cls(message=message, generation_info=info))  # type: ignore[call-arg]
            else:
                out.append(cls(text=item["text"], generation_info=info))
    except Exception as exc:  # a corrupt or foreign entry: a miss, never a crash
        _log.debug("stored generations unreadable: %s", type(exc).__name__)
        return None
    return out or None


def _text(generation: Generation) -> str:
    message = getattr(generation, "message", None)
    if isinstance(message, BaseMessage) and isinstance(message.content, str):
        return message.content
    return generation.text


def _with_text(generation: Generation, text: str) -> Generation:
    message = getattr(generation, "message", None)
    if isinstance(message, BaseMessage):
        return type(generation)(  # type: ignore[call-arg]
            message=message.model_copy(update={"content": text}),
            generation_info=generation.generation_info,
        )
    return generation.model_copy(update={"text": text})


def _marked(generation: Generation, mark: dict[str, Any]) -> Generation:
    message = getattr(generation, "message", None)
    if isinstance(message, BaseMessage):
        message.response_metadata = {**message.response_metadata, "stagecache": mark}
    return generation
