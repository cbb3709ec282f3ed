"""A session with one peer device: X3DH to start it, the Double Ratchet to run it, and the
key-exchange rules of XEP-0384 (both versions):

* the initiator wraps every message in the key exchange until it has decrypted a message on
  the session (the peer may have missed the first ones);
* a key exchange whose base key equals the one of the existing session is a repetition: only
  its embedded message is decrypted, the session is not rebuilt (the one-time prekey is gone);
* a new key exchange builds a new session, which replaces the old one when it decrypts.

Nothing here touches storage: callers look up prekeys, persist :meth:`Session.to_bytes` and
delete used prekeys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import records, x3dh
from .errors import UnknownPreKey, UnknownSignedPreKey
from .flavour import Flavour, ParsedKeyExchange
from .identity import IdentityKeyPair
from .primitives import x25519_check_prime_order
from .ratchet import DoubleRatchet, SkippedKeys
from .rng import Random, system_random
from .wire.state_pb2 import SessionState

__all__ = ["PeerBundle", "Session", "initiate", "accept"]

#: Version byte in front of serialized session state.
SESSION_VERSION = 1


@dataclass(frozen=True, slots=True)
class PeerBundle:
    """The part of a peer device's bundle one key exchange uses; keys in wire form."""

    ik: bytes
    spk_id: int
    spk: bytes
    spk_signature: bytes
    pk_id: int
    pk: bytes


@dataclass(slots=True)
class Session:
    """State of one session; mutate only through :meth:`encrypt` and :meth:`decrypt`."""

    ratchet: DoubleRatchet
    initiator: bool
    confirmed: bool
    peer_ik: bytes
    pk_id: int
    spk_id: int
    ek: bytes
    own_ik: bytes = field(repr=False)  #: our identity key in wire form, for key exchanges

    @property
    def flavour(self) -> Flavour:
        return self.ratchet.flavour

    def encrypt(self, plaintext: bytes) -> tuple[bytes, bool]:
        """Encrypt; returns the wire bytes and whether they are a key exchange."""
        message = self.ratchet.encrypt(plaintext)
        if self.initiator and not self.confirmed:
            kex = self.flavour.pack_key_exchange(self.pk_id, self.spk_id, self.own_ik, self.ek, message)
            return kex, True
        return message, False

    def decrypt(self, data: bytes, rng: Random = system_random) -> bytes:
        """Decrypt a ratchet message (not a key exchange).  Atomic: on error nothing changes."""
        plaintext = self.ratchet.decrypt(data, rng)
        self.confirmed = True
        return plaintext

    def same_key_exchange(self, kex: ParsedKeyExchange) -> bool:
        """Whether ``kex`` is a repetition of the key exchange that built this session."""
        return (
            not self.initiator
            and kex.ek == self.ek
            and kex.ik == self.peer_ik
            and kex.pk_id == self.pk_id
            and kex.spk_id == self.spk_id
        )

    def to_state(self) -> SessionState:
        """The protobuf form (skipped keys included only when the ratchet holds them)."""
        st = SessionState()
        self.fill_state(st)
        return st

    def fill_state(self, st: SessionState) -> None:
        """Write the protobuf form into ``st`` (e.g. a field of a larger record)."""
        st.ratchet = self.ratchet.to_bytes()
        st.initiator = self.initiator
        st.confirmed = self.confirmed
        st.peer_ik = self.peer_ik
        st.pk_id = self.pk_id
        st.spk_id = self.spk_id
        st.ek = self.ek

    def to_bytes(self) -> bytes:
        return records.dump(SESSION_VERSION, self.to_state())

    @classmethod
    def from_bytes(cls, data: bytes, own: IdentityKeyPair) -> Session:
        st = records.load(data, SESSION_VERSION, SessionState(), "session state")
        return cls.from_state(st, own)

    @classmethod
    def from_state(cls, st: SessionState, own: IdentityKeyPair, skipped: SkippedKeys | None = None) -> Session:
        """Inverse of :meth:`to_state`; ``skipped`` as for :meth:`DoubleRatchet.from_bytes`."""
        ratchet = DoubleRatchet.from_bytes(st.ratchet, skipped)
        own_ik = ratchet.flavour.own_identity(own)
        return cls(ratchet, st.initiator, st.confirmed, st.peer_ik, st.pk_id, st.spk_id, st.ek, own_ik)


def initiate(
    flavour: Flavour,
    own: IdentityKeyPair,
    bundle: PeerBundle,
    rng: Random = system_random,
    *,
    signature_verified: bool = False,
) -> Session:
    """Start a session from a peer's bundle (active X3DH).  The first messages go out as key
    exchanges.  Raises :class:`~e2ee.errors.InvalidSignature` / :class:`~e2ee.errors.InvalidKey`."""
    ek_private = rng(32)
    start = x3dh.initiate(
        flavour,
        own,
        bundle.ik,
        bundle.spk,
        bundle.spk_signature,
        bundle.pk,
        ek_private,
        signature_verified=signature_verified,
    )
    res = start.result
    ratchet = DoubleRatchet.initiate(flavour, res.shared_secret, res.ad_send, res.ad_recv, start.spk, rng)
    own_ik = flavour.own_identity(own)
    return Session(ratchet, True, False, bundle.ik, bundle.pk_id, bundle.spk_id, start.ek_pub, own_ik)


def accept(
    flavour: Flavour,
    own: IdentityKeyPair,
    kex: ParsedKeyExchange,
    signed_prekey: Callable[[int], bytes | None],
    prekey: Callable[[int], bytes | None],
    rng: Random = system_random,
) -> tuple[Session, bytes]:
    """Build a session from a received key exchange (passive X3DH) and decrypt its message.

    ``signed_prekey(id)`` and ``prekey(id)`` return our private keys or None.  Returns the new
    session and the plaintext; the caller stores the session and deletes the one-time prekey
    only after this succeeded.  Raises :class:`~e2ee.errors.UnknownSignedPreKey`,
    :class:`~e2ee.errors.UnknownPreKey` or the ratchet's errors.
    """
    x25519_check_prime_order(kex.ek)  # before any lookup: a torsioned replay is no new key
    spk_private = signed_prekey(kex.spk_id)
    if spk_private is None:
        raise UnknownSignedPreKey(f"no signed prekey {kex.spk_id}")
    opk_private = prekey(kex.pk_id)
    if opk_private is None:
        raise UnknownPreKey(f"no prekey {kex.pk_id}")
    res = x3dh.respond(flavour, own, spk_private, opk_private, kex.ik, kex.ek)
    ratchet = DoubleRatchet.respond(flavour, res.shared_secret, res.ad_send, res.ad_recv, spk_private)
    plaintext = ratchet.decrypt(kex.message, rng)
    own_ik = flavour.own_identity(own)
    session = Session(ratchet, False, True, kex.ik, kex.pk_id, kex.spk_id, kex.ek, own_ik)
    return session, plaintext
