"""Legacy OMEMO body layer (``eu.siacs.conversations.axolotl``, spec ``omemo-legacy.md`` §5,
§5.1, §6; security catalogue R7, R8).

Bytes in, bytes out: the caller encodes the body text as UTF-8 and handles the XML/base64.

Sending (:func:`encrypt`): a fresh random 16-byte AES-128 key and 12-byte IV per message;
AES-128-GCM without AAD; ``<payload/>`` is the ciphertext **without** the tag and the key
material for the ratchet is ``key || tag`` (32 bytes), exactly as Conversations, Dino and
python-oldmemo send it.

Receiving -- the length policy (a deliberate, documented narrowing of §6's "be liberal"):

* :func:`decrypt` (the default path) accepts key material of **exactly 32 bytes**
  (``key16 || tag16``); any other length raises :class:`~e2ee.errors.MalformedMessage`
  (catalogue R7).  §6 describes receivers that take ``km[16:]`` of any material >= 32 bytes as
  the tag; no current sender produces more than 32 bytes, a GCM tag is at most 16 bytes, and
  the extra bytes would only be glued onto the ciphertext, so we refuse them rather than guess.
* The historical variant (16-byte key material, tag = last 16 bytes of ``<payload/>``; Gajim
  accepts it, current Conversations rejects it as an "outdated sender") is only available
  through the separate, explicit :func:`decrypt_tag_in_payload`; the caller decides whether to
  allow it.  A 16-byte key material without a payload is a KeyTransportElement (§5.1), not a
  message: never pass one to either function.
* IVs of 12 and 16 bytes are accepted (old Conversations used 16); any other length,
  including an empty IV, raises :class:`~e2ee.errors.MalformedMessage`.
* A failed tag check raises :class:`~e2ee.errors.AuthenticationFailed`.  The tag sits inside
  each recipient's own ratchet message, so a co-recipient who knows the key cannot substitute
  another payload (R7).

:func:`key_transport` produces the material of a KeyTransportElement (§5.1) as Conversations and
python-oldmemo send it: 16 random bytes of key material (no tag) and a random 12-byte IV.
"""

from __future__ import annotations

from typing import Final

from ..errors import MalformedMessage, UsageError
from ..primitives import aes_gcm_decrypt, aes_gcm_encrypt
from ..rng import Random, system_random

__all__ = [
    "IV_LENGTH",
    "IV_LENGTHS_ACCEPTED",
    "KEY_LENGTH",
    "KEY_MATERIAL_LENGTH",
    "TAG_LENGTH",
    "decrypt",
    "decrypt_tag_in_payload",
    "encrypt",
    "key_transport",
]

#: AES-128 key length, also the key material length of a KeyTransportElement.
KEY_LENGTH: Final = 16
#: GCM tag length.
TAG_LENGTH: Final = 16
#: Key material of a message: ``key || tag``.
KEY_MATERIAL_LENGTH: Final = KEY_LENGTH + TAG_LENGTH
#: IV length we send.
IV_LENGTH: Final = 12
#: IV lengths we accept.
IV_LENGTHS_ACCEPTED: Final = (12, 16)


def _random(rng: Random, n: int) -> bytes:
    out = rng(n)
    if len(out) != n:
        raise UsageError("rng returned the wrong number of bytes")
    return out


def _check_iv(iv: bytes) -> None:
    if len(iv) not in IV_LENGTHS_ACCEPTED:
        raise MalformedMessage("legacy OMEMO IV must be 12 or 16 bytes")


def encrypt(plaintext: bytes, rng: Random = system_random) -> tuple[bytes, bytes, bytes]:
    """Encrypt a body.  Returns ``(payload, iv, key_material)``: the ciphertext without the
    tag, the 12-byte IV and the 32 bytes ``key || tag``.  The key is drawn before the IV."""
    key = _random(rng, KEY_LENGTH)
    iv = _random(rng, IV_LENGTH)
    sealed = aes_gcm_encrypt(key, iv, plaintext)
    return sealed[:-TAG_LENGTH], iv, key + sealed[-TAG_LENGTH:]


def decrypt(payload: bytes, iv: bytes, key_material: bytes) -> bytes:
    """Decrypt a body with 32-byte key material ``key || tag`` (the default, strict path).

    Raises :class:`MalformedMessage` for key material that is not 32 bytes or an IV that is
    not 12 or 16 bytes, :class:`AuthenticationFailed` if the tag does not verify.
    """
    if len(key_material) != KEY_MATERIAL_LENGTH:
        raise MalformedMessage("legacy OMEMO key material must be 32 bytes (key || tag)")
    _check_iv(iv)
    return aes_gcm_decrypt(key_material[:KEY_LENGTH], iv, payload + key_material[KEY_LENGTH:])


def decrypt_tag_in_payload(payload: bytes, iv: bytes, key16: bytes) -> bytes:
    """Decrypt the historical variant: 16-byte key material, the tag at the end of ``payload``.

    Opt-in only (see the module docstring).  Raises :class:`MalformedMessage` for a key that is
    not 16 bytes, a bad IV length or a payload shorter than the tag, and
    :class:`AuthenticationFailed` if the tag does not verify.
    """
    if len(key16) != KEY_LENGTH:
        raise MalformedMessage("legacy OMEMO key must be 16 bytes")
    _check_iv(iv)
    return aes_gcm_decrypt(key16, iv, payload)


def key_transport(rng: Random = system_random) -> tuple[bytes, bytes]:
    """Material of a KeyTransportElement (§5.1): returns ``(iv, key_material)``, a random
    12-byte IV and 16 random bytes of key material (drawn first), as Conversations and
    python-oldmemo send them."""
    key_material = _random(rng, KEY_LENGTH)
    iv = _random(rng, IV_LENGTH)
    return iv, key_material
