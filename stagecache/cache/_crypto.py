"""Keys of the encryption at rest: loading, fingerprints, and the namespace check.

The current key comes from ``STAGECACHE_CACHE_KEY``: 32 random bytes,
base64-encoded (standard or URL-safe alphabet, padding optional), e.g. the output
of ``python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"``.
``encryption_old_keys`` names more environment variables holding keys that are
only read with (an old key during a rotation, or a new one being rolled out).

Each key has a **fingerprint**: ``HMAC-SHA256(key, "stagecache key fingerprint
v1")``, 32 hex digits, which says which key a namespace is written with without
revealing it. A namespace (a Redis namespace or a SQLite file) records its mode:
``plain``, ``aes256gcm:<fingerprint>`` or ``ephemeral``. :func:`check_mode`
refuses a worker whose configuration does not match (another key, encryption
off over an encrypted namespace, encryption on over a plaintext one) with a
:class:`~stagecache.errors.ConfigError` that says what to do; only ``stagecache
reencrypt`` changes the recorded mode.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from stagecache.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEY_ENV",
    "PLAIN",
    "Cipher",
    "check_mode",
    "load_ciphers",
    "mode_of",
]

KEY_ENV = "STAGECACHE_CACHE_KEY"
PLAIN = "plain"
EPHEMERAL = "ephemeral"
_AES = "aes256gcm:"
_FIELD = "cache.backend.encrypt_values"
_OLD_FIELD = "cache.backend.encryption_old_keys"
_LABEL = b"stagecache key fingerprint v1"
#: First byte of a sealed value: the format of what follows.
SEAL_VERSION = b"\x02"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_log = logging.getLogger("stagecache.cache")
REENCRYPT = "stagecache reencrypt --config FILE"


class Cipher:
    """AES-256-GCM under one key, with the key's fingerprint.

    A sealed value is ``0x02 || key id (4 bytes) || nonce (12) || ciphertext+tag``:
    the key id (the fingerprint's first 4 bytes) tells a reader which key wrote it.

    Args:
        key: 32 bytes.
    """

    __slots__ = ("_aead", "fingerprint", "key_id")

    def __init__(self, key: bytes) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                "encryption at rest needs the cryptography package: pip install "
                "'stagecache[encryption]'",
                field=_FIELD,
            ) from exc
        self._aead: AESGCM = AESGCM(key)
        self.fingerprint = hmac.new(key, _LABEL, hashlib.sha256).hexdigest()[:32]
        self.key_id = bytes.fromhex(self.fingerprint[:8])

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        """``plain`` encrypted and bound to ``aad`` (a fresh random nonce)."""
        nonce = os.urandom(12)
        return (
            SEAL_VERSION + self.key_id + nonce + self._aead.encrypt(nonce, plain, aad)
        )

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """The plaintext of :meth:`seal`'s output.

        Raises:
            cryptography.exceptions.InvalidTag: altered, or another key or aad.
        """
        return self._aead.decrypt(sealed[5:17], sealed[17:], aad)

    def open_legacy(self, sealed: bytes, aad: bytes) -> bytes:
        """A value sealed before key ids existed: ``nonce || ciphertext+tag``."""
        return self._aead.decrypt(sealed[:12], sealed[12:], aad)


def decode_key(raw: str, name: str, field: str) -> bytes:
    """The 32 bytes of a base64 key read from variable ``name``.

    Raises:
        ConfigError: not base64, or not 32 bytes.
    """
    try:
        padded = raw + "=" * (-len(raw) % 4)
        alphabet = b"-_" if ("-" in raw or "_" in raw) else None
        key = base64.b64decode(padded, altchars=alphabet, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(
            f"{name} is not valid base64 ({exc}); it must encode 32 random bytes",
            field=field,
        ) from exc
    if len(key) != 32:
        raise ConfigError(
            f"{name} decodes to {len(key)} bytes; AES-256-GCM needs exactly 32",
            field=field,
        )
    return key


def check_old_key_names(names: Sequence[str]) -> str | None:
    """Why ``encryption_old_keys`` is unusable, or None."""
    for name in names:
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            if isinstance(name, str) and len(name) >= 40:
                return (
                    "holds what looks like a key: keys never go in the config "
                    "file; put each old key in an environment variable and list "
                    'the variable names here, e.g. ["STAGECACHE_CACHE_KEY_2025"]'
                )
            return (
                f"{name!r} is not an environment variable name; list the names "
                'of variables that hold old keys, e.g. ["STAGECACHE_CACHE_KEY_2025"]'
            )
    return None


def load_ciphers(
    *,
    encrypt: bool,
    ephemeral: bool,
    old_keys: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> tuple[Cipher | None, tuple[Cipher, ...], bool]:
    """(writer, readers, ephemeral) from the environment.

    Args:
        encrypt: ``encrypt_values``; off gives no writer (old keys still read).
        ephemeral: with no key set, generate a random one (a warning: values
            written now cannot be read by other workers or after a restart).
        old_keys: names of variables holding keys that are only read with.
        env: the environment (default ``os.environ``).

    Raises:
        ConfigError: a key that is missing (and ``ephemeral`` is off), unset,
            or malformed.
    """
    env = os.environ if env is None else env
    readers: list[Cipher] = []
    for name in old_keys:
        raw_old = env.get(name, "").strip()
        if not raw_old:
            raise ConfigError(
                f"the environment variable {name} is not set (it is listed as an "
                "old key); set it or remove it from the list",
                field=_OLD_FIELD,
            )
        readers.append(Cipher(decode_key(raw_old, name, _OLD_FIELD)))
    if not encrypt:
        return None, tuple(readers), False
    raw = env.get(KEY_ENV, "").strip()
    if not raw:
        if ephemeral:
            _log.warning(
                "cache: %s is not set; encrypting with an ephemeral key: values "
                "written now cannot be read by other workers or after a restart",
                KEY_ENV,
            )
            return Cipher(os.urandom(32)), tuple(readers), True
        raise ConfigError(
            f"encrypt_values = true needs the environment variable {KEY_ENV}: 32 "
            'random bytes, base64-encoded (python -c "import base64, os; '
            'print(base64.b64encode(os.urandom(32)).decode())"), the same on every '
            "worker; or set ephemeral_key = true for a throwaway key",
            field=_FIELD,
        )
    writer = Cipher(decode_key(raw, KEY_ENV, _FIELD))
    others = tuple(c for c in readers if c.fingerprint != writer.fingerprint)
    return writer, others, False


def mode_of(writer: Cipher | None, ephemeral: bool) -> str:
    """The mode a namespace records for this configuration."""
    if writer is None:
        return PLAIN
    return EPHEMERAL if ephemeral else _AES + writer.fingerprint


def check_mode(
    recorded: str,
    writer: Cipher | None,
    readers: Sequence[Cipher],
    *,
    ephemeral: bool,
    where: str,
) -> None:
    """Refuse a worker whose keys do not match the namespace's recorded mode.

    A worker starts when the recorded mode is its own, or (rotation) when the
    namespace's key is one of its ``encryption_old_keys``.

    Raises:
        ConfigError: what is recorded, what this worker has, and what to do.
    """
    mine = mode_of(writer, ephemeral)
    if recorded == mine:
        return
    fingerprints = {c.fingerprint for c in readers}
    if (
        writer is not None
        and not ephemeral
        and recorded.startswith(_AES)
        and recorded[len(_AES) :] in fingerprints
    ):
        return  # a rotation: the namespace's key is one of our old keys
    if recorded == PLAIN:
        raise ConfigError(
            f"{where} holds plaintext entries; a worker with encrypt_values = true "
            "will not start on it (it would keep serving plaintext). Encrypt it "
            f"with `{REENCRYPT}` (this config), or use a new namespace or path",
            field=_FIELD,
        )
    if recorded == EPHEMERAL or ephemeral:
        raise ConfigError(
            f"{where} is recorded as {_describe(recorded)} and this worker uses "
            f"{_describe(mine)}: an ephemeral key only suits a namespace of its "
            f"own; use a new namespace or path, or run `{REENCRYPT}` to convert",
            field=_FIELD,
        )
    if not recorded.startswith(_AES):
        raise ConfigError(
            f"{where} records an unknown encryption mode {recorded[:40]!r}: it was "
            "written by a newer stagecache or another program",
            field=_FIELD,
        )
    if writer is None:
        raise ConfigError(
            f"{where} is encrypted ({_describe(recorded)}) but encrypt_values is "
            f"off: set encrypt_values = true and {KEY_ENV} to that key; to decrypt "
            f"it instead, name the key's variable in encryption_old_keys and run "
            f"`{REENCRYPT}`",
            field=_FIELD,
        )
    known = ", ".join(
        sorted({writer.fingerprint[:12], *(f[:12] for f in fingerprints)})
    )
    raise ConfigError(
        f"{where} is encrypted under another key ({_describe(recorded)}; this "
        f"worker's keys: {known}). Set {KEY_ENV} to the namespace's key; to rotate "
        "keys, keep the old key readable (its variable named in "
        f"encryption_old_keys), then run `{REENCRYPT}`",
        field=_FIELD,
    )


def _describe(mode: str) -> str:
    if mode.startswith(_AES):
        return f"key fingerprint {mode[len(_AES) : len(_AES) + 12]}"
    return mode
