"""XEdDSA (Signal, Revision 1) and the libsignal "curve25519 signature" variant.  Sharp tools.

Two conventions exist for signatures by a Montgomery (X25519) identity key:

* **XEdDSA proper**: the signer uses the Edwards key whose x-sign is 0 (negating its scalar if
  needed); verification rebuilds that key from u with sign 0.  libomemo-c (Dino) signs so.
* **libsignal variant**: libsignal-protocol-java/c (Conversations) and Rust libsignal sign
  with the unmodified key and store its x-sign in bit 7 of ``sig[63]`` (free, since s < 2^253);
  the verifier takes the sign from there.  A strict XEdDSA verifier rejects about half of
  these signatures.

:func:`curve25519_verify` accepts both (an XEdDSA signature has that bit 0 and sign 0).
Our identity keys are Ed25519 seeds, so we sign with :func:`sign_with_sign_bit`; only
known-answer tests need :func:`xeddsa_sign`.
"""

from __future__ import annotations

import hashlib
from typing import Final

from nacl import bindings as _na

from .errors import InvalidKey, UsageError
from .primitives import (
    P,
    ed25519_public,
    ed25519_sign,
    ed25519_verify,
    x25519_clamp,
    x25519_public_to_ed25519,
)

__all__ = [
    "xeddsa_sign",
    "xeddsa_verify",
    "curve25519_verify",
    "sign_with_sign_bit",
]

# SHA-512 domain separation prefix of XEdDSA's nonce: the 32-byte encoding of 2^256 - 2.
_NONCE_PREFIX: Final = b"\xfe" + b"\xff" * 31


def _reduce(h64: bytes) -> bytes:
    return _na.crypto_core_ed25519_scalar_reduce(h64)


def xeddsa_sign(private: bytes, message: bytes, nonce: bytes) -> bytes:
    """XEdDSA signature of ``message`` by the X25519 private key ``private`` (clamped here),
    with 64 bytes of fresh randomness ``nonce`` (the spec's Z).  The sign-bit byte is 0."""
    if len(private) != 32 or len(nonce) != 64:
        raise UsageError("XEdDSA needs a 32-byte private key and a 64-byte nonce")
    k = x25519_clamp(private)
    edwards = _na.crypto_scalarmult_ed25519_base_noclamp(k)
    a = _reduce(k + bytes(32))
    # The nonce hash takes the scalar as libsignal's C code (and python-xeddsa) hold it:
    # negated mod q when the Edwards sign is 1, otherwise the clamped key *unreduced*.
    a_for_nonce = k
    if edwards[31] & 0x80:
        a = a_for_nonce = _na.crypto_core_ed25519_scalar_negate(a)
        edwards = edwards[:31] + bytes((edwards[31] & 0x7F,))
    r = _reduce(hashlib.sha512(_NONCE_PREFIX + a_for_nonce + message + nonce).digest())
    big_r = _na.crypto_scalarmult_ed25519_base_noclamp(r)
    h = _reduce(hashlib.sha512(big_r + edwards + message).digest())
    s = _na.crypto_core_ed25519_scalar_add(r, _na.crypto_core_ed25519_scalar_mul(h, a))
    return bytes(big_r) + bytes(s)


def xeddsa_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Strict XEdDSA verification with the X25519 public key ``public`` (Edwards sign 0)."""
    if len(public) != 32 or len(signature) != 64:
        return False
    if int.from_bytes(public, "little") >= P or signature[63] & 0xE0:
        return False
    try:
        edwards = x25519_public_to_ed25519(public, 0)
    except InvalidKey:  # no Ed25519 image
        return False
    return ed25519_verify(edwards, message, signature)


def curve25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Verify a libsignal-style signature: the Edwards x-sign is bit 7 of ``signature[63]``.

    Accepts XEdDSA signatures too (their bit is 0).
    """
    if len(public) != 32 or len(signature) != 64:
        return False
    if int.from_bytes(public, "little") >= P:
        return False
    sign = signature[63] >> 7
    try:
        edwards = x25519_public_to_ed25519(public, sign)
    except InvalidKey:  # no Ed25519 image
        return False
    return ed25519_verify(edwards, message, signature[:63] + bytes((signature[63] & 0x7F,)))


def sign_with_sign_bit(seed: bytes, message: bytes, public: bytes | None = None) -> bytes:
    """Ed25519-sign with ``seed`` and copy the public key's x-sign into bit 7 of ``sig[63]``:
    a signature that libsignal-based peers verify against our X25519 identity key."""
    if public is None:
        public = ed25519_public(seed)
    sig = ed25519_sign(seed, message, public)
    return sig[:63] + bytes((sig[63] | (public[31] & 0x80),))
