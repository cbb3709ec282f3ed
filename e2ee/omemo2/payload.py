"""OMEMO 2 payload layer (XEP-0384 v0.8+, spec ``omemo2.md`` §6.1, §7, §9 steps 3-4).

Bytes in, bytes out: the caller serializes the SCE envelope and base64-encodes ``<payload/>``.

* :func:`encrypt` draws a 32-byte key, expands it with HKDF-SHA-256 (salt 32 zero bytes, info
  ``"OMEMO Payload"``, 80 bytes) into ``enc_key || auth_key || iv``, encrypts with AES-256-CBC
  and PKCS#7, and authenticates the ciphertext with HMAC-SHA-256 truncated to 16 bytes.  The
  48 bytes ``key || tag`` are what each recipient's ratchet message carries.
* :func:`decrypt` checks the HMAC (in constant time) **before** decrypting.  A key material
  that is not 48 bytes raises :class:`~e2ee.errors.MalformedMessage` (its length comes out of
  an authenticated ratchet message, so it reveals nothing about the payload); every failure
  about the payload itself -- HMAC, ciphertext length, padding -- raises the one
  :class:`~e2ee.errors.AuthenticationFailed`, so there is no padding oracle.
* An empty OMEMO message (§7) has no payload and 32 zero bytes of key material; test for it
  with :func:`is_empty` before calling :func:`decrypt`.

Because the tag travels inside every recipient's own ratchet message, a co-recipient who knows
the key cannot substitute another payload for the others (security catalogue R7).
"""

from __future__ import annotations

from typing import Final

from ..errors import AuthenticationFailed, MalformedMessage, UsageError
from ..primitives import aes_cbc_decrypt, aes_cbc_encrypt, constant_time_eq, hkdf_sha256, hmac_sha256
from ..rng import Random, system_random

__all__ = [
    "EMPTY_KEY_MATERIAL",
    "KEY_LENGTH",
    "KEY_MATERIAL_LENGTH",
    "TAG_LENGTH",
    "decrypt",
    "encrypt",
    "is_empty",
]

#: Length of the random payload key.
KEY_LENGTH: Final = 32
#: Length of the truncated HMAC-SHA-256 tag.
TAG_LENGTH: Final = 16
#: Length of the key material a recipient's ratchet message carries: ``key || tag``.
KEY_MATERIAL_LENGTH: Final = KEY_LENGTH + TAG_LENGTH
#: Key material of an empty OMEMO message (§7): 32 zero bytes, no payload.
EMPTY_KEY_MATERIAL: Final = bytes(32)

_SALT: Final = bytes(32)
_INFO: Final = b"OMEMO Payload"


def _expand(key: bytes) -> tuple[bytes, bytes, bytes]:
    okm = hkdf_sha256(key, _SALT, _INFO, 80)
    return okm[:32], okm[32:64], okm[64:80]


def encrypt(plaintext: bytes, rng: Random = system_random) -> tuple[bytes, bytes]:
    """Encrypt ``plaintext`` (the serialized SCE envelope).

    Returns ``(ciphertext, key_material)``: the bytes of ``<payload/>`` and the 48 bytes
    ``key || tag`` to ratchet-encrypt for every recipient device.
    """
    key = rng(KEY_LENGTH)
    if len(key) != KEY_LENGTH:
        raise UsageError("rng returned the wrong number of bytes")
    enc_key, auth_key, iv = _expand(key)
    ciphertext = aes_cbc_encrypt(enc_key, iv, plaintext)
    tag = hmac_sha256(auth_key, ciphertext)[:TAG_LENGTH]
    return ciphertext, key + tag


def decrypt(ciphertext: bytes, key_material: bytes) -> bytes:
    """Verify and decrypt a payload with the key material from our ratchet message.

    Raises :class:`MalformedMessage` if ``key_material`` is not 48 bytes (this includes the
    32-byte material of an empty message and a truncated tag), and :class:`AuthenticationFailed`
    for any failure of the HMAC, the ciphertext length or the padding.
    """
    if len(key_material) != KEY_MATERIAL_LENGTH:
        raise MalformedMessage("OMEMO 2 key material must be 48 bytes (key || tag)")
    key, tag = key_material[:KEY_LENGTH], key_material[KEY_LENGTH:]
    enc_key, auth_key, iv = _expand(key)
    if not constant_time_eq(hmac_sha256(auth_key, ciphertext)[:TAG_LENGTH], tag):
        raise AuthenticationFailed()
    return aes_cbc_decrypt(enc_key, iv, ciphertext)


def is_empty(key_material: bytes) -> bool:
    """True for the key material of an empty OMEMO message (32 zero bytes), compared in
    constant time.  The caller must also check that the message has no ``<payload/>``."""
    return constant_time_eq(key_material, EMPTY_KEY_MATERIAL)
