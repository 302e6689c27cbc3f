"""What the cache stages share: the query vector, the key parts, the single flight.

The exact part of a cache key is ``KeyParts(model_id, instruction_hash,
context_fingerprint)``:

- ``model_id``: the chat model *and* the embedder model (vectors of two embedders
  are not comparable, so a change of either is a miss);
- ``instruction_hash``: sha256 of the system prompt;
- ``context_fingerprint``: sha256 of the memory context, the declared tool names,
  and the conversation history when ``cache_multi_turn`` is on.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio
import msgspec

from stagecache._model import Turn
from stagecache.errors import EmbeddingError
from stagecache.types import Embedder, Vectors

if TYPE_CHECKING:
    from stagecache.cache import KeyParts

__all__ = [
    "SingleFlight",
    "ensure_embedding",
    "fingerprint",
    "key_parts",
    "normalise_query",
]

_encoder = msgspec.json.Encoder()


def fingerprint(parts: Sequence[object]) -> str:
    """A stable sha256 hex digest of ``parts`` (JSON-encoded, so no separator games)."""
    if not parts:
        return ""
    return hashlib.sha256(_encoder.encode(list(parts))).hexdigest()[:32]


def _hash_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def normalise_query(text: str) -> str:
    """NFC, stripped, whitespace collapsed: what makes two queries identical."""
    return " ".join(unicodedata.normalize("NFC", text).split())


async def ensure_embedding(turn: Turn, embedder: Embedder) -> Vectors:
    """The query's vector (1-D, float32), embedding it once per turn."""
    if turn.embedding is None:
        vectors = await embedder.embed([turn.query])
        if vectors.ndim != 2 or vectors.shape[0] != 1:
            raise EmbeddingError(
                f"embedder {embedder.model_id!r} returned shape {vectors.shape} "
                "for one text"
            )
        turn.embedding = vectors[0]
    vector: Vectors = turn.embedding
    return vector


def key_parts(turn: Turn, embedder_id: str, *, multi_turn: bool) -> KeyParts:
    """The exact-match part of the cache key for ``turn``."""
    from stagecache.cache import KeyParts

    context: list[object] = [list(turn.memory), sorted(t.name for t in turn.tools)]
    if multi_turn:
        context.append([[m.role, m.content] for m in turn.history])
    if turn.context_fingerprint:
        context.append(turn.context_fingerprint)
    return KeyParts(
        model_id=f"{turn.model}|{embedder_id}",
        instruction_hash=_hash_text(turn.instructions),
        context_fingerprint=fingerprint(context),
    )


class SingleFlight:
    """N identical concurrent misses make one model call.

    The first miss for a key becomes the leader; later ones wait (bounded) until the
    leader's turn ends, then look the cache up again. The leader's release runs as a
    turn cleanup, so it happens whatever the outcome (stored, failed, cancelled).
    """

    __slots__ = ("_flights",)

    def __init__(self) -> None:
        self._flights: dict[tuple[str, ...], anyio.Event] = {}

    def leader(self, key: tuple[str, ...]) -> anyio.Event | None:
        """The event of the flight already running for ``key``, if any."""
        return self._flights.get(key)

    def lead(self, key: tuple[str, ...]) -> Callable[[], None]:
        """Register as the leader of ``key``; returns the release function."""
        event = anyio.Event()
        self._flights[key] = event

        def release() -> None:
            if self._flights.get(key) is event:
                del self._flights[key]
            event.set()

        return release

    def __len__(self) -> int:
        return len(self._flights)
