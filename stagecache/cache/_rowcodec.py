"""The row codec shared by the SQLite and Redis backends: checksums and sealing.

An entry has **clear fields**, which the backends need in the open (id, scope key,
scope mode, user id, key parts, created/expires times), **values** (query, answer,
metadata, vector) and **counters** (last use, hits, feedback; rewritten in place
by every hit, so not covered). A stored row is one of:

- **plain**: the values in the open plus ``checksum`` = BLAKE2b-128 of the format
  number, the clear fields and the values. A bit flip anywhere but in the
  counters is a mismatch.
- **sealed**: the values in one AES-256-GCM blob (``_crypto.Cipher``), the clear
  fields as associated data; the GCM tag is the checksum (a flip in the blob or in
  a clear field fails it), and the blob cannot be moved to another entry. The
  vector is sealed too (an embedding can be partly inverted to the text): it is
  decrypted on load, when the indexes are rebuilt.

:meth:`RowCodec.decode` raises :class:`CorruptRow` on a mismatch (the backend
evicts the row), :class:`ForeignKey` for a row sealed under a key this worker
does not hold (skipped, kept), and :class:`LegacyRow` for a row written before
checksums (migrated by the backend at open, or by ``stagecache reencrypt``).
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import msgspec

from stagecache.cache._backend import Entry
from stagecache.cache._crypto import (
    SEAL_VERSION,
    Cipher,
    check_mode,
    load_ciphers,
    mode_of,
)
from stagecache.errors import CacheError

__all__ = ["CorruptRow", "ForeignKey", "LegacyRow", "RowCodec", "Stored"]

FORMAT = 2
_Values = tuple[str, str, dict[str, str], bytes]
_values_decoder = msgspec.msgpack.Decoder(_Values)
_meta_decoder = msgspec.json.Decoder(dict[str, str])


class CorruptRow(CacheError):
    """A row whose checksum or GCM tag does not match: altered since written."""


class ForeignKey(CacheError):
    """A row sealed under a key this worker does not hold."""


class LegacyRow(CorruptRow):
    """A row written before checksums (stagecache < format 2): unverifiable, so
    treated as altered outside the migrations."""


class Stored(NamedTuple):
    """The value part of a row as a backend stores it.

    Plain rows fill ``query``, ``answer``, ``metadata`` (JSON text) and
    ``vector``, plus ``checksum``; sealed rows leave them empty and fill
    ``sealed``. Values read back are untrusted (any type) until decoded.
    """

    query: Any
    answer: Any
    metadata: Any
    vector: Any
    sealed: Any = None
    checksum: Any = None


def _bound(entry: Entry) -> bytes:
    """The clear fields, canonically encoded (checksum input and GCM aad)."""
    p = entry.parts
    fields = (
        entry.entry_id,
        entry.scope_key,
        entry.scope_mode,
        p.model_id,
        p.instruction_hash,
        p.context_fingerprint,
    )
    if not all(isinstance(f, str) for f in fields) or not (
        entry.user_id is None or isinstance(entry.user_id, str)
    ):
        raise CorruptRow(f"entry {entry.entry_id!r}: a key field has the wrong type")
    times = (entry.created_at, entry.expires_at)
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
        raise CorruptRow(f"entry {entry.entry_id!r}: a time field has the wrong type")
    return msgspec.msgpack.encode(
        (FORMAT, *fields, entry.user_id, float(times[0]), float(times[1]))
    )


def _checksum(bound: bytes, query: str, answer: str, meta: str, vector: bytes) -> bytes:
    body = msgspec.msgpack.encode((query, answer, meta, vector))
    return hashlib.blake2b(bound + body, digest_size=16).digest()


class RowCodec:
    """Encodes and verifies rows for one worker's keys.

    Args:
        writer: the cipher new rows are sealed with (None: plain rows).
        readers: more ciphers rows are opened with (old keys).
        ephemeral: ``writer`` is a throwaway key.
    """

    __slots__ = ("_by_id", "ephemeral", "readers", "writer")

    def __init__(
        self,
        writer: Cipher | None = None,
        readers: tuple[Cipher, ...] = (),
        *,
        ephemeral: bool = False,
    ) -> None:
        self.writer = writer
        self.readers = readers
        self.ephemeral = ephemeral
        ring = ([writer] if writer is not None else []) + list(readers)
        self._by_id = {c.key_id: c for c in ring}

    @classmethod
    def from_config(
        cls, *, encrypt: bool, ephemeral: bool, old_keys: tuple[str, ...] = ()
    ) -> RowCodec:
        """The codec of ``encrypt_values`` / ``ephemeral_key`` / old keys.

        Raises:
            ConfigError: a missing or malformed key.
        """
        writer, readers, eph = load_ciphers(
            encrypt=encrypt, ephemeral=ephemeral, old_keys=old_keys
        )
        return cls(writer, readers, ephemeral=eph)

    @property
    def encrypted(self) -> bool:
        """Whether new rows are sealed."""
        return self.writer is not None

    @property
    def mode(self) -> str:
        """What the namespace records: ``plain``, ``aes256gcm:<fp>``, ``ephemeral``."""
        return mode_of(self.writer, self.ephemeral)

    def check(self, recorded: str, where: str) -> None:
        """Refuse to work on a namespace recorded with another mode or key.

        Raises:
            ConfigError: see :func:`stagecache.cache._crypto.check_mode`.
        """
        check_mode(
            recorded, self.writer, self.readers, ephemeral=self.ephemeral, where=where
        )

    def encode(self, entry: Entry) -> Stored:
        """The stored form of ``entry``'s values (sealed or checksummed)."""
        bound = _bound(entry)
        if self.writer is not None:
            plain = msgspec.msgpack.encode(
                (entry.query, entry.answer, entry.metadata, entry.vector)
            )
            return Stored("", "", "{}", b"", self.writer.seal(plain, bound), None)
        meta = msgspec.json.encode(entry.metadata).decode()
        digest = _checksum(bound, entry.query, entry.answer, meta, entry.vector)
        return Stored(entry.query, entry.answer, meta, entry.vector, None, digest)

    def decode(self, shell: Entry, stored: Stored) -> Entry:
        """``shell`` (clear fields and counters) with its verified values.

        Raises:
            CorruptRow: the checksum or tag does not match, a field has the wrong
                type, or the row's mode is not the namespace's (a plaintext row
                under encryption, a sealed row without it).
            ForeignKey: sealed under a key this worker does not hold.
            LegacyRow: no checksum and not sealed (written before format 2).
        """
        bound = _bound(shell)
        sealed = stored.sealed
        if sealed is not None:
            if self.writer is None:
                raise CorruptRow(
                    f"entry {shell.entry_id!r} is sealed but this namespace is plain"
                )
            return self._open(shell, bound, sealed)
        if stored.checksum is None:
            raise LegacyRow(f"entry {shell.entry_id!r} has no checksum")
        if self.writer is not None:
            raise CorruptRow(
                f"entry {shell.entry_id!r} is plaintext in an encrypted namespace"
            )
        return self._verify(shell, bound, stored)

    def decode_any(self, shell: Entry, stored: Stored, legacy_sealed: Any) -> Entry:
        """Like :meth:`decode` in any mode, legacy rows included (migrations).

        Args:
            shell: the clear fields.
            stored: the value part.
            legacy_sealed: a value sealed by stagecache < format 2 (Redis ``z``:
                ``nonce || ciphertext``, entry id and scope key as aad), or None.

        Raises:
            CorruptRow: unreadable with any key, or altered.
            ForeignKey: sealed under a key this worker does not hold.
        """
        if stored.sealed is not None:
            return self._open(shell, _bound(shell), stored.sealed)
        if legacy_sealed is not None:
            return self._open_legacy(shell, legacy_sealed)
        if stored.checksum is not None:
            return self._verify(shell, _bound(shell), stored)
        try:
            query, answer, vector = stored.query, stored.answer, stored.vector
            if not (isinstance(query, str) and isinstance(answer, str)):
                raise TypeError("query and answer must be text")
            metadata = _meta_decoder.decode(_text(stored.metadata))
            return msgspec.structs.replace(
                shell, query=query, answer=answer, metadata=metadata,
                vector=bytes(vector),
            )  # fmt: skip
        except (TypeError, ValueError, msgspec.DecodeError) as exc:
            raise CorruptRow(f"entry {shell.entry_id!r}: malformed ({exc})") from exc

    def _verify(self, shell: Entry, bound: bytes, stored: Stored) -> Entry:
        query, answer, meta, vector = stored[:4]
        try:
            meta = _text(meta)
            if not (
                isinstance(query, str)
                and isinstance(answer, str)
                and isinstance(vector, (bytes, bytearray, memoryview))
                and isinstance(stored.checksum, (bytes, bytearray, memoryview))
            ):
                raise TypeError("a value has the wrong type")
            vector = bytes(vector)
            if _checksum(bound, query, answer, meta, vector) != bytes(stored.checksum):
                raise ValueError("checksum mismatch")
            metadata = _meta_decoder.decode(meta)
        except (TypeError, ValueError, msgspec.DecodeError) as exc:
            raise CorruptRow(
                f"entry {shell.entry_id!r} failed its integrity check ({exc})"
            ) from exc
        return msgspec.structs.replace(
            shell, query=query, answer=answer, metadata=metadata, vector=vector
        )

    def _open(self, shell: Entry, bound: bytes, sealed: Any) -> Entry:
        from cryptography.exceptions import InvalidTag

        if not isinstance(sealed, (bytes, bytearray, memoryview)):
            raise CorruptRow(f"entry {shell.entry_id!r}: the sealed value is not bytes")
        blob = bytes(sealed)
        if len(blob) < 33 or blob[:1] != SEAL_VERSION:
            raise CorruptRow(f"entry {shell.entry_id!r}: not a sealed value")
        cipher = self._by_id.get(blob[1:5])
        if cipher is None:
            raise ForeignKey(
                f"entry {shell.entry_id!r} is sealed under a key this worker does "
                f"not hold (key id {blob[1:5].hex()})"
            )
        try:
            plain = cipher.open(blob, bound)
            query, answer, metadata, vector = _values_decoder.decode(plain)
        except (InvalidTag, msgspec.DecodeError) as exc:
            raise CorruptRow(
                f"entry {shell.entry_id!r} failed its integrity check (GCM tag)"
            ) from exc
        return msgspec.structs.replace(
            shell, query=query, answer=answer, metadata=metadata, vector=vector
        )

    def _open_legacy(self, shell: Entry, sealed: Any) -> Entry:
        from cryptography.exceptions import InvalidTag

        aad = f"{shell.entry_id}\x00{shell.scope_key}".encode()
        blob = bytes(sealed)
        legacy = msgspec.msgpack.Decoder(tuple[str, str, dict[str, str]])
        for cipher in self._by_id.values():
            try:
                query, answer, metadata = legacy.decode(cipher.open_legacy(blob, aad))
            except (InvalidTag, ValueError, msgspec.DecodeError):
                continue
            return msgspec.structs.replace(
                shell, query=query, answer=answer, metadata=metadata
            )
        raise ForeignKey(
            f"entry {shell.entry_id!r} (sealed before format 2) opens with none of "
            "this worker's keys"
        )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode()
    raise TypeError("metadata must be text")
