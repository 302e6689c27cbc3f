"""What the cache stages share: the query vector and the key parts.

The exact part of a cache key is ``KeyParts(model_id, instruction_hash,
context_fingerprint)``:

- ``model_id``: the chat model *and* the embedder model (vectors of two embedders
  are not comparable, so a change of either is a miss);
- ``instruction_hash``: sha256 of the system prompt;
- ``context_fingerprint``: sha256 of the memory context, the declared tool names,
  the conversation history when ``cache_multi_turn`` is on, the request
  fingerprint (the parameters that change the answer, ``stagecache._request_params``)
  and the per-request cache namespace. The last two join only when present, so a
  plain request keys as entries stored before they existed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from stagecache._model import Turn
from stagecache.errors import EmbeddingError
from stagecache.types import Embedder, Vectors

if TYPE_CHECKING:
    from stagecache.cache import KeyParts

__all__ = ["ensure_embedding", "fingerprint", "key_parts", "user_source"]

_encoder = msgspec.json.Encoder()


def fingerprint(parts: Sequence[object]) -> str:
    """A stable sha256 hex digest of ``parts`` (JSON-encoded, so no separator games)."""
    if not parts:
        return ""
    return hashlib.sha256(_encoder.encode(list(parts))).hexdigest()[:32]


def _hash_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def user_source(user_id: str) -> str:
    """The id an embedding-cache row is tied to for ``user_id`` (a hash, not the id)."""
    return (
        "user:" + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()
    )


async def ensure_embedding(turn: Turn, embedder: Embedder) -> Vectors:
    """The query's vector (1-D, float32), embedding it once per turn."""
    if turn.embedding is None:
        user_id = turn.caller.user_id
        if user_id and hasattr(embedder, "purge_sources"):
            # Tie the embedding-cache row to the user, so purge_user removes it.
            vectors = await embedder.embed(
                [turn.query], sources=(user_source(user_id),)
            )  # type: ignore[call-arg]
        else:
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
    if turn.params_fingerprint:
        context.append({"params": turn.params_fingerprint})
    namespace = turn.cache_control.namespace if turn.cache_control else None
    if namespace:
        context.append({"namespace": namespace})
    return KeyParts(
        model_id=f"{turn.model}|{embedder_id}",
        instruction_hash=_hash_text(turn.instructions),
        context_fingerprint=fingerprint(context),
    )
