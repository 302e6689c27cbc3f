"""The feedback log: the query that got a hit, the entry it hit, and the verdict.

``feedback(entry_id, correct, query=...)`` counts the verdict on the entry (and a
wrong one may remove it); with the query that got the hit it also appends a
:class:`FeedbackRecord` to the backend's feedback log, which ``stagecache tune``
turns into training pairs (``correct=False``: a negative pair, ``correct=True``: a
positive one). The entry may be gone by then (negative feedback removes it), so the
record carries both texts.

A record is stored as an :class:`~stagecache.cache._backend.Entry`-shaped row
(``query``: the hit query, ``answer``: the entry's query, ``metadata``: the entry
id and the verdict) so the backend's row codec checksums or seals it like an
entry: an encrypted cache keeps its feedback encrypted. It carries the entry's
user and tenant, so ``purge_user`` erases it with the user's entries; ``clear``
erases the log. Backends that keep a log have ``add_feedback`` and
``feedback_records`` (memory, SQLite, Redis: ``_redis_feedback``).
"""

from __future__ import annotations

import secrets
import time
from typing import Protocol, runtime_checkable

import msgspec

from stagecache.cache._backend import Entry
from stagecache.cache._settings import KeyParts

__all__ = [
    "FeedbackLog",
    "FeedbackRecord",
    "from_row_entry",
    "matches",
    "to_row_entry",
]

_ENTRY = "feedback.entry_id"
_CORRECT = "feedback.correct"


class FeedbackRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One verdict on a hit.

    Attributes:
        entry_id: the entry that answered.
        hit_query: the query that got the hit.
        entry_query: the query the entry was stored under.
        correct: whether the answer was right.
        user_id: the entry's user (``purge_user`` erases the record with it).
        tenant: that user's tenant.
        at: when the verdict came (clock seconds).
    """

    entry_id: str
    hit_query: str
    entry_query: str
    correct: bool
    user_id: str | None = None
    tenant: str | None = None
    at: float = 0.0


@runtime_checkable
class FeedbackLog(Protocol):
    """What a backend that keeps the feedback log has."""

    async def add_feedback(self, record: FeedbackRecord) -> None:
        """Append one record."""

    async def feedback_records(
        self, user_id: str | None = None, tenant: str | None = None
    ) -> list[FeedbackRecord]:
        """Every record (of ``user_id`` of ``tenant`` when given), oldest first;
        records that fail their checksum or are sealed under another key are
        skipped."""
        ...


def to_row_entry(record: FeedbackRecord) -> Entry:
    """``record`` as an entry-shaped row, for the backend's row codec."""
    at = record.at or time.time()
    return Entry(
        entry_id=secrets.token_hex(8),
        scope_key="feedback",
        scope_mode="feedback",
        user_id=record.user_id,
        tenant=record.tenant,
        query=record.hit_query,
        answer=record.entry_query,
        parts=KeyParts("", "", ""),
        metadata={_ENTRY: record.entry_id, _CORRECT: "1" if record.correct else "0"},
        created_at=at,
        expires_at=at,
        last_used=at,
    )


def from_row_entry(row: Entry) -> FeedbackRecord:
    """The record of an entry-shaped feedback row."""
    return FeedbackRecord(
        entry_id=row.metadata.get(_ENTRY, ""),
        hit_query=row.query,
        entry_query=row.answer,
        correct=row.metadata.get(_CORRECT) == "1",
        user_id=row.user_id,
        tenant=row.tenant,
        at=row.created_at,
    )


def matches(record: FeedbackRecord, user_id: str | None, tenant: str | None) -> bool:
    """Whether ``record`` belongs to the filter (None: any user / any tenant)."""
    if user_id is not None and record.user_id != user_id:
        return False
    return tenant is None or record.tenant == tenant
