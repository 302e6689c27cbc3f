"""AutoGen: a ``CreateResult`` as a stored answer; the client's part of the key.

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

**Key.** :func:`keyed_instructions` labels the instructions the client passes to
the pipeline, so they join the exact part of the key (``instruction_hash``): the
client's entries (envelopes among them) never answer another path over the same
cache (a plain ``pipeline.run``, the proxy), nor theirs it. A read-only tool
exchange after a lone question (``_autogen_messages.split_exchange``) adds its
hash: it is keyed exactly. The tools' schemas, ``tool_choice`` and ``json_output``
are keyed by the request fingerprint (``params``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
from autogen_core import FunctionCall
from autogen_core.models import CreateResult

__all__ = [
    "Decoded",
    "decode",
    "encode",
    "keyed_instructions",
]

SEP = "\x1e"
PREFIX = f"{SEP}stagecache.autogen/1 "
_AUTOGEN_LABEL = "[stagecache.autogen/1]"
_EXCHANGE_LABEL = "[tool exchange "


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


def keyed_instructions(chat: Sequence[Mapping[str, str]], exchange: str = "") -> str:
    """The instructions to run with: the system text, the AutoGen label and the
    exchange hash, if any (see the module docstring).

    Args:
        chat: the keyed messages.
        exchange: the hash of a read-only tool exchange after the question.
    """
    system = "\n".join(m["content"] for m in chat if m["role"] == "system")
    label = f"{_EXCHANGE_LABEL}{exchange}]" if exchange else ""
    return f"{system}\n{_AUTOGEN_LABEL}{label}"
