"""The recorded mode of a Redis namespace, its upgrade, and ``reencrypt``.

A namespace records its mode in ``<namespace>:mode`` (``plain``,
``aes256gcm:<key fingerprint>`` or ``ephemeral``; see ``_crypto``). A worker
checks it when it opens (or, if Redis was down then, before its first cache
operation) and refuses another mode or key with a ``ConfigError``.

A namespace written before format 2 has no mode: the first worker upgrades it
in place when the data agree with its configuration (plaintext rows get their
checksum; rows sealed under its key are re-sealed with the vector inside) and
refuses otherwise (plaintext under encryption, sealed rows without it, rows
sealed under another key), naming ``stagecache reencrypt``, which rewrites every
row in the configured mode and records it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, NamedTuple

from stagecache.cache._crypto import PLAIN, REENCRYPT
from stagecache.cache._redis_codec import decode_any, is_sealed, value_fields
from stagecache.cache._redis_feedback import rewrite as rewrite_feedback
from stagecache.cache._rowcodec import CorruptRow, ForeignKey
from stagecache.errors import ConfigError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from stagecache.cache._backend import Entry
    from stagecache.cache._redis import RedisBackend

__all__ = ["REWRITE", "Rewritten", "check_mode", "rewrite_all"]

# KEYS[1] the entry hash; ARGV[1] its created_at as stored (a row replaced since
# it was read is left alone), ARGV[2..] the new value fields. TTL is kept.
REWRITE = """
if redis.call('HGET', KEYS[1], 'c') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'q', 'a', 'm', 'v', 'k', 'z', 'Z')
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""
_CHUNK = 500


class Rewritten(NamedTuple):
    """What a rewrite of every row did."""

    rewritten: int
    dropped: int
    mode: str


def _where(backend: RedisBackend) -> str:
    return f"redis namespace {backend.namespace!r} at {backend.safe_url}"


async def check_mode(backend: RedisBackend, client: Redis) -> None:
    """Check (or record, or upgrade to) the namespace's mode.

    Raises:
        ConfigError: the namespace's mode or key is not this worker's.
    """
    key = backend.key("mode")
    recorded = await client.get(key)
    if recorded is None:
        if int(await client.hlen(backend.key("w"))):
            await rewrite_all(backend, client, upgrade=True)
            return
        await client.set(key, backend.codec.mode, nx=True)
        recorded = await client.get(key) or backend.codec.mode.encode()
    backend.codec.check(_text(recorded), _where(backend))


async def _rows(
    backend: RedisBackend, client: Redis
) -> AsyncIterator[list[tuple[str, dict[bytes, bytes]]]]:
    cursor = 0
    while True:
        cursor, found = await client.hscan(backend.key("w"), cursor, count=_CHUNK)
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in found]
        if ids:
            pipe = client.pipeline(transaction=False)
            for entry_id in ids:
                pipe.hgetall(backend.key("e:" + entry_id))
            replies = await pipe.execute()
            yield [(i, f) for i, f in zip(ids, replies, strict=True) if f]
        if int(cursor) == 0:
            return


async def _refuse_upgrade(backend: RedisBackend, client: Redis) -> None:
    """Raise unless every row can be upgraded without changing its mode."""
    codec = backend.codec
    plain = sealed = foreign = 0
    async for batch in _rows(backend, client):
        for entry_id, fields in batch:
            if is_sealed(fields):
                sealed += 1
                try:
                    decode_any(entry_id, fields, codec)
                except (CorruptRow, ForeignKey):
                    foreign += 1
            else:
                plain += 1
    where = _where(backend)
    if plain and codec.encrypted:
        codec.check(PLAIN, where)
    if sealed and not codec.encrypted:
        raise ConfigError(
            f"{where} holds {sealed} encrypted entries but encrypt_values is off: "
            "set encrypt_values = true and the namespace's key; to decrypt it, "
            f"name the key's variable in encryption_old_keys and run `{REENCRYPT}`",
            field="cache.backend.encrypt_values",
        )
    if foreign:
        raise ConfigError(
            f"{where}: {foreign} of {sealed} encrypted entries do not open with this "
            "worker's keys (another STAGECACHE_CACHE_KEY wrote them). Set the key "
            "they were written with; to rotate, name the old key's variable in "
            f"encryption_old_keys and run `{REENCRYPT}`",
            field="cache.backend.encrypt_values",
        )


async def rewrite_all(
    backend: RedisBackend, client: Redis, *, upgrade: bool = False
) -> Rewritten:
    """Rewrite every row in the backend's mode and record the mode.

    Args:
        upgrade: a namespace written before format 2: refuse (``ConfigError``)
            unless every row keeps its mode and opens; record the mode only if
            no other worker recorded one meanwhile, then check it.

    Rows no key opens, or altered ones, are deleted (``reencrypt``).
    """
    codec = backend.codec
    if upgrade:
        await _refuse_upgrade(backend, client)
    script = client.register_script(REWRITE)
    rewritten = 0
    dropped: list[str] = []
    async for batch in _rows(backend, client):
        for entry_id, fields in batch:
            try:
                entry: Entry = decode_any(entry_id, fields, codec)
            except (CorruptRow, ForeignKey):
                dropped.append(entry_id)
                continue
            args: list[Any] = [fields[b"c"], *value_fields(codec.encode(entry))]
            done = await script(keys=[backend.key("e:" + entry_id)], args=args)
            rewritten += int(done)
    for start in range(0, len(dropped), _CHUNK):
        await backend.delete(dropped[start : start + _CHUNK])
    done, gone = await rewrite_feedback(backend, client)  # the log is sealed too
    rewritten += done
    key = backend.key("mode")
    if upgrade:
        await client.set(key, codec.mode, nx=True)
        recorded = await client.get(key) or codec.mode.encode()
        codec.check(_text(recorded), _where(backend))
    else:
        await client.set(key, codec.mode)
    return Rewritten(rewritten, len(dropped) + gone, codec.mode)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
