"""The Redis backend: one cache shared by many workers on many machines.

Entries live in Redis hashes with native TTLs (layout in ``_redis_lua``); every
write is one Lua script, so the caps (``max_entries_per_user``,
``max_total_entries``) and the LRU bookkeeping hold exactly with any number of
writers. Every script also publishes what it changed (stores, evictions, expiries,
invalidations, purges) on a Redis Stream of the namespace; each worker follows the
stream (:mod:`._redis_sync`) and hands the changes to its engine, which updates its
own per-scope indexes. A worker that starts, or comes back after a gap longer than
the stream retains (or after Redis restarted empty), rebuilds from Redis.

The hit path costs one round trip: the engine asks :meth:`RedisBackend.get_many`
for the few candidates that passed its index and key parts (one pipelined
``HGETALL`` each), so an entry purged or invalidated by any worker is never served
once the purge returned, whatever the stream delay. The hit's LRU and counter
update (:meth:`RedisBackend.touch`) is written behind, batched by a background
task, as increments (two workers' hits never overwrite each other; see
:mod:`._redis_touch`).

Failures: every Redis error becomes :class:`~stagecache.errors.BackendUnavailable`
(down, timed out) or :class:`~stagecache.errors.CacheError`, naming the URL without
its password. Socket timeouts bound every call (default: half of ``[cache]
timeout_s``), so even the engine's shielded writes end in time; the client retries
a broken connection once, immediately, and never backs off inside a request. A
Redis that is down when the worker starts is not fatal: the worker starts empty and
rebuilds once Redis answers.

``redis.asyncio`` runs on asyncio only: this backend refuses to open under trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from stagecache.cache import _redis_feedback as _feedback
from stagecache.cache._backend import Change, Entry
from stagecache.cache._feedbacklog import FeedbackRecord
from stagecache.cache._redis_codec import decode_entry, encode_entry
from stagecache.cache._redis_config import client_options, safe_url, url_problem
from stagecache.cache._redis_touch import Touches, stop_task
from stagecache.cache._rowcodec import CorruptRow, ForeignKey, RowCodec
from stagecache.cache._scope import OWNER_SEPARATOR, owner_key
from stagecache.errors import BackendUnavailable, CacheError, ConfigError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from stagecache.cache._redis_rows import Rewritten
    from stagecache.cache._redis_sync import Follower
    from stagecache.cache._settings import CacheSettings

__all__ = ["RedisBackend"]

T = TypeVar("T")
_log = logging.getLogger("stagecache.cache")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
# Ids per script call or pipeline: bounds the time one call blocks Redis.
CHUNK = 500
# Stream records one scrub script call reads (about 5 ms of Redis time).
SCRUB_BATCH = 1000


#: Connections per worker and client; requests beyond wait for a free one.
_MAX_CONNECTIONS = 64


class RedisBackend:
    """Cache entries in Redis, shared by every worker of a namespace.

    Args:
        url: ``redis://[user[:password]@]host:port/db``, ``rediss://`` for TLS,
            or ``unix:///path``.
        namespace: prefix of every key (``<namespace>:...``); workers sharing a
            cache use the same one.
        username: ACL user (overrides the URL's).
        password: ACL password (overrides the URL's; default: the
            ``STAGECACHE_REDIS_PASSWORD`` variable, if set).
        tls_ca_file: CA bundle to verify the server's certificate (``rediss://``).
        socket_timeout_s: limit of every Redis read, write and connect.
        max_entries_per_user: per-user cap enforced atomically in Redis (None: none).
        max_total_entries: cap over the namespace (None: none).
        stream_maxlen: events the change stream keeps (about); a worker that falls
            further behind rebuilds from Redis.
        encrypt_values: seal query, answer, metadata and vector with AES-256-GCM
            (key from ``STAGECACHE_CACHE_KEY``).
        ephemeral_key: with ``encrypt_values`` and no key set, use a random key
            (a warning; other workers cannot read those values).
        encryption_old_keys: names of variables holding keys to read with too.
        block_s: how long one stream read waits for events.

    Raises:
        ConfigError: a bad URL, or a missing or malformed encryption key; at
            open, a namespace recorded with another encryption mode or key.
    """

    name = "redis"
    stores_vectors = True

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        namespace: str = "stagecache",
        username: str | None = None,
        password: str | None = None,
        tls_ca_file: str | None = None,
        socket_timeout_s: float = 0.5,
        max_entries_per_user: int | None = None,
        max_total_entries: int | None = None,
        stream_maxlen: int = 100_000,
        encrypt_values: bool = False,
        ephemeral_key: bool = False,
        encryption_old_keys: Sequence[str] = (),
        block_s: float = 0.5,
    ) -> None:
        problem = url_problem(url)
        if problem is not None:
            raise ConfigError(problem, field="cache.backend.redis_url")
        self.url = url
        self.namespace = namespace
        self.origin = secrets.token_hex(8)
        self._prefix = f"{namespace}:"
        self._socket_timeout_s = socket_timeout_s
        self._options = client_options(
            username=username,
            password=password,
            tls_ca_file=tls_ca_file,
            socket_timeout_s=socket_timeout_s,
        )
        self._caps = (max_entries_per_user or 0, max_total_entries or 0)
        self._maxlen = stream_maxlen
        self.codec = RowCodec.from_config(
            encrypt=encrypt_values,
            ephemeral=ephemeral_key,
            old_keys=tuple(encryption_old_keys),
        )
        self._mode_ok = False
        self.block_s = block_s
        self._cmd: Redis | None = None
        self._sub: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._callbacks: list[Callable[[Change], None]] = []
        self._backlog: list[Change] = []
        self._touches = Touches(self._write_touches)
        self._tasks: list[asyncio.Task[None]] = []
        self._follower: Follower | None = None
        self._offline_start = False
        self._skipped = 0
        self.closing = False

    @classmethod
    def from_settings(cls, settings: CacheSettings) -> RedisBackend:
        """The backend described by ``settings.backend`` (``kind = "redis"``)."""
        b = settings.backend
        timeout = b.redis_socket_timeout_s
        if timeout is None:
            # Writes run shielded in the engine; two sequential calls at most on a
            # store must fit in the stage's [cache] timeout_s.
            timeout = settings.timeout_s / 2
        return cls(
            b.redis_url,
            namespace=b.redis_namespace,
            username=b.redis_username,
            password=b.redis_password,
            tls_ca_file=b.redis_tls_ca_file,
            socket_timeout_s=timeout,
            max_entries_per_user=settings.max_entries_per_user,
            max_total_entries=settings.max_total_entries,
            stream_maxlen=b.redis_stream_maxlen,
            encrypt_values=b.encrypt_values,
            ephemeral_key=b.ephemeral_key,
            encryption_old_keys=tuple(b.encryption_old_keys),
        )

    @property
    def encrypted(self) -> bool:
        """Whether values are sealed with AES-GCM."""
        return self.codec.encrypted

    @property
    def safe_url(self) -> str:
        """The URL without its password."""
        return safe_url(self.url)

    @property
    def resyncs(self) -> int:
        """How many times this worker rebuilt its view from Redis."""
        return self._follower.resyncs if self._follower is not None else 0

    # -- lifecycle -------------------------------------------------------------

    def _client(self, socket_timeout_s: float) -> Redis:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        options = dict(self._options)
        options["socket_timeout"] = socket_timeout_s
        # One immediate retry on a broken connection (a pooled socket that died
        # with a restarted server); never back off inside a request.
        retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
        # A blocking pool: a burst of requests waits (bounded) for a connection
        # instead of failing with "Too many connections".
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=_MAX_CONNECTIONS,
            timeout=socket_timeout_s,
            retry=retry,
            **options,
        )
        return Redis.from_pool(pool)

    async def open(self) -> None:
        """Connect, load the scripts, and start following the change stream.

        A Redis that cannot be reached is a warning, not an error: the worker
        starts with an empty cache and rebuilds once Redis answers. A Redis that
        refuses the credentials raises.

        Raises:
            CacheError: not running under asyncio.
            BackendUnavailable: authentication failed.
            ConfigError: the namespace records another encryption mode or key.
        """
        if self._cmd is not None:
            return
        _require_asyncio()
        self.closing = False
        from redis import exceptions as rex

        from stagecache.cache._redis_sync import Follower

        self._connect()
        assert self._cmd is not None
        follower = Follower(self)
        try:
            state = await self.state(self._cmd)
            await self._ensure_mode(self._cmd, translate=False)
        except ConfigError:
            await self._close_clients()
            raise
        except (rex.AuthenticationError, rex.AuthorizationError) as exc:
            await self._close_clients()
            raise BackendUnavailable(
                f"{self.safe_url}: Redis refused the credentials ({exc}); check "
                "backend.redis_username / redis_password (or the URL's user:password) "
                "against the server's ACL"
            ) from exc
        except (rex.RedisError, OSError) as exc:
            _log.warning(
                "cache: Redis at %s is unreachable (%s); starting with an empty "
                "cache, it is rebuilt when Redis answers",
                self.safe_url,
                exc,
            )
            self._offline_start = True
        else:
            follower.start_at(*state)
        self._follower = follower
        self._touches.start()
        self._tasks = [
            asyncio.create_task(follower.run(), name="stagecache-redis-follow"),
            asyncio.create_task(self._touches.run(), name="stagecache-redis-touch"),
        ]

    def _connect(self) -> None:
        from stagecache.cache import _redis_lua as lua

        self._cmd = self._client(self._socket_timeout_s)
        self._sub = self._client(self.block_s + self._socket_timeout_s + 1.0)
        for name in ("PUT", "TOUCH", "DELETE", "DELETE_SCOPE", "DELETE_USER"):
            self._scripts[name] = self._cmd.register_script(getattr(lua, name))
        for name in ("CLEAR", "STATE", "SCRUB"):
            self._scripts[name] = self._cmd.register_script(getattr(lua, name))

    async def _ensure_mode(self, client: Redis, *, translate: bool = True) -> None:
        """Check the namespace's recorded encryption mode once (see
        ``_redis_rows``); a worker that started with Redis down checks before its
        first read or write, so it never writes under a mismatched key."""
        if self._mode_ok:
            return
        from stagecache.cache._redis_rows import check_mode

        if translate:
            await self._do("mode check", check_mode(self, client))
        else:  # open() sorts Redis errors itself (unreachable: start offline)
            await check_mode(self, client)
        self._mode_ok = True

    async def reencrypt(self) -> Rewritten:
        """Rewrite every entry in this worker's mode and record it (the CLI's
        ``stagecache reencrypt``): seal a plaintext namespace, rotate keys, or
        decrypt. Entries are read with the current key and every
        ``encryption_old_keys``; those no key opens, and altered ones, are
        deleted. Works on a closed backend (without the mode check).
        """
        from stagecache.cache._redis_rows import rewrite_all

        _require_asyncio()
        opened = self._cmd is None
        if opened:
            self._connect()
        try:
            result = await self._do("reencrypt", rewrite_all(self, self._connected()))
            self._mode_ok = True
            return result
        finally:
            if opened:
                await self._close_clients()

    async def aclose(self) -> None:
        """Stop following, write pending touches (bounded), close; idempotent."""
        tasks, self._tasks = self._tasks, []
        self.closing = True
        bound = 2 * self._socket_timeout_s + self.block_s + 1.0
        for task in tasks:
            await stop_task(task, bound)
        await self._touches.stop(self._socket_timeout_s)
        if self._cmd is not None and self._touches.pending:
            with contextlib.suppress(TimeoutError, CacheError):
                await asyncio.wait_for(self.flush(), self._socket_timeout_s)
        await self._close_clients()
        self._follower = None

    async def _close_clients(self) -> None:
        cmd, sub, self._cmd, self._sub = self._cmd, self._sub, None, None
        for client in (cmd, sub):
            if client is not None:
                try:
                    await client.aclose()
                except Exception as exc:  # closing must not raise
                    _log.debug("cache: closing a redis client failed: %r", exc)

    # -- plumbing ----------------------------------------------------------------

    def _connected(self) -> Redis:
        if self._cmd is None:
            raise CacheError(f"{self.safe_url}: the redis backend is not open")
        return self._cmd

    def _translate(self, exc: BaseException, operation: str) -> CacheError:
        from redis import exceptions as rex

        if isinstance(
            exc, (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError, OSError)
        ):
            return BackendUnavailable(
                f"{self.safe_url}: {operation} failed: {exc or type(exc).__name__}. "
                "Is redis-server running and reachable? The request goes on "
                "without the cache; workers resync when Redis is back"
            )
        return CacheError(f"{self.safe_url}: {operation} failed: {exc!r}")

    async def _do(self, operation: str, call: Awaitable[T]) -> T:
        from redis import exceptions as rex

        try:
            return await call
        except (rex.RedisError, OSError) as exc:
            raise self._translate(exc, operation) from exc

    def _header(self) -> list[Any]:
        return [self._prefix, self.origin, self._maxlen]

    async def _script(self, name: str, args: list[Any], client: Redis | None) -> Any:
        return await self._scripts[name](args=self._header() + args, client=client)

    async def state(self, client: Redis) -> tuple[bytes, int, str]:
        """(epoch, events published, last stream id) of the namespace."""
        epoch, seq, last = await self._script("STATE", [secrets.token_hex(8)], client)
        return bytes(epoch), int(seq), _text(last)

    def key(self, suffix: str) -> str:
        """The full Redis key of ``suffix`` (``e:<id>``, ``log``, ...)."""
        return self._prefix + suffix

    async def fetch(self, client: Redis, entry_ids: Sequence[str]) -> dict[str, Entry]:
        """The verified entries among ``entry_ids`` (altered ones are evicted)."""
        out, _ = await self._fetch_checked(client, entry_ids)
        return out

    async def _fetch_checked(
        self, client: Redis, entry_ids: Sequence[str]
    ) -> tuple[dict[str, Entry], list[CorruptRow]]:
        """One pipelined HGETALL per chunk; rows that fail their checksum or tag
        are deleted (every worker hears of it) and returned."""
        await self._ensure_mode(client)
        out: dict[str, Entry] = {}
        corrupt: list[CorruptRow] = []
        bad: list[str] = []
        for start in range(0, len(entry_ids), CHUNK):
            ids = entry_ids[start : start + CHUNK]
            replies: list[Any]
            if len(ids) == 1:  # the usual hit: skip the pipeline's overhead
                replies = [await client.hgetall(self._prefix + "e:" + ids[0])]
            else:
                pipe = client.pipeline(transaction=False)
                for entry_id in ids:
                    pipe.hgetall(self._prefix + "e:" + entry_id)
                replies = await pipe.execute()
            for entry_id, fields in zip(ids, replies, strict=True):
                try:
                    entry = decode_entry(entry_id, fields, self.codec)
                except ForeignKey as exc:
                    self._skipped += 1
                    if self._skipped == 1 or self._skipped % 1000 == 0:
                        _log.warning(
                            "cache: %d entries skipped: %s", self._skipped, exc
                        )
                    continue
                except CorruptRow as exc:
                    corrupt.append(exc)
                    bad.append(entry_id)
                    continue
                if entry is not None:
                    out[entry_id] = entry
        if bad:
            _log.warning(
                "cache: %s: %d entries failed their integrity check and were "
                "evicted (%s)",
                self.safe_url,
                len(bad),
                corrupt[0],
            )
            await self._script("DELETE", bad, client)
            self._deliver([Change(kind="delete", entry_ids=tuple(bad))])
        return out, corrupt

    # -- the Backend protocol ------------------------------------------------------

    async def put(self, entry: Entry) -> None:
        """Insert or replace ``entry``; evictions over the caps are reported back.

        The script also reclaims entries already expired and, past a cap, the
        least recently used; those ids reach the engine as a ``delete`` change
        (and every other worker through the stream).
        """
        client = self._connected()
        await self._ensure_mode(client)
        # The per-user zset is keyed by the owner (tenant, user): the cap and
        # purge_user count a user inside its tenant.
        owner = entry.owner
        user = "0" if owner is None else "1" + owner
        ttl_ms = max(1, round((entry.expires_at - entry.last_used) * 1000))
        args: list[Any] = [
            repr(float(entry.last_used)),
            ttl_ms,
            *self._caps,
            entry.entry_id,
            entry.scope_key,
            user,
            repr(float(entry.last_used)),
            repr(float(entry.expires_at)),
            *encode_entry(entry, self.codec),
        ]
        gone = await self._do("put", self._script("PUT", args, client))
        ids = tuple(_text(i) for i in gone)
        if ids:
            self._deliver([Change(kind="delete", entry_ids=ids)])

    async def get_many(self, entry_ids: Sequence[str]) -> dict[str, Entry]:
        """The entries that exist among ``entry_ids`` (one round trip), verified.

        Raises:
            CorruptRow: an entry failed its checksum (or GCM tag): it was
                evicted; the lookup is a miss (a ``cache.error``).
        """
        if not entry_ids:
            return {}
        client = self._connected()
        found, corrupt = await self._do(
            "get", self._fetch_checked(client, list(entry_ids))
        )
        if corrupt:
            raise corrupt[0]
        self._touches.seen(found)
        return found

    async def touch(
        self,
        entry_id: str,
        *,
        last_used: float,
        hits: int,
        positive: int,
        negative: int,
    ) -> None:
        """Queue an LRU and counter update; a background task writes it.

        Counters become increments relative to what :meth:`get_many` returned, so
        concurrent hits on several workers add up instead of overwriting.
        """
        self._touches.add(
            entry_id,
            last_used=last_used,
            hits=hits,
            positive=positive,
            negative=negative,
        )

    async def flush(self) -> None:
        """Write the queued touches now (tests and shutdown call it).

        Raises:
            BackendUnavailable: Redis is unreachable (the touches are dropped).
        """
        await self._touches.flush()

    async def _write_touches(self, items: list[tuple[str, list[Any]]]) -> None:
        if self._cmd is None:
            return
        client = self._cmd
        for start in range(0, len(items), CHUNK):
            args: list[Any] = []
            for entry_id, (used, mode, h, p, n) in items[start : start + CHUNK]:
                args += [entry_id, repr(float(used)), mode, h, p, n]
            await self._do("touch", self._script("TOUCH", args, client))

    async def delete(self, entry_ids: Sequence[str]) -> int:
        """Delete by id; returns how many existed."""
        client = self._connected()
        ids = list(entry_ids)
        total = 0
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            total += int(
                await self._do("delete", self._script("DELETE", chunk, client))
            )
        return total

    async def delete_scope(self, scope_key: str) -> int:
        """Delete every entry of a scope; every worker drops the scope."""
        client = self._connected()
        return int(
            await self._do(
                "invalidate",
                self._script("DELETE_SCOPE", [scope_key], client),
            )
        )

    async def delete_user(
        self, user_id: str, tenant: str | None = None, *, all_tenants: bool = False
    ) -> int:
        """Delete every entry attributed to ``user_id`` of ``tenant`` (None: no
        tenant), in every scope; with ``all_tenants``, of every tenant (found by
        a SCAN of the namespace's per-user keys: linear in the keyspace)."""
        client = self._connected()
        owners = [owner_key(tenant, user_id) or user_id]
        if all_tenants:
            owners = [user_id]
            pattern = _glob(self.key("u:")) + "*" + OWNER_SEPARATOR + _glob(user_id)
            start = len(self.key("u:"))

            async def scan() -> list[str]:
                found = client.scan_iter(match=pattern, count=1000)
                return [_text(key)[start:] async for key in found]

            owners += await self._do("purge", scan())
        total = 0
        for owner in owners:
            total += int(
                await self._do("purge", self._script("DELETE_USER", [owner], client))
            )
        await self._do(  # the feedback log on the user's entries goes too
            "purge",
            _feedback.purge(self, client, user_id, tenant, all_tenants=all_tenants),
        )
        # Then the change stream is scrubbed of ``op scope`` records (older
        # workers published the scope key, and so the user id, in clear). Only
        # records published since the last purge are read (``P scrubbed`` marks
        # where it stopped), by bounded script calls. A worker that had not read a
        # deleted record yet sees a gap in ``seq`` and rebuilds from Redis.
        scrubbed = 0
        while True:  # bounded script calls: Redis never blocks long
            gone, read = await self._do(
                "purge", self._script("SCRUB", [SCRUB_BATCH], client)
            )
            scrubbed += int(gone)
            if int(read) < SCRUB_BATCH:
                break
        if scrubbed:
            _log.info("cache: scrubbed %d old scope records from the stream", scrubbed)
        return total

    async def clear(self) -> int:
        """Delete every entry of the namespace (and the feedback log)."""
        client = self._connected()
        await self._do("clear", _feedback.clear(self, client))
        return int(await self._do("clear", self._script("CLEAR", [], client)))

    async def add_feedback(self, record: FeedbackRecord) -> None:
        """Append one record to the feedback log (sealed like an entry)."""
        client = self._connected()
        await self._do("feedback", _feedback.add(self, client, record))

    async def feedback_records(
        self, user_id: str | None = None, tenant: str | None = None
    ) -> list[FeedbackRecord]:
        """The feedback log (of ``user_id`` of ``tenant`` when given), oldest
        first; altered rows and rows sealed under another key are skipped."""
        client = self._connected()
        return await self._do(
            "feedback", _feedback.records(self, client, user_id, tenant)
        )

    async def count(self) -> int:
        """Number of entries stored (natively expired ones count until swept)."""
        client = self._connected()
        return int(await self._do("count", client.hlen(self.key("w"))))

    async def scan(
        self, scope_key: str | None = None, *, batch: int = 1000
    ) -> AsyncIterator[list[Entry]]:
        """Every entry (of one scope, or all), in batches, to rebuild indexes.

        After a start with Redis unreachable, the first full scan is empty: the
        stream follower rebuilds once Redis answers.
        """
        if self._offline_start and scope_key is None:
            self._offline_start = False
            return
        client = self._connected()
        async for entries in self.scan_with(client, scope_key, batch=batch):
            yield entries

    async def scan_with(
        self, client: Redis, scope_key: str | None = None, *, batch: int = 1000
    ) -> AsyncIterator[list[Entry]]:
        """:meth:`scan` on a given client (the follower uses its own)."""
        cursor = 0
        seen: set[str] = set()
        while True:
            if scope_key is None:
                cursor, found = await self._do(
                    "scan",
                    client.hscan(self.key("w"), cursor, count=batch),
                )
                raw = list(found)
            else:
                cursor, members = await self._do(
                    "scan",
                    client.sscan(self.key("s:" + scope_key), cursor, count=batch),
                )
                raw = list(members)
            ids = [i for i in map(_text, raw) if i not in seen]
            seen.update(ids)
            if ids:
                entries = await self._do("scan", self.fetch(client, ids))
                if entries:
                    yield list(entries.values())
            if int(cursor) == 0:
                return

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Receive every change other workers make (and evictions of our puts)."""
        self._callbacks.append(callback)
        backlog, self._backlog = self._backlog, []
        for change in backlog:
            callback(change)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def _deliver(self, changes: list[Change]) -> None:
        if not self._callbacks:
            self._backlog.extend(changes)
            return
        for callback in list(self._callbacks):
            for change in changes:
                callback(change)


def _glob(text: str) -> str:
    """``text`` with Redis glob characters escaped (a literal in a MATCH)."""
    return "".join("\\" + c if c in "*?[]\\^-" else c for c in text)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _require_asyncio() -> None:
    import sniffio

    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = "none"
    if library != "asyncio":
        raise CacheError(
            f"the redis backend needs asyncio (redis.asyncio), not {library}: run "
            "the pipeline with asyncio.run(...) or anyio.run(..., backend='asyncio')"
        )
