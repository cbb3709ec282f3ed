"""OMEMO 2 wire codec: Ed25519 identity keys, raw X25519 keys, protobuf messages with a
16-byte MAC over ``AD || OMEMOMessage`` and a fixed initiator || responder AD."""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from google.protobuf.message import DecodeError

from ..errors import (
    AuthenticationFailed,
    InvalidSignature,
    MalformedMessage,
    MissingPreKey,
    UsageError,
)
from ..flavour import Flavour, ParsedKeyExchange, ParsedMessage
from ..identity import IdentityKeyPair
from ..limits import MAC_LEN_OMEMO2
from ..primitives import (
    ed25519_public_to_x25519,
    ed25519_sign,
    ed25519_verify,
    hmac_sha256,
    x25519_check_public,
)
from ..wire.omemo2_pb2 import OMEMOAuthenticatedMessage, OMEMOKeyExchange, OMEMOMessage

__all__ = ["NAMESPACE", "OMEMO2", "Omemo2Flavour"]

NAMESPACE: Final = "urn:xmpp:omemo:2"


_UINT32_MAX: Final = 2**32 - 1
_ONE_BYTE: Final = tuple(bytes((i,)) for i in range(128))


def _uvarint(value: int) -> bytes:
    """A protobuf varint of ``value`` (>= 0)."""
    if value < 128:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 128:
        out.append(value & 127 | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


@lru_cache(maxsize=4096)
def _ik_to_x25519(ik: bytes) -> bytes:
    """The birational map costs a field inversion (~50 µs in libsodium); identity keys recur,
    so results are cached (public values only; errors are not cached)."""
    u = ed25519_public_to_x25519(ik)
    x25519_check_public(u)
    return u


class Omemo2Flavour(Flavour):
    name = "omemo2"
    code = 2
    namespace = NAMESPACE
    x3dh_info = b"OMEMO X3DH"
    root_info = b"OMEMO Root Chain"
    message_key_info = b"OMEMO Message Key Material"
    mac_len = MAC_LEN_OMEMO2

    def encode_public(self, key: bytes) -> bytes:
        return key

    def decode_public(self, data: bytes) -> bytes:
        x25519_check_public(data)
        return data

    def identity_to_x25519(self, ik: bytes) -> bytes:
        return _ik_to_x25519(ik)

    def own_identity(self, own: IdentityKeyPair) -> bytes:
        return own.ed25519_public

    def sign_prekey(self, own: IdentityKeyPair, spk: bytes) -> bytes:
        return ed25519_sign(own.seed, spk, own.ed25519_public)

    def verify_prekey(self, ik: bytes, spk: bytes, signature: bytes) -> None:
        if not ed25519_verify(ik, spk, signature):
            raise InvalidSignature()

    def associated_data(self, own_ik: bytes, peer_ik: bytes, initiator: bool) -> tuple[bytes, bytes]:
        ad = own_ik + peer_ik if initiator else peer_ik + own_ik
        return ad, ad

    def pack_message(self, dh_pub: bytes, n: int, pn: int, ciphertext: bytes, auth_key: bytes, ad: bytes) -> bytes:
        if n > _UINT32_MAX or pn > _UINT32_MAX or n < 0 or pn < 0:  # protobuf's own error
            body = OMEMOMessage(n=n, pn=pn, dh_pub=dh_pub, ciphertext=ciphertext).SerializeToString()
        else:  # the bytes protobuf writes (fields in number order, every field set), by hand
            body = b"".join(
                (b"\x08", _uvarint(n), b"\x10", _uvarint(pn), b"\x1a", _uvarint(len(dh_pub)), dh_pub)
                + (b"\x22", _uvarint(len(ciphertext)), ciphertext)
            )
        mac = hmac_sha256(auth_key, ad + body)[:MAC_LEN_OMEMO2]
        return b"".join((b"\x0a", _uvarint(len(mac)), mac, b"\x12", _uvarint(len(body)), body))

    def parse_message(self, data: bytes) -> ParsedMessage:
        outer = OMEMOAuthenticatedMessage()
        try:
            outer.MergeFromString(data)
        except DecodeError:
            raise MalformedMessage("not an OMEMOAuthenticatedMessage") from None
        if not (outer.HasField("mac") and outer.HasField("message")):
            raise MalformedMessage("OMEMOAuthenticatedMessage lacks a required field")
        return self._parse_inner(outer)

    def _parse_inner(self, outer: OMEMOAuthenticatedMessage) -> ParsedMessage:
        if len(outer.mac) != MAC_LEN_OMEMO2:
            raise AuthenticationFailed()
        body = outer.message
        msg = OMEMOMessage()
        try:
            msg.MergeFromString(body)
        except DecodeError:
            raise MalformedMessage("not an OMEMOMessage") from None
        if not (msg.HasField("n") and msg.HasField("pn") and msg.HasField("dh_pub")):
            raise MalformedMessage("OMEMOMessage lacks a required field")
        dh_pub = msg.dh_pub
        x25519_check_public(dh_pub)
        return ParsedMessage(dh_pub, msg.n, msg.pn, msg.ciphertext, outer.mac, body)

    def pack_key_exchange(self, pk_id: int, spk_id: int, ik: bytes, ek: bytes, message: bytes) -> bytes:
        inner = OMEMOAuthenticatedMessage()
        try:
            inner.MergeFromString(message)
        except DecodeError:
            raise UsageError("not an OMEMOAuthenticatedMessage") from None
        kex = OMEMOKeyExchange(pk_id=pk_id, spk_id=spk_id, ik=ik, ek=ek, message=inner)
        return kex.SerializeToString()

    def parse_key_exchange(self, data: bytes) -> ParsedKeyExchange:
        kex = OMEMOKeyExchange()
        try:
            kex.MergeFromString(data)
        except DecodeError:
            raise MalformedMessage("not an OMEMOKeyExchange") from None
        # Everything but the prekey id first: a message of another kind (say an
        # OMEMOAuthenticatedMessage marked kex) is malformed, not a key exchange without prekey.
        if not (kex.HasField("spk_id") and kex.HasField("ik") and kex.HasField("ek") and kex.HasField("message")):
            raise MalformedMessage("OMEMOKeyExchange lacks a required field")
        if not kex.HasField("pk_id"):
            raise MissingPreKey("key exchange without a one-time prekey")
        x25519_check_public(kex.ek)
        if len(kex.ik) != 32:
            raise MalformedMessage("identity key of wrong length")
        inner = kex.message
        if not (inner.HasField("mac") and inner.HasField("message")):
            raise MalformedMessage("OMEMOAuthenticatedMessage lacks a required field")
        # The embedded message is handed on re-serialized; its MAC covers only the inner
        # OMEMOMessage bytes, which protobuf keeps exactly as received.
        return ParsedKeyExchange(kex.pk_id, kex.spk_id, kex.ik, kex.ek, inner.SerializeToString())


OMEMO2: Final = Omemo2Flavour()
