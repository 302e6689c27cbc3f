"""How an :class:`Entry` is laid out in a Redis hash, and value encryption.

One hash per entry, short field names (they are repeated in every hash)::

    sk scope key      sm scope mode    u  user id (absent: none)
    t  tenant (absent: none)
    mi model id       ih instruction   cf context fingerprint
    v  float32 vector (plain bytes)
    q  query          a  answer        m  metadata (JSON)      (plain mode)
    z  AES-GCM seal of [query, answer, metadata]                (encrypted mode)
    c  created_at     x  expires_at    l  last_used
    h  hits           p  positive      n  negative

With ``encrypt_values`` the query, the answer and the metadata are sealed together
with AES-256-GCM: ``z = nonce (12 bytes) || ciphertext+tag``, the entry id and scope
key as associated data (a sealed value cannot be moved to another entry). Vectors,
key parts, scope keys and user ids stay plain: Redis needs them for the indexes,
caps and purges, and every worker needs the vectors to rebuild its indexes.

The key comes from ``STAGECACHE_CACHE_KEY``: 32 random bytes, base64-encoded
(standard or URL-safe alphabet, padding optional), e.g. the output of
``python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from typing import TYPE_CHECKING

import msgspec

from stagecache.cache._backend import Entry
from stagecache.cache._settings import KeyParts
from stagecache.errors import CacheError, ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_ENV", "Cipher", "decode_entry", "encode_entry", "load_cipher"]

KEY_ENV = "STAGECACHE_CACHE_KEY"
_FIELD = "cache.backend.encrypt_values"
_log = logging.getLogger("stagecache.cache")
_Sealed = tuple[str, str, dict[str, str]]


class Undecryptable(CacheError):
    """A sealed value that this worker's key does not open."""


class Cipher:
    """AES-256-GCM over the sensitive fields of an entry.

    Args:
        key: 32 bytes.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead: AESGCM = AESGCM(key)

    def seal(self, entry: Entry) -> bytes:
        """``nonce || AES-GCM(query, answer, metadata)`` bound to the entry."""
        nonce = os.urandom(12)
        plain = msgspec.msgpack.encode((entry.query, entry.answer, entry.metadata))
        return nonce + self._aead.encrypt(nonce, plain, _aad(entry.entry_id, entry))

    def open(self, entry_id: str, scope_key: str, sealed: bytes) -> _Sealed:
        """The (query, answer, metadata) sealed by :meth:`seal`.

        Raises:
            Undecryptable: wrong key, or the value was tampered with.
        """
        from cryptography.exceptions import InvalidTag

        aad = f"{entry_id}\x00{scope_key}".encode()
        try:
            plain = self._aead.decrypt(sealed[:12], sealed[12:], aad)
            sealed_value: _Sealed = msgspec.msgpack.decode(plain, type=_Sealed)
            return sealed_value
        except (InvalidTag, ValueError, msgspec.DecodeError) as exc:
            raise Undecryptable(
                f"entry {entry_id!r}: the sealed value does not open with this "
                f"worker's {KEY_ENV} (another key wrote it, or it was altered)"
            ) from exc


def _aad(entry_id: str, entry: Entry) -> bytes:
    return f"{entry_id}\x00{entry.scope_key}".encode()


def load_cipher(*, ephemeral: bool, env: dict[str, str] | None = None) -> Cipher:
    """The cipher keyed by ``STAGECACHE_CACHE_KEY``.

    Args:
        ephemeral: with no key set, generate a random one (logged as a warning:
            values become unreadable to other workers and after a restart).
        env: the environment (default ``os.environ``).

    Raises:
        ConfigError: the key is missing (and ``ephemeral`` is off) or malformed.
    """
    env = dict(os.environ) if env is None else env
    raw = env.get(KEY_ENV, "").strip()
    if not raw:
        if ephemeral:
            _log.warning(
                "cache: %s is not set; encrypting with an ephemeral key: values "
                "written now cannot be read by other workers or after a restart",
                KEY_ENV,
            )
            return Cipher(os.urandom(32))
        raise ConfigError(
            f"encrypt_values = true needs the environment variable {KEY_ENV}: 32 "
            'random bytes, base64-encoded (python -c "import base64, os; '
            'print(base64.b64encode(os.urandom(32)).decode())"), the same on every '
            "worker; or set ephemeral_key = true for a throwaway key",
            field=_FIELD,
        )
    try:
        padded = raw + "=" * (-len(raw) % 4)
        alphabet = b"-_" if ("-" in raw or "_" in raw) else None
        key = base64.b64decode(padded, altchars=alphabet, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(
            f"{KEY_ENV} is not valid base64 ({exc}); it must encode 32 random bytes",
            field=_FIELD,
        ) from exc
    if len(key) != 32:
        raise ConfigError(
            f"{KEY_ENV} decodes to {len(key)} bytes; AES-256-GCM needs exactly 32",
            field=_FIELD,
        )
    return Cipher(key)


def encode_entry(entry: Entry, cipher: Cipher | None) -> list[bytes | str]:
    """The hash fields of ``entry`` as a flat [field, value, ...] list."""
    p = entry.parts
    out: list[bytes | str] = [
        "sk", entry.scope_key,
        "sm", entry.scope_mode,
        "mi", p.model_id,
        "ih", p.instruction_hash,
        "cf", p.context_fingerprint,
        "v", entry.vector,
        "c", repr(float(entry.created_at)),
        "x", repr(float(entry.expires_at)),
        "l", repr(float(entry.last_used)),
        "h", str(int(entry.hits)),
        "p", str(int(entry.positive)),
        "n", str(int(entry.negative)),
    ]  # fmt: skip
    if entry.user_id is not None:
        out += ["u", entry.user_id]
    if entry.tenant is not None:
        out += ["t", entry.tenant]
    if cipher is not None:
        out += ["z", cipher.seal(entry)]
    else:
        out += [
            "q", entry.query,
            "a", entry.answer,
            "m", msgspec.json.encode(entry.metadata),
        ]  # fmt: skip
    return out


def decode_entry(
    entry_id: str, fields: dict[bytes, bytes], cipher: Cipher | None
) -> Entry | None:
    """The entry stored as ``fields`` (an HGETALL reply); None when absent.

    Raises:
        Undecryptable: a sealed value this cipher cannot open (or no cipher).
        CacheError: a hash that is not a stagecache entry.
    """
    if not fields:
        return None
    try:
        scope_key = fields[b"sk"].decode()
        sealed = fields.get(b"z")
        if sealed is not None:
            if cipher is None:
                raise Undecryptable(
                    f"entry {entry_id!r} is encrypted but encrypt_values is off on "
                    f"this worker: set encrypt_values = true and {KEY_ENV}"
                )
            query, answer, metadata = cipher.open(entry_id, scope_key, sealed)
        else:
            query = fields[b"q"].decode()
            answer = fields[b"a"].decode()
            metadata = msgspec.json.decode(fields[b"m"], type=dict[str, str])
        user = fields.get(b"u")
        tenant = fields.get(b"t")
        return Entry(
            entry_id=entry_id,
            scope_key=scope_key,
            scope_mode=fields[b"sm"].decode(),
            user_id=user.decode() if user is not None else None,
            tenant=tenant.decode() if tenant is not None else None,
            query=query,
            answer=answer,
            parts=KeyParts(
                fields[b"mi"].decode(), fields[b"ih"].decode(), fields[b"cf"].decode()
            ),
            vector=bytes(fields[b"v"]),
            metadata=metadata,
            created_at=float(fields[b"c"]),
            expires_at=float(fields[b"x"]),
            last_used=float(fields[b"l"]),
            hits=int(fields[b"h"]),
            positive=int(fields[b"p"]),
            negative=int(fields[b"n"]),
        )
    except Undecryptable:
        raise
    except (KeyError, ValueError, UnicodeDecodeError, msgspec.DecodeError) as exc:
        raise CacheError(
            f"entry {entry_id!r} in Redis is malformed ({exc!r}): another program "
            "writes under this namespace; use another backend.redis_namespace"
        ) from exc
