"""Legacy OMEMO wire codec (libsignal protocol v3 as deployed by Conversations, Dino, Gajim):
``0x05``-prefixed Curve25519 keys, ``0x33`` version byte, 8-byte MAC over
``AD || 0x33 || SignalMessage`` with AD = sender IK || receiver IK (flips with the direction),
libsignal-style signatures (Ed25519 sign bit in ``sig[63]``)."""

from __future__ import annotations

from typing import Final

from google.protobuf.message import DecodeError

from ..errors import (
    InvalidKey,
    InvalidSignature,
    MalformedMessage,
    MissingPreKey,
    UnsupportedVersion,
)
from ..flavour import Flavour, ParsedKeyExchange, ParsedMessage
from ..identity import IdentityKeyPair
from ..limits import MAC_LEN_LEGACY
from ..primitives import hmac_sha256, x25519_check_public
from ..wire.legacy_pb2 import PreKeySignalMessage, SignalMessage
from ..xeddsa import curve25519_verify, sign_with_sign_bit

__all__ = ["NAMESPACE", "LEGACY", "LegacyFlavour", "VERSION_BYTE", "KEY_TYPE"]

NAMESPACE: Final = "eu.siacs.conversations.axolotl"
#: (message version 3 << 4) | current version 3
VERSION_BYTE: Final = 0x33
_VERSION: Final = b"\x33"
#: libsignal's "DJB" key type, in front of every Curve25519 public key
KEY_TYPE: Final = 0x05
_KEY_TYPE: Final = b"\x05"


def _decode_key(data: bytes) -> bytes:
    if len(data) != 33 or data[0] != KEY_TYPE:
        raise InvalidKey("a legacy public key is 0x05 followed by 32 bytes")
    key = data[1:]
    x25519_check_public(key)
    return key


def _check_version(data: bytes) -> None:
    if not data:
        raise MalformedMessage("empty message")
    # libsignal reads only the high nibble; every deployed sender writes exactly 0x33, and
    # in a key exchange the byte is not covered by the MAC, so accept nothing else.
    if data[0] != VERSION_BYTE:
        raise UnsupportedVersion(f"unsupported message version byte {data[0]:#04x}")


class LegacyFlavour(Flavour):
    name = "legacy"
    code = 1
    namespace = NAMESPACE
    x3dh_info = b"WhisperText"
    root_info = b"WhisperRatchet"
    message_key_info = b"WhisperMessageKeys"
    mac_len = MAC_LEN_LEGACY

    def encode_public(self, key: bytes) -> bytes:
        return _KEY_TYPE + key

    def decode_public(self, data: bytes) -> bytes:
        return _decode_key(data)

    def identity_to_x25519(self, ik: bytes) -> bytes:
        return _decode_key(ik)

    def own_identity(self, own: IdentityKeyPair) -> bytes:
        return _KEY_TYPE + own.x25519_public

    def sign_prekey(self, own: IdentityKeyPair, spk: bytes) -> bytes:
        return sign_with_sign_bit(own.seed, _KEY_TYPE + spk, own.ed25519_public)

    def verify_prekey(self, ik: bytes, spk: bytes, signature: bytes) -> None:
        if not curve25519_verify(_decode_key(ik), _KEY_TYPE + spk, signature):
            raise InvalidSignature()

    def associated_data(self, own_ik: bytes, peer_ik: bytes, initiator: bool) -> tuple[bytes, bytes]:
        return own_ik + peer_ik, peer_ik + own_ik

    def pack_message(self, dh_pub: bytes, n: int, pn: int, ciphertext: bytes, auth_key: bytes, ad: bytes) -> bytes:
        body = (
            _VERSION
            + SignalMessage(
                ratchetKey=_KEY_TYPE + dh_pub, counter=n, previousCounter=pn, ciphertext=ciphertext
            ).SerializeToString()
        )
        return body + hmac_sha256(auth_key, ad + body)[:MAC_LEN_LEGACY]

    def parse_message(self, data: bytes) -> ParsedMessage:
        _check_version(data)
        if len(data) < 1 + MAC_LEN_LEGACY:
            raise MalformedMessage("message too short")
        body = data[:-MAC_LEN_LEGACY]
        msg = SignalMessage()
        try:
            msg.MergeFromString(body[1:])
        except DecodeError:
            raise MalformedMessage("not a SignalMessage") from None
        if not (msg.HasField("ratchetKey") and msg.HasField("counter") and msg.HasField("ciphertext")):
            raise MalformedMessage("SignalMessage lacks a required field")
        dh_pub = _decode_key(msg.ratchetKey)
        return ParsedMessage(dh_pub, msg.counter, msg.previousCounter, msg.ciphertext, data[-MAC_LEN_LEGACY:], body)

    def pack_key_exchange(self, pk_id: int, spk_id: int, ik: bytes, ek: bytes, message: bytes) -> bytes:
        return (
            _VERSION
            + PreKeySignalMessage(
                preKeyId=pk_id,
                baseKey=_KEY_TYPE + ek,
                identityKey=ik,
                message=message,
                signedPreKeyId=spk_id,
            ).SerializeToString()
        )

    def parse_key_exchange(self, data: bytes) -> ParsedKeyExchange:
        _check_version(data)
        kex = PreKeySignalMessage()
        try:
            kex.MergeFromString(data[1:])
        except DecodeError:
            raise MalformedMessage("not a PreKeySignalMessage") from None
        if not (
            kex.HasField("signedPreKeyId")
            and kex.HasField("baseKey")
            and kex.HasField("identityKey")
            and kex.HasField("message")
        ):
            raise MalformedMessage("PreKeySignalMessage lacks a required field")
        if not kex.HasField("preKeyId"):  # checked last: see the OMEMO 2 codec
            raise MissingPreKey("key exchange without a one-time prekey")
        ek = _decode_key(kex.baseKey)
        _decode_key(kex.identityKey)
        return ParsedKeyExchange(kex.preKeyId, kex.signedPreKeyId, kex.identityKey, ek, kex.message)


LEGACY: Final = LegacyFlavour()
