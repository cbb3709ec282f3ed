"""Passphrase protection of OpenPGP v4 secret-key packets (RFC 4880 §5.5.3, §3.7): sharp tools.

The engine never lets an unprotected secret key reach a disk: GnuPG generates our key already
protected with a random passphrase kept in the keystore, and only protected keys are imported
into its (temporary) home.  Two places still need the transform, in memory:

* :func:`unprotect` -- the XEP-0373 §5 secret-key backup holds the key with S2K usage 0
  (unprotected) inside the symmetrically encrypted ``<secretkey/>``;
* :func:`protect` -- a key restored from such a backup is protected with a fresh random
  passphrase before GnuPG imports it (GnuPG would store an unprotected import as it is).

Supported on input: S2K usage 0, 254 (SHA-1 check) and 255 (checksum), S2K specifiers simple,
salted and iterated+salted, AES-128/192/256 in CFB mode (what GnuPG and OX clients write).
:func:`protect` writes usage 254, AES-256, iterated+salted SHA-256.  GnuPG's "gnu-dummy" and
smartcard stubs carry no secret and are refused.  Errors are raised as the ``error`` class the
caller passes; a wrong passphrase is a failed SHA-1 check.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 47 keeps CFB among its "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from ..errors import E2EEError
from .packets import (
    TAG_SECRET_KEY,
    TAG_SECRET_SUBKEY,
    KeyBlock,
    Packet,
    encode_block,
    public_part_length,
)

__all__ = ["protect", "unprotect", "is_protected", "secret_values"]

_HASHES = {1: "md5", 2: "sha1", 3: "ripemd160", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
_AES_KEY_LEN = {7: 16, 8: 24, 9: 32}
_BLOCK = 16
_S2K_SIMPLE, _S2K_SALTED, _S2K_ITERATED = 0, 1, 3
#: Our protection: AES-256, iterated+salted SHA-256, count byte 0x60 (65536 octets).  The
#: passphrases are 256-bit random strings, so the count only needs to be valid, not slow.
_OUR_CIPHER, _OUR_HASH, _OUR_COUNT = 9, 8, 0x60


def _aes_cfb(key: bytes, iv: bytes, data: bytes, *, decrypt: bool) -> bytes:
    """OpenPGP's plain CFB (no resynchronisation), as used for secret keys: standard AES-CFB."""
    cipher = Cipher(algorithms.AES(key), CFB(iv))
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def _s2k(
    passphrase: bytes, spec: int, hash_algo: int, salt: bytes, count: int, key_len: int, error: type[E2EEError]
) -> bytes:
    name = _HASHES.get(hash_algo)
    if name is None or name in ("md5", "ripemd160"):
        raise error(f"unsupported S2K hash algorithm {hash_algo}")
    data = salt + passphrase
    out = b""
    preload = 0
    while len(out) < key_len:
        h = hashlib.new(name)
        h.update(b"\x00" * preload)
        if spec == _S2K_ITERATED:
            total = max(count, len(data))
            chunk = data * max(1, 65536 // max(1, len(data)))
            while total >= len(chunk):
                h.update(chunk)
                total -= len(chunk)
            full, rest = divmod(total, len(data))
            h.update(data * full + data[:rest])
        else:
            h.update(data)
        out += h.digest()
        preload += 1
    return out[:key_len]


def _checksum(data: bytes) -> bytes:
    return (sum(data) & 0xFFFF).to_bytes(2, "big")


def _unprotect_body(body: bytes, passphrase: bytes, error: type[E2EEError]) -> tuple[bytes, bytes]:
    """(public part, secret MPIs) of a secret-key packet body."""
    pub_len = public_part_length(body, error)
    public, rest = body[:pub_len], body[pub_len:]
    if not rest:
        raise error("secret-key packet without secret part")
    usage = rest[0]
    if usage == 0:
        mpis, check = rest[1:-2], rest[-2:]
        if len(rest) < 3 or not hmac.compare_digest(_checksum(mpis), check):
            raise error("unprotected secret key with a bad checksum")
        return public, mpis
    if usage not in (254, 255):
        raise error("secret key protected with an obsolete scheme")
    if len(rest) < 4:
        raise error("truncated secret-key protection")
    cipher, spec, hash_algo = rest[1], rest[2], rest[3]
    key_len = _AES_KEY_LEN.get(cipher)
    if key_len is None:
        raise error(f"unsupported secret-key cipher {cipher}")
    pos = 4
    salt, count = b"", 0
    if spec in (_S2K_SALTED, _S2K_ITERATED):
        salt, pos = rest[pos : pos + 8], pos + 8
        if spec == _S2K_ITERATED:
            if pos >= len(rest):
                raise error("truncated S2K specifier")
            c = rest[pos]
            count, pos = (16 + (c & 15)) << ((c >> 4) + 6), pos + 1
    elif spec != _S2K_SIMPLE:
        raise error("secret key without secret material (GnuPG stub or unknown S2K)")
    iv, encrypted = rest[pos : pos + _BLOCK], rest[pos + _BLOCK :]
    if len(salt) != (8 if spec != _S2K_SIMPLE else 0) or len(iv) != _BLOCK or not encrypted:
        raise error("truncated secret-key protection")
    key = _s2k(passphrase, spec, hash_algo, salt, count, key_len, error)
    plain = _aes_cfb(key, iv, encrypted, decrypt=True)
    if usage == 254:
        mpis, check = plain[:-20], plain[-20:]
        ok = len(plain) > 20 and hmac.compare_digest(hashlib.sha1(mpis, usedforsecurity=False).digest(), check)
    else:
        mpis, check = plain[:-2], plain[-2:]
        ok = len(plain) > 2 and hmac.compare_digest(_checksum(mpis), check)
    if not ok:
        raise error("the passphrase does not unlock this secret key")
    return public, mpis


def _map_secret(block: KeyBlock, fn: Callable[[bytes], bytes]) -> bytes:
    out = [Packet(p.tag, fn(p.body)) if p.tag in (TAG_SECRET_KEY, TAG_SECRET_SUBKEY) else p for p in block.packets]
    return encode_block(out)


def unprotect(block: KeyBlock, passphrase: str, error: type[E2EEError]) -> bytes:
    """The transferable secret key with every secret packet unprotected (S2K usage 0)."""

    def one(body: bytes) -> bytes:
        public, mpis = _unprotect_body(body, passphrase.encode(), error)
        return public + b"\x00" + mpis + _checksum(mpis)

    return _map_secret(block, one)


def protect(block: KeyBlock, passphrase: str, rng: Callable[[int], bytes], error: type[E2EEError]) -> bytes:
    """The transferable secret key with every secret packet protected by ``passphrase``
    (usage 254, AES-256-CFB, iterated+salted SHA-256).  Input packets must be unprotected."""
    count = (16 + (_OUR_COUNT & 15)) << ((_OUR_COUNT >> 4) + 6)

    def one(body: bytes) -> bytes:
        pub_len = public_part_length(body, error)
        if body[pub_len : pub_len + 1] != b"\x00":
            raise error("protect() needs an unprotected secret key")
        public, mpis = _unprotect_body(body, b"", error)
        salt, iv = rng(8), rng(_BLOCK)
        key = _s2k(passphrase.encode(), _S2K_ITERATED, _OUR_HASH, salt, count, _AES_KEY_LEN[_OUR_CIPHER], error)
        encrypted = _aes_cfb(key, iv, mpis + hashlib.sha1(mpis, usedforsecurity=False).digest(), decrypt=False)
        return (
            public + bytes((254, _OUR_CIPHER, _S2K_ITERATED, _OUR_HASH)) + salt + bytes((_OUR_COUNT,)) + iv + encrypted
        )

    return _map_secret(block, one)


def is_protected(block: KeyBlock, error: type[E2EEError]) -> bool:
    """Whether every secret packet of ``block`` is passphrase-protected (usage 254 or 255)."""
    found = False
    for p in block.packets:
        if p.tag in (TAG_SECRET_KEY, TAG_SECRET_SUBKEY):
            found = True
            usage = p.body[public_part_length(p.body, error) :][:1]
            if usage not in (b"\xfe", b"\xff"):
                return False
    return found


def secret_values(block: KeyBlock, passphrase: str, error: type[E2EEError]) -> list[bytes]:
    """The secret MPI values of every secret packet (leading zero octets removed): what must
    never be found in clear on disk (tests scan for them)."""
    values = []
    for p in block.packets:
        if p.tag in (TAG_SECRET_KEY, TAG_SECRET_SUBKEY):
            _public, mpis = _unprotect_body(p.body, passphrase.encode(), error)
            pos = 0
            while pos + 2 <= len(mpis):
                n = (int.from_bytes(mpis[pos : pos + 2], "big") + 7) // 8
                values.append(mpis[pos + 2 : pos + 2 + n].lstrip(b"\x00"))
                pos += 2 + n
    return values
