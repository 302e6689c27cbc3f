"""How an :class:`Entry` is laid out in a Redis hash.

One hash per entry, short field names (they are repeated in every hash)::

    sk scope key      sm scope mode    u  user id (absent: none)
    t  tenant (absent: none)
    mi model id       ih instruction   cf context fingerprint
    c  created_at     x  expires_at    l  last_used
    h  hits           p  positive      n  negative
    q  query  a answer  m metadata (JSON)  v float32 vector  k checksum  (plain)
    Z  AES-GCM seal of [query, answer, metadata, vector]              (encrypted)

The values are written by the row codec shared with SQLite
(:mod:`stagecache.cache._rowcodec`): a plain row carries a BLAKE2b checksum over
its values and clear fields; a sealed row (``encrypt_values``) is authenticated
by its GCM tag, with the clear fields as associated data. Rows written before
format 2 (no ``k``; or ``z``, sealed without the vector) are read only by the
migrations (``decode_any``).
"""

from __future__ import annotations

from typing import Any

from stagecache.cache._backend import Entry
from stagecache.cache._crypto import KEY_ENV
from stagecache.cache._rowcodec import CorruptRow, RowCodec, Stored
from stagecache.cache._settings import KeyParts

__all__ = ["KEY_ENV", "decode_any", "decode_entry", "encode_entry", "value_fields"]

#: Every field that holds a value (removed before a row is rewritten).
VALUE_FIELDS = ("q", "a", "m", "v", "k", "z", "Z")


def value_fields(stored: Stored) -> list[bytes | str]:
    """The [field, value, ...] list of the value part of a row."""
    if stored.sealed is not None:
        return ["Z", stored.sealed]
    return [
        "q", stored.query, "a", stored.answer, "m", stored.metadata,
        "v", stored.vector, "k", stored.checksum,
    ]  # fmt: skip


def encode_entry(entry: Entry, codec: RowCodec) -> list[bytes | str]:
    """The hash fields of ``entry`` as a flat [field, value, ...] list."""
    p = entry.parts
    out: list[bytes | str] = [
        "sk", entry.scope_key,
        "sm", entry.scope_mode,
        "mi", p.model_id,
        "ih", p.instruction_hash,
        "cf", p.context_fingerprint,
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
    return out + value_fields(codec.encode(entry))


def _split(entry_id: str, fields: dict[bytes, bytes]) -> tuple[Entry, Stored]:
    """The clear fields (an Entry without values) and the value part."""
    try:
        user = fields.get(b"u")
        tenant = fields.get(b"t")
        shell = Entry(
            entry_id=entry_id,
            scope_key=fields[b"sk"].decode(),
            scope_mode=fields[b"sm"].decode(),
            user_id=user.decode() if user is not None else None,
            tenant=tenant.decode() if tenant is not None else None,
            query="",
            answer="",
            parts=KeyParts(
                fields[b"mi"].decode(), fields[b"ih"].decode(), fields[b"cf"].decode()
            ),
            vector=bytes(fields.get(b"v", b"")),
            created_at=float(fields[b"c"]),
            expires_at=float(fields[b"x"]),
            last_used=float(fields[b"l"]),
            hits=int(fields[b"h"]),
            positive=int(fields[b"p"]),
            negative=int(fields[b"n"]),
        )
        stored = Stored(
            _str(fields.get(b"q")),
            _str(fields.get(b"a")),
            _str(fields.get(b"m")),
            fields.get(b"v"),
            fields.get(b"Z"),
            fields.get(b"k"),
        )
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise CorruptRow(
            f"entry {entry_id!r} in Redis is malformed ({exc!r}): altered, or "
            "another program writes under this namespace"
        ) from exc
    return shell, stored


def decode_entry(
    entry_id: str, fields: dict[bytes, bytes], codec: RowCodec
) -> Entry | None:
    """The verified entry stored as ``fields`` (an HGETALL reply); None if absent.

    Raises:
        CorruptRow: altered or malformed (a legacy row too: run the upgrade).
        ForeignKey: sealed under a key this worker does not hold.
    """
    if not fields:
        return None
    shell, stored = _split(entry_id, fields)
    if b"z" in fields:
        raise CorruptRow(f"entry {entry_id!r} was sealed by stagecache < format 2")
    return codec.decode(shell, stored)


def decode_any(entry_id: str, fields: dict[bytes, bytes], codec: RowCodec) -> Entry:
    """The entry of ``fields`` in any mode or format (migrations).

    Raises:
        CorruptRow: altered, malformed or unreadable.
        ForeignKey: sealed under a key this worker does not hold.
    """
    shell, stored = _split(entry_id, fields)
    return codec.decode_any(shell, stored, fields.get(b"z"))


def is_sealed(fields: dict[bytes, Any]) -> bool:
    """Whether a row is sealed (in any format)."""
    return b"Z" in fields or b"z" in fields


def _str(value: bytes | None) -> str | None:
    return None if value is None else value.decode()
