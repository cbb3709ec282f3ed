"""What differs between OMEMO 2 and legacy OMEMO below the XML layer.

One X3DH and one Double Ratchet implementation serve both protocol versions; a
:class:`Flavour` supplies the constants (info strings, MAC length) and the wire codec
(key encodings, message framing, key-exchange wrapper, signed-prekey signatures).
The two instances live in :mod:`e2ee.omemo2.wire` and :mod:`e2ee.legacy.wire`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from .identity import IdentityKeyPair

__all__ = ["Flavour", "ParsedMessage", "ParsedKeyExchange"]


@dataclass(slots=True)  # not frozen: built per message, and frozen construction costs ~6x
class ParsedMessage:
    """A ratchet message as received, split into what the ratchet needs."""

    dh_pub: bytes  #: raw 32-byte X25519 ratchet key (already checked)
    n: int
    pn: int
    ciphertext: bytes
    mac: bytes
    mac_data: bytes  #: the received bytes the MAC covers (after the associated data)


@dataclass(slots=True)  # not frozen: built per message, and frozen construction costs ~6x
class ParsedKeyExchange:
    """A key-exchange wrapper as received."""

    pk_id: int
    spk_id: int
    ik: bytes  #: the initiator's identity key in wire form
    ek: bytes  #: raw 32-byte X25519 base key (already checked)
    message: bytes  #: the embedded ratchet message, as received


class Flavour(ABC):
    """Parameters and wire codec of one protocol version."""

    #: short name: ``"omemo2"`` or ``"legacy"``
    name: str
    #: stable number used in serialized state (2 = OMEMO 2, 1 = legacy)
    code: int
    namespace: str
    x3dh_info: bytes
    root_info: bytes
    message_key_info: bytes
    mac_len: int

    # ---- keys ---------------------------------------------------------------------------

    @abstractmethod
    def encode_public(self, key: bytes) -> bytes:
        """Wire form of a raw X25519 public key (ratchet, base, signed and one-time prekeys)."""

    @abstractmethod
    def decode_public(self, data: bytes) -> bytes:
        """Raw X25519 key from its wire form; rejects malformed and low-order keys
        (:class:`~e2ee.errors.InvalidKey`)."""

    @abstractmethod
    def identity_to_x25519(self, ik: bytes) -> bytes:
        """The X25519 form of an identity key given in wire form (checked)."""

    @abstractmethod
    def own_identity(self, own: IdentityKeyPair) -> bytes:
        """Wire form of our own identity key."""

    @abstractmethod
    def sign_prekey(self, own: IdentityKeyPair, spk: bytes) -> bytes:
        """Signature of our identity key over the raw signed prekey ``spk``."""

    @abstractmethod
    def verify_prekey(self, ik: bytes, spk: bytes, signature: bytes) -> None:
        """Check a bundle's signed-prekey signature (identity key in wire form, raw spk);
        raises :class:`~e2ee.errors.InvalidSignature`."""

    @abstractmethod
    def associated_data(self, own_ik: bytes, peer_ik: bytes, initiator: bool) -> tuple[bytes, bytes]:
        """The ratchet's associated data for sending and for receiving, from the two
        identity keys in wire form."""

    # ---- messages -----------------------------------------------------------------------

    @abstractmethod
    def pack_message(self, dh_pub: bytes, n: int, pn: int, ciphertext: bytes, auth_key: bytes, ad: bytes) -> bytes:
        """Serialize and authenticate one ratchet message."""

    @abstractmethod
    def parse_message(self, data: bytes) -> ParsedMessage:
        """Split a received ratchet message; raises :class:`~e2ee.errors.PeerError`
        subclasses only."""

    @abstractmethod
    def pack_key_exchange(self, pk_id: int, spk_id: int, ik: bytes, ek: bytes, message: bytes) -> bytes:
        """Wrap a ratchet message in a key exchange (``ik`` in wire form, raw ``ek``)."""

    @abstractmethod
    def parse_key_exchange(self, data: bytes) -> ParsedKeyExchange:
        """Split a received key exchange; raises :class:`~e2ee.errors.PeerError` only."""

    def __repr__(self) -> str:
        return f"<Flavour {self.name}>"
