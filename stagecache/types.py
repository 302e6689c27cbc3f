"""The pluggable units of stagecache: Protocols and aliases only.

Contracts, written once here:

- **Stage**: ``async __call__(turn) -> turn``. Reads and writes the fields of the turn
  it owns, returns the turn. Ends a turn early with ``turn.stop(...)`` (a value, not an
  exception). Must not block the event loop: CPU work goes through
  ``anyio.to_thread.run_sync``. ``failure_policy`` says what the runner does when the
  stage raises or times out: ``"continue"`` (record it, go on: cache and memory stages),
  ``"refuse"`` (end the turn with a refusal: guards fail closed) or ``"fail"`` (the
  request fails with a :class:`~stagecache.errors.StageError`: the model call, which
  has no substitute). Heavy set-up goes in ``warm_up()``, never in ``__init__``.
- **Embedder**: ``async embed(texts) -> float32 array (n, dim)``, rows L2-normalised.
  Raises :class:`~stagecache.errors.EmbeddingError` on failure.
- **LLMClient**: ``async complete(turn) -> Completion``. Raises
  :class:`~stagecache.errors.LLMError`.
- **Verifier**: decides whether a vector-search candidate really answers the query.
  Pure and fast (it runs on every lookup that finds a candidate).
- **Subscriber**: receives pipeline events. Must not block and must not raise; the bus
  contains and counts any exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from stagecache._model import Candidate, ToolCall, Turn, Usage, Verdict
    from stagecache.pipeline._events import Event

__all__ = [
    "Completion",
    "Embedder",
    "FailurePolicy",
    "LLMClient",
    "Stage",
    "Subscriber",
    "Vectors",
    "Verifier",
]

FailurePolicy = Literal["continue", "refuse", "fail"]
Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Stage(Protocol):
    """An async step of the chain: ``(turn) -> turn``."""

    name: str
    failure_policy: FailurePolicy
    timeout_s: float | None

    async def __call__(self, turn: Turn) -> Turn: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> Vectors: ...


class Completion(Protocol):
    """What a model client returns."""

    text: str
    usage: Usage
    tool_calls: list[ToolCall]


@runtime_checkable
class LLMClient(Protocol):
    """A chat model: answers a turn (its messages, instructions, tools)."""

    model_id: str

    async def complete(self, turn: Turn) -> Any: ...


@runtime_checkable
class Verifier(Protocol):
    """Accepts or rejects a candidate found by the vector search.

    Optional attributes the engine reads when present: ``candidate_threshold``
    (the cosine to search down to), ``effective_floor(threshold)`` (the cosine
    floor in force, reported as ``Result.cache.threshold``) and
    ``verify_ranked(query, candidates)``. Whatever a verifier says, no candidate
    below a ``[cache] threshold`` the user set hits.
    """

    name: str

    def verify(self, query: str, candidate: Candidate) -> Verdict: ...


@runtime_checkable
class Subscriber(Protocol):
    """A receiver of pipeline events (exporters are subscribers)."""

    def __call__(self, event: Event) -> None: ...
