"""The keystore's cryptography: the header, the passphrase KDF, the wrapped data key, sealed
records and blinded lookup keys.

* A random 32-byte data key (DEK) is wrapped with XChaCha20-Poly1305 under a key derived from
  the passphrase with Argon2id; the header (magic, version, KDF parameters, salt) is the wrap's
  associated data, so any edit of it makes the passphrase fail.  Changing the passphrase rewraps
  the DEK only.
* From the DEK, HKDF derives the record key, the blinding key and the generation key.
* The commit counter in the database (the ``generation`` row) is the counter and its
  HMAC-SHA-256 under the generation key, labelled apart from the MAC in the generation file
  beside the database (so that file's content is no valid row).  The counter is not secret (the
  file beside the database shows it too); a MAC costs a third of a seal on every commit.  Rows
  written by the first version (a sealed record) are still read.
* A record is sealed with XChaCha20-Poly1305 under a fresh random 24-byte nonce; its associated
  data is the blinded lookup key, which is an HMAC of (table, logical key).  A record copied to
  another row or table therefore fails authentication.  The plaintext carries the table and the
  logical key, so listing a table needs no clear-text index.
"""

from __future__ import annotations

import hmac
import importlib
import struct
from dataclasses import dataclass
from typing import Any, Final

import nacl.bindings as _na
import nacl.exceptions
import nacl.pwhash

from e2ee.errors import UsageError
from e2ee.primitives import hkdf_sha256

from .errors import (
    CorruptRecord,
    KeystoreCorrupt,
    KeystoreDowngrade,
    UnsupportedKeystoreVersion,
    WrongPassphrase,
)

__all__ = ["KdfParams", "Header", "Keys", "wrap_dek", "unwrap_dek", "derive_keys"]

MAGIC: Final = b"E2EEKS"
VERSION: Final = 1
_KDF_ARGON2ID: Final = 1
_HEADER = struct.Struct(">6sBBIIB16s")  # magic, version, kdf, t, m (KiB), p, salt
_NONCE: Final = 24
_RECORD_V1: Final = 1
_TAG: Final = 16  #: the Poly1305 tag of XChaCha20-Poly1305
#: PyNaCl's cffi module: libsodium's functions without PyNaCl's per-call checks (no type stubs)
_sodium: Any = importlib.import_module("nacl._sodium")
_ffi, _lib = _sodium.ffi, _sodium.lib
_RECORD_AD: Final = b"e2ee-keystore record"
_GENERATION_ROW_V2: Final = 2

#: The floor below which a header is refused (issue: at least 19 MiB and 2 passes; the OWASP
#: minimum for Argon2id).
MIN_MEMORY_KIB: Final = 19 * 1024
MIN_PASSES: Final = 2
#: The ceiling above which a header is refused before any derivation (``KeystoreCorrupt``): a
#: one-byte edit of the header must not make opening run for minutes or exhaust memory.  1 GiB
#: is libsodium's "sensitive" level; 10 passes of it take seconds, not minutes.
MAX_MEMORY_KIB: Final = 1024 * 1024
MAX_PASSES: Final = 10


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id parameters (PyNaCl runs it with one lane)."""

    passes: int = 3
    memory_kib: int = 64 * 1024

    def check(self) -> None:
        if self.memory_kib > MAX_MEMORY_KIB or self.passes > MAX_PASSES:
            raise UsageError(
                f"key derivation above the ceiling ({self.memory_kib} KiB, {self.passes} passes;"
                f" at most {MAX_MEMORY_KIB} KiB and {MAX_PASSES} passes)"
            )
        if self.memory_kib < MIN_MEMORY_KIB or self.passes < MIN_PASSES:
            raise KeystoreDowngrade(
                f"key derivation below the floor ({self.memory_kib} KiB, {self.passes} passes;"
                f" at least {MIN_MEMORY_KIB} KiB and {MIN_PASSES} passes)"
            )

    @classmethod
    def floor(cls) -> KdfParams:
        """The cheapest parameters allowed (tests, slow machines)."""
        return cls(MIN_PASSES, MIN_MEMORY_KIB)


@dataclass(frozen=True, slots=True)
class Header:
    kdf: KdfParams
    salt: bytes

    def to_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, _KDF_ARGON2ID, self.kdf.passes, self.kdf.memory_kib, 1, self.salt)

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        try:
            magic, version, kdf, t, m, p, salt = _HEADER.unpack(data)
        except struct.error:
            raise KeystoreCorrupt("keystore header is damaged") from None
        if magic != MAGIC:
            raise KeystoreCorrupt("not an e2ee keystore")
        if version != VERSION or kdf != _KDF_ARGON2ID or p != 1:
            raise UnsupportedKeystoreVersion(f"keystore format {version} (kdf {kdf}, lanes {p}) is not supported")
        if t > MAX_PASSES or m > MAX_MEMORY_KIB:  # refused before deriving anything
            raise KeystoreCorrupt(
                f"keystore header asks for {m} KiB and {t} passes (at most {MAX_MEMORY_KIB} KiB and {MAX_PASSES})"
            )
        params = KdfParams(t, m)
        params.check()
        return cls(params, salt)


def _kek(passphrase: str, header: Header) -> bytes:
    if not isinstance(passphrase, str) or not passphrase:
        raise UsageError("the passphrase must be a non-empty string")
    try:
        return bytes(
            nacl.pwhash.argon2id.kdf(
                32,
                passphrase.encode("utf-8"),
                header.salt,
                opslimit=header.kdf.passes,
                memlimit=header.kdf.memory_kib * 1024,
            )
        )
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError) as e:
        raise KeystoreCorrupt(f"key derivation failed: {e}") from None


def wrap_dek(dek: bytes, passphrase: str, header: Header, nonce: bytes) -> bytes:
    kek = _kek(passphrase, header)
    return nonce + _na.crypto_aead_xchacha20poly1305_ietf_encrypt(dek, header.to_bytes(), nonce, kek)


def unwrap_dek(wrapped: bytes, passphrase: str, header: Header) -> bytes:
    """The DEK; :class:`~e2ee.keystore.errors.WrongPassphrase` when the passphrase (or the header) is
    not the one it was wrapped with.  The full Argon2id cost is paid either way."""
    kek = _kek(passphrase, header)
    try:
        dek = _na.crypto_aead_xchacha20poly1305_ietf_decrypt(wrapped[_NONCE:], header.to_bytes(), wrapped[:_NONCE], kek)
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase("wrong passphrase") from None
    if len(dek) != 32:
        raise KeystoreCorrupt("wrapped data key of wrong length")
    return bytes(dek)


def _seal(plain: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    """XChaCha20-Poly1305 straight through libsodium (PyNaCl's own wrapper checks every
    argument's type and length in Python on each call, two thirds of a record's seal).  The
    callers pass a 24-byte nonce and the 32-byte record key, always."""
    out = _ffi.new("unsigned char[]", len(plain) + _TAG)
    if _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        out, _ffi.NULL, plain, len(plain), ad, len(ad), _ffi.NULL, nonce, key
    ):
        raise UsageError("record too large to seal")
    return bytes(_ffi.buffer(out))


def _open(sealed: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes | None:
    """The plaintext of :func:`_seal`'s output, or None when it does not authenticate."""
    size = len(sealed) - _TAG
    if size < 0:
        return None
    out = _ffi.new("unsigned char[]", max(size, 1))
    if _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
        out, _ffi.NULL, _ffi.NULL, sealed, len(sealed), ad, len(ad), nonce, key
    ):
        return None
    return bytes(_ffi.buffer(out, size))


@dataclass(frozen=True, slots=True)
class Keys:
    """Keys derived from the DEK (never printed)."""

    record: bytes
    blind: bytes
    generation: bytes

    def __repr__(self) -> str:
        return "<Keys>"

    def blind_key(self, table: str, key: str) -> bytes:
        """The lookup key of (table, key): no JID or device id appears in the file."""
        t, k = table.encode("utf-8"), key.encode("utf-8")
        return hmac.digest(self.blind, struct.pack(">H", len(t)) + t + k, "sha256")

    def seal(self, blind: bytes, table: str, key: str, value: bytes, nonce: bytes) -> bytes:
        t, k = table.encode("utf-8"), key.encode("utf-8")
        plain = struct.pack(">HI", len(t), len(k)) + t + k + value
        if len(nonce) != _NONCE:
            raise UsageError("a record's nonce is 24 bytes")
        return bytes((_RECORD_V1,)) + nonce + _seal(plain, _RECORD_AD + blind, nonce, self.record)

    def open(self, blind: bytes, sealed: bytes) -> tuple[str, str, bytes]:
        """(table, key, value) of a sealed record; :class:`~e2ee.keystore.errors.CorruptRecord` for any
        modification, or a record moved from another row or table."""
        if len(sealed) < 1 + _NONCE + 16 or sealed[0] != _RECORD_V1:
            raise CorruptRecord("a keystore record is damaged")
        plain = _open(sealed[1 + _NONCE :], _RECORD_AD + blind, sealed[1 : 1 + _NONCE], self.record)
        if plain is None or len(plain) < 6:
            raise CorruptRecord("a keystore record failed authentication (modified or moved)")
        tl, kl = struct.unpack_from(">HI", plain)
        off = 6
        table = plain[off : off + tl].decode("utf-8")
        key = plain[off + tl : off + tl + kl].decode("utf-8")
        return table, key, bytes(plain[off + tl + kl :])

    def generation_mac(self, generation: int) -> bytes:
        """The MAC of the generation file beside the database."""
        return hmac.digest(self.generation, b"generation" + generation.to_bytes(8, "big"), "sha256")

    def generation_row(self, generation: int) -> bytes:
        """The database's ``generation`` row: version, counter, MAC (labelled apart from
        :meth:`generation_mac`)."""
        counter = generation.to_bytes(8, "big")
        return (
            bytes((_GENERATION_ROW_V2,)) + counter + hmac.digest(self.generation, b"generation row" + counter, "sha256")
        )

    def open_generation_row(self, row: bytes, blind: bytes) -> int:
        """The counter of a ``generation`` row (this version's MAC form, or the first version's
        sealed record under ``blind``); :class:`~e2ee.keystore.errors.CorruptRecord` when it does not
        authenticate."""
        if len(row) == 41 and row[0] == _GENERATION_ROW_V2:
            counter = row[1:9]
            if hmac.compare_digest(row[9:], hmac.digest(self.generation, b"generation row" + counter, "sha256")):
                return int.from_bytes(counter, "big")
            raise CorruptRecord("the generation record failed authentication")
        table, key, value = self.open(blind, row)
        if (table, key) != ("meta", "generation") or len(value) != 8:
            raise CorruptRecord("the generation record is in the wrong place")
        return int.from_bytes(value, "big")


def derive_keys(dek: bytes) -> Keys:
    return Keys(
        *(hkdf_sha256(dek, b"", b"e2ee-keystore " + name, 32) for name in (b"records", b"blind", b"generation"))
    )
