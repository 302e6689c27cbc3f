"""AutoGen: a ``CreateResult`` as a stored answer; the request's shape key.

**Stored answers.** A plain text reply is stored as its text, like every other
answer in the cache. A reply that carries more (a ``thought``, or a list of
``FunctionCall`` s the model asks the agent to run) is stored as an *envelope*::

    \\x1estagecache.autogen/1 {"calls": [...]}\\x1e<thought>\\x1e<content>

The header (one JSON line) holds the function calls, exactly as the model sent them
(id, name, arguments string); the thought and the text follow as raw text, so the
output guard scans them as it scans any answer (JSON escaping would hide a secret at
the start of a line from its word boundaries). A text reply that itself starts with
the envelope prefix is stored as an envelope too, so stored text is never mistaken
for one. A thought that contains the separator cannot be stored: the reply is
served without it (it was not guarded) and not cached.

**Shape key.** What the agent asks for besides the messages also changes the answer:
the tools' full schemas (name, description, parameters), ``tool_choice`` and
``json_output`` (JSON mode, or the JSON schema of a structured-output type).
:func:`shape_fingerprint` hashes them; the adapter folds the hash (and that of a
read-only tool exchange, ``_autogen_messages.split_exchange``) into the
instructions it passes to the pipeline, so it joins the exact part of the key
(``instruction_hash``) and a request with another schema never gets the entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from autogen_core import FunctionCall
from autogen_core.models import CreateResult
from autogen_core.tools import Tool, ToolSchema

__all__ = [
    "NOT_KEYABLE",
    "Decoded",
    "decode",
    "encode",
    "keyed_instructions",
    "shape_fingerprint",
]

SEP = "\x1e"
PREFIX = f"{SEP}stagecache.autogen/1 "
#: :func:`shape_fingerprint`'s answer for a request whose shape cannot be keyed.
NOT_KEYABLE = "not-keyable"
_SHAPE_LABEL = "[stagecache.autogen shape "
_EXCHANGE_LABEL = "[stagecache.autogen tool exchange "


class _Call(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    name: str
    arguments: str


class _Header(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    calls: list[_Call] | None = None
    thought: bool = False


class Decoded(msgspec.Struct, frozen=True):
    """A stored answer taken apart.

    Attributes:
        content: the text, or the function calls the model asked for.
        thought: the reasoning text, if the reply had one.
    """

    content: str | list[FunctionCall]
    thought: str | None = None


_header_decoder = msgspec.json.Decoder(_Header)
_encoder = msgspec.json.Encoder()


def encode(result: CreateResult) -> str | None:
    """The answer text to store for ``result``; None when it cannot be stored.

    Plain text (no thought) is stored as it is; anything richer as an envelope.
    """
    thought = result.thought
    if thought is not None and SEP in thought:
        return None
    if isinstance(result.content, str):
        text = result.content
        if thought is None and not text.startswith(PREFIX):
            return text
        header = _Header(thought=thought is not None)
    else:
        calls = [c for c in result.content if isinstance(c, FunctionCall)]
        if len(calls) != len(result.content):
            return None
        header = _Header(
            calls=[_Call(id=c.id, name=c.name, arguments=c.arguments) for c in calls],
            thought=thought is not None,
        )
        text = ""
    head = _encoder.encode(header).decode()
    return f"{PREFIX}{head}{SEP}{thought if thought is not None else ''}{SEP}{text}"


def decode(answer: str) -> Decoded:
    """The content and thought of a stored (or freshly guarded) answer.

    A plain answer is its own content. An envelope a guard damaged beyond
    reading (a custom redaction pattern that ate a separator) comes back as its
    text after the prefix: redacted, never the unredacted original.
    """
    if not answer.startswith(PREFIX):
        return Decoded(content=answer)
    parts = answer[len(PREFIX) :].split(SEP, 2)
    if len(parts) != 3:
        return Decoded(content=answer[len(PREFIX) :])
    head, thought, text = parts
    try:
        header = _header_decoder.decode(head)
    except msgspec.DecodeError:
        return Decoded(content=answer[len(PREFIX) :])
    keep = thought if header.thought else None
    if header.calls is not None:
        calls = [
            FunctionCall(id=c.id, name=c.name, arguments=c.arguments)
            for c in header.calls
        ]
        return Decoded(content=calls, thought=keep)
    return Decoded(content=text, thought=keep)


def shape_fingerprint(
    tools: Sequence[Tool | ToolSchema],
    tool_choice: Tool | str,
    json_output: bool | type[Any] | None,
) -> str:
    """A hash of what shapes the answer besides the messages; "" for a plain request.

    Returns :data:`NOT_KEYABLE` for a ``json_output`` type whose schema cannot be
    read (not a pydantic model) or a tool schema that is not JSON data.
    """
    shape: dict[str, Any] = {}
    if tools:
        schemas = [t.schema if isinstance(t, Tool) else t for t in tools]
        shape["tools"] = sorted(
            (_tool_shape(s) for s in schemas), key=lambda s: str(s["name"])
        )
    if isinstance(tool_choice, Tool):
        shape["tool_choice"] = {"name": tool_choice.name}
    elif tool_choice != "auto":
        shape["tool_choice"] = tool_choice
    if json_output is True:
        shape["json_output"] = "json_object"
    elif isinstance(json_output, type):
        schema = getattr(json_output, "model_json_schema", None)
        if not callable(schema):
            return NOT_KEYABLE
        shape["json_output"] = {"name": json_output.__name__, "schema": schema()}
    if not shape:
        return ""
    try:
        data = json.dumps(shape, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return NOT_KEYABLE
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _tool_shape(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": str(schema.get("name", "")),
        "description": schema.get("description", ""),
        "parameters": schema.get("parameters") or {},
        "strict": bool(schema.get("strict", False)),
    }


def keyed_instructions(
    chat: Sequence[Mapping[str, str]], shape: str, exchange: str = ""
) -> str | None:
    """The instructions to run with: the system text and the hashes, if any.

    Args:
        chat: the keyed messages.
        shape: :func:`shape_fingerprint`'s hash.
        exchange: the hash of a read-only tool exchange after the question.

    Returns:
        None (the pipeline's own default: the system messages) for a plain request.
    """
    if not shape and not exchange:
        return None
    system = "\n".join(m["content"] for m in chat if m["role"] == "system")
    labels = f"{_SHAPE_LABEL}{shape}]" if shape else ""
    if exchange:
        labels += f"{_EXCHANGE_LABEL}{exchange}]"
    return f"{system}\n{labels}"
