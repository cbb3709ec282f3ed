"""Cryptographic primitives.  **Sharp tools**: no protocol logic, no policy beyond what each
docstring states.  Use the protocol modules (``x3dh``, ``ratchet``, the OMEMO backends) unless
you are writing one of those.

Backends, chosen by measurement on this project's machines:

* X25519 and Ed25519 run on libsodium through PyNaCl (about 2x faster than OpenSSL through
  ``cryptography`` for X25519 and 1.6-3x for Ed25519, and it passes every Wycheproof case).
* HMAC uses the standard library's OpenSSL-backed ``hmac.digest``; HKDF uses ``cryptography``'s
  (OpenSSL through Rust): about 2x faster than the same RFC 5869 steps on ``hmac.digest`` for
  the 80-byte outputs of the ratchet, and byte-identical (``bench/floor.py`` measures both).
* AES-CBC and AES-GCM use ``cryptography`` (OpenSSL).

Errors: wrong argument lengths raise :class:`~e2ee.errors.UsageError` for values the caller
controls; checks on peer-supplied data raise :class:`~e2ee.errors.InvalidKey`,
:class:`~e2ee.errors.AuthenticationFailed` or :class:`~e2ee.errors.MalformedMessage`.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF as _HKDF
from nacl import bindings as _na
from nacl.exceptions import CryptoError as _NaclCryptoError
from nacl.exceptions import RuntimeError as _NaclRuntimeError

from .errors import AuthenticationFailed, InvalidKey, MalformedMessage, UsageError

__all__ = [
    "P",
    "Q",
    "constant_time_eq",
    "hmac_sha256",
    "hkdf_sha256",
    "aes_cbc_encrypt",
    "aes_cbc_decrypt",
    "aes_gcm_encrypt",
    "aes_gcm_decrypt",
    "x25519_clamp",
    "x25519_public",
    "x25519",
    "x25519_check_public",
    "x25519_check_prime_order",
    "ed25519_public",
    "ed25519_sign",
    "ed25519_verify",
    "ed25519_public_to_x25519",
    "ed25519_seed_to_x25519",
    "x25519_public_to_ed25519",
]

#: The field prime of Curve25519 / Ed25519.
P: Final = 2**255 - 19
#: The order of the Ed25519 base point.
Q: Final = 2**252 + 27742317777372353535851937790883648493


# --------------------------------------------------------------------------- comparisons


def constant_time_eq(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time that does not depend on where they differ."""
    return _hmac.compare_digest(a, b)


# --------------------------------------------------------------------------- MAC and KDF


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 (32 bytes).  Truncate the result yourself and compare with
    :func:`constant_time_eq`."""
    return _hmac.digest(key, data, "sha256")


_ZERO_SALT: Final = bytes(32)


_SHA256: Final = hashes.SHA256()


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF with SHA-256 (RFC 5869).  An empty ``salt`` means 32 zero bytes, as the RFC says."""
    if not 0 < length <= 255 * 32:
        if length == 0:
            return b""
        raise UsageError("HKDF-SHA-256 output length must be 0..8160")
    return _HKDF(_SHA256, length, salt or _ZERO_SALT, info).derive(ikm)


# --------------------------------------------------------------------------- AES


_PADDING: Final = tuple(bytes((n,)) * n for n in range(17))  #: the PKCS#7 padding of n bytes


def _pkcs7_pad(data: bytes) -> bytes:
    return data + _PADDING[16 - (len(data) & 15)]


def aes_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-CBC with PKCS#7 padding.  ``key`` is 16, 24 or 32 bytes, ``iv`` 16 bytes."""
    if len(key) not in (16, 24, 32) or len(iv) != 16:
        raise UsageError("AES-CBC needs a 16/24/32-byte key and a 16-byte IV")
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(_pkcs7_pad(plaintext)) + enc.finalize()


def aes_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """AES-CBC decryption and PKCS#7 unpadding.

    Any wrong length or bad padding raises :class:`AuthenticationFailed` (no padding oracle:
    callers verify a MAC first, and the error is the same as a MAC failure).
    """
    if len(key) not in (16, 24, 32) or len(iv) != 16:
        raise UsageError("AES-CBC needs a 16/24/32-byte key and a 16-byte IV")
    if not ciphertext or len(ciphertext) & 15:
        raise AuthenticationFailed()
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = dec.update(ciphertext) + dec.finalize()
    n = padded[-1]
    bad = (n - 1) >> 8 | (16 - n) >> 8  # non-zero iff n == 0 or n > 16
    if bad:
        raise AuthenticationFailed()
    # all padding bytes checked, in time that does not depend on where they differ
    if not _hmac.compare_digest(padded[-n:], _PADDING[n]):
        raise AuthenticationFailed()
    return padded[:-n]


#: IV lengths accepted by :func:`aes_gcm_encrypt` / :func:`aes_gcm_decrypt`: 12 bytes (the
#: standard) and 16 bytes (old legacy-OMEMO senders and XEP-0454 links).  Callers that only
#: allow 12 must check that themselves.
GCM_IV_LENGTHS: Final = (12, 16)
GCM_TAG_LENGTH: Final = 16


def aes_gcm_encrypt(key: bytes, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """AES-GCM with a 16-byte tag; returns ``ciphertext || tag``.  ``key`` is 16, 24 or 32 bytes."""
    if len(key) not in (16, 24, 32) or len(iv) not in GCM_IV_LENGTHS:
        raise UsageError("AES-GCM needs a 16/24/32-byte key and a 12- or 16-byte IV")
    return AESGCM(key).encrypt(iv, plaintext, aad or None)


def aes_gcm_decrypt(key: bytes, iv: bytes, data: bytes, aad: bytes = b"") -> bytes:
    """Decrypt ``ciphertext || tag`` (16-byte tag).

    A wrong IV length or data shorter than the tag raises :class:`MalformedMessage`; a failed
    tag check raises :class:`AuthenticationFailed`.
    """
    if len(key) not in (16, 24, 32):
        raise UsageError("AES-GCM needs a 16/24/32-byte key")
    if len(iv) not in GCM_IV_LENGTHS or len(data) < GCM_TAG_LENGTH:
        raise MalformedMessage("AES-GCM IV or ciphertext of unacceptable length")
    try:
        return AESGCM(key).decrypt(iv, data, aad or None)
    except InvalidTag:
        raise AuthenticationFailed() from None


# --------------------------------------------------------------------------- X25519


def x25519_clamp(scalar: bytes) -> bytes:
    """Clamp a 32-byte X25519 private scalar (RFC 7748 decodeScalar25519)."""
    if len(scalar) != 32:
        raise UsageError("an X25519 private key is 32 bytes")
    b = bytearray(scalar)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return bytes(b)


def x25519_public(private: bytes) -> bytes:
    """The X25519 public key (u-coordinate) of a 32-byte private key (clamped internally)."""
    if len(private) != 32:
        raise UsageError("an X25519 private key is 32 bytes")
    return _na.crypto_scalarmult_base(private)


# u-coordinates (canonical encodings) of the points of order 1, 2, 4 and 8 on Curve25519.
_LOW_ORDER_U: Final = frozenset(
    (
        bytes(32),
        (1).to_bytes(32, "little"),
        (P - 1).to_bytes(32, "little"),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    )
)


def x25519_check_public(public: bytes) -> None:
    """Protocol-level check of a peer's X25519 public key.

    Rejects (with :class:`InvalidKey`) a wrong length, the high bit set, a non-canonical
    u-coordinate (u >= p) and the points of small order.  RFC 7748 itself would accept and
    mask such encodings; no honest peer produces them.
    """
    if len(public) != 32:
        raise InvalidKey("an X25519 public key is 32 bytes")
    top = public[31]
    if top & 0x80 or (top == 0x7F and int.from_bytes(public, "little") >= P):  # u >= p needs 0x7f
        raise InvalidKey("non-canonical X25519 public key")
    if public in _LOW_ORDER_U:
        raise InvalidKey("X25519 public key of small order")


def x25519_check_prime_order(public: bytes) -> None:
    """Reject (with :class:`InvalidKey`) an X25519 public key that is not in the prime-order
    subgroup: a genuine key plus a torsion component, or a point on the twist.  Clamped X25519
    hides the torsion (the shared secret is the same), so a replayed key exchange with a
    torsioned base key would otherwise look new (libsignal ``test_bob_rejects_torsioned_basekey``).
    Costs a scalar multiplication: used on key-exchange base keys only."""
    x25519_check_public(public)
    u = int.from_bytes(public, "little")
    if (u + 1) % P == 0:
        raise InvalidKey("X25519 public key of small order")
    y = (u - 1) * pow(u + 1, -1, P) % P  # the Edwards y (either x will do); pow(_, -1): 7x a Fermat inverse
    if not _na.crypto_core_ed25519_is_valid_point(y.to_bytes(32, "little")):
        raise InvalidKey("X25519 public key outside the prime-order subgroup")


def x25519(private: bytes, public: bytes) -> bytes:
    """X25519 Diffie-Hellman (RFC 7748).

    An all-zero shared secret (a public key of small order) raises :class:`InvalidKey`;
    libsodium also refuses the non-canonical encodings of small-order points.
    """
    if len(private) != 32:
        raise UsageError("an X25519 private key is 32 bytes")
    if len(public) != 32:
        raise InvalidKey("an X25519 public key is 32 bytes")
    try:
        return _na.crypto_scalarmult(private, public)
    except _NaclRuntimeError:
        raise InvalidKey("X25519 with a public key of small order") from None


# --------------------------------------------------------------------------- Ed25519


def ed25519_public(seed: bytes) -> bytes:
    """The Ed25519 public key of a 32-byte RFC 8032 seed."""
    if len(seed) != 32:
        raise UsageError("an Ed25519 seed is 32 bytes")
    return _na.crypto_sign_seed_keypair(seed)[0]


def ed25519_sign(seed: bytes, message: bytes, public: bytes | None = None) -> bytes:
    """RFC 8032 Ed25519 signature (64 bytes) with the key of ``seed``.

    ``public`` may be passed to skip recomputing it; it must belong to ``seed``.
    """
    if len(seed) != 32:
        raise UsageError("an Ed25519 seed is 32 bytes")
    if public is None:
        public = _na.crypto_sign_seed_keypair(seed)[0]
    signed: bytes = _na.crypto_sign(message, seed + public)
    return signed[:64]


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Strict RFC 8032 verification (libsodium): rejects s >= L, small-order and
    non-canonical keys.  Returns False on any failure, including wrong lengths."""
    if len(public) != 32 or len(signature) != 64:
        return False
    try:
        _na.crypto_sign_open(signature + message, public)
    except (_NaclCryptoError, _NaclRuntimeError, ValueError):
        return False
    return True


# --------------------------------------------------------------------------- conversions


def ed25519_public_to_x25519(public: bytes) -> bytes:
    """Birational map Ed25519 -> X25519 of a public key (RFC 7748 section 4.1).

    Raises :class:`InvalidKey` for keys that do not decode or are of small order.
    """
    if len(public) != 32:
        raise InvalidKey("an Ed25519 public key is 32 bytes")
    try:
        return _na.crypto_sign_ed25519_pk_to_curve25519(public)
    except (_NaclRuntimeError, _NaclCryptoError, ValueError):
        raise InvalidKey("Ed25519 public key does not convert") from None


def ed25519_seed_to_x25519(seed: bytes) -> bytes:
    """The X25519 private scalar (clamped) belonging to an Ed25519 seed:
    ``clamp(SHA-512(seed)[0:32])``, what libsodium's ``sk_to_curve25519`` returns."""
    if len(seed) != 32:
        raise UsageError("an Ed25519 seed is 32 bytes")
    return x25519_clamp(hashlib.sha512(seed).digest()[:32])


def x25519_public_to_ed25519(public: bytes, sign: int) -> bytes:
    """Birational map X25519 -> Ed25519: ``y = (u - 1) / (u + 1)``, with the sign of x given
    by ``sign`` (0 or 1), which the u-coordinate cannot tell.

    Raises :class:`InvalidKey` for a non-canonical u or u = p - 1 (no image).
    """
    if len(public) != 32:
        raise InvalidKey("an X25519 public key is 32 bytes")
    u = int.from_bytes(public, "little")
    if u >= P or u == P - 1:
        raise InvalidKey("X25519 public key has no Ed25519 image")
    y = (u - 1) * pow(u + 1, -1, P) % P
    return (y | (sign & 1) << 255).to_bytes(32, "little")
