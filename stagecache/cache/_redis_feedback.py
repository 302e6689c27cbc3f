"""The feedback log of the Redis backend (see ``_feedbacklog``).

One hash per record, laid out and sealed like an entry (``_redis_codec``), under
``<namespace>:fb:<id>``; ``<namespace>:fbi`` orders the ids by time and
``<namespace>:fbu:<owner>`` lists the ids of one (tenant, user), so a purge
deletes them without a scan. The records are not published on the change
stream: no worker indexes them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from stagecache.cache._feedbacklog import (
    FeedbackRecord,
    from_row_entry,
    matches,
    to_row_entry,
)
from stagecache.cache._redis_codec import (
    decode_any,
    decode_entry,
    encode_entry,
    value_fields,
)
from stagecache.cache._rowcodec import CorruptRow, ForeignKey
from stagecache.cache._scope import OWNER_SEPARATOR, owner_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from stagecache.cache._redis import RedisBackend

__all__ = ["add", "clear", "purge", "records", "rewrite"]

_log = logging.getLogger("stagecache.cache")
#: Owner key of records on entries without a user (shared scopes).
_NOBODY = "\x00"


def _owner(user_id: str | None, tenant: str | None) -> str:
    return owner_key(tenant, user_id) or _NOBODY


async def add(backend: RedisBackend, client: Redis, record: FeedbackRecord) -> None:
    """Write one record and index it (one MULTI)."""
    row = to_row_entry(record)
    fields = encode_entry(row, backend.codec)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(backend.key("fb:" + row.entry_id), items=list(fields))
        pipe.zadd(backend.key("fbi"), {row.entry_id: row.created_at})
        pipe.sadd(backend.key("fbu:" + _owner(row.user_id, row.tenant)), row.entry_id)
        await pipe.execute()


async def _rows(
    backend: RedisBackend, client: Redis
) -> list[tuple[str, dict[bytes, bytes]]]:
    """(id, fields) of every record, oldest first."""
    found: list[Any] = await client.zrange(backend.key("fbi"), 0, -1)
    ids = [_text(i) for i in found]
    if not ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for record_id in ids:
            pipe.hgetall(backend.key("fb:" + record_id))
        rows = await pipe.execute()
    return [(i, f) for i, f in zip(ids, rows, strict=True) if f]


async def records(
    backend: RedisBackend,
    client: Redis,
    user_id: str | None,
    tenant: str | None,
) -> list[FeedbackRecord]:
    """The log (filtered), oldest first; altered or foreign rows skipped."""
    out, skipped = [], 0
    for record_id, fields in await _rows(backend, client):
        try:
            row = decode_entry(record_id, fields, backend.codec)
        except (CorruptRow, ForeignKey):
            skipped += 1
            continue
        if row is not None:
            record = from_row_entry(row)
            if matches(record, user_id, tenant):
                out.append(record)
    if skipped:
        _log.warning("cache: %d feedback records skipped (altered, or sealed under "
                     "another key)", skipped)  # fmt: skip
    return out


async def _drop(backend: RedisBackend, client: Redis, owners: list[str]) -> None:
    for owner in owners:
        key = backend.key("fbu:" + owner)
        ids = [_text(i) for i in await client.smembers(key)]
        async with client.pipeline(transaction=True) as pipe:
            for record_id in ids:
                pipe.delete(backend.key("fb:" + record_id))
            if ids:
                pipe.zrem(backend.key("fbi"), *ids)
            pipe.delete(key)
            await pipe.execute()


async def purge(
    backend: RedisBackend,
    client: Redis,
    user_id: str,
    tenant: str | None,
    *,
    all_tenants: bool,
) -> None:
    """Delete the records on the entries of ``user_id`` (of ``tenant``, or all)."""
    owners = [_owner(user_id, tenant)]
    if all_tenants:
        prefix = backend.key("fbu:")
        pattern = _glob(prefix) + "*" + OWNER_SEPARATOR + _glob(user_id)
        owners = [user_id] + [
            _text(k)[len(prefix) :] async for k in client.scan_iter(match=pattern)
        ]
    await _drop(backend, client, owners)


async def clear(backend: RedisBackend, client: Redis) -> None:
    """Delete the whole log."""
    prefix = backend.key("fbu:")
    owners = [
        _text(k)[len(prefix) :]
        async for k in client.scan_iter(match=_glob(prefix) + "*")
    ]
    await _drop(backend, client, owners)
    await client.delete(backend.key("fbi"))


async def rewrite(backend: RedisBackend, client: Redis) -> tuple[int, int]:
    """Re-seal every record in the backend's mode (``reencrypt``); returns
    (rewritten, dropped)."""
    rewritten = dropped = 0
    for record_id, fields in await _rows(backend, client):
        key = backend.key("fb:" + record_id)
        try:
            row = decode_any(record_id, fields, backend.codec)
        except (CorruptRow, ForeignKey):
            await client.delete(key)
            await client.zrem(backend.key("fbi"), record_id)
            dropped += 1
            continue
        new = value_fields(backend.codec.encode(row))
        async with client.pipeline(transaction=True) as pipe:
            pipe.hdel(key, "q", "a", "m", "v", "k", "z", "Z")
            pipe.hset(key, items=list(new))
            await pipe.execute()
        rewritten += 1
    return rewritten, dropped


def _glob(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped."""
    return "".join("\\" + c if c in "*?[]\\^-" else c for c in text)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
