"""X3DH key agreement (Signal, Revision 1) as OMEMO uses it: a one-time prekey is mandatory.

``SK = HKDF(0xFF*32 || DH1 || DH2 || DH3 || DH4, salt = 0x00*32, info, 32)`` with
``DH1 = DH(IK_A, SPK_B)``, ``DH2 = DH(EK_A, IK_B)``, ``DH3 = DH(EK_A, SPK_B)``,
``DH4 = DH(EK_A, OPK_B)``; identity keys in their X25519 form.  Keys arrive in their wire form
(see :class:`~e2ee.flavour.Flavour`) and are checked before any DH.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .flavour import Flavour
from .identity import IdentityKeyPair
from .primitives import hkdf_sha256, x25519, x25519_public

__all__ = ["X3DHResult", "Initiation", "initiate", "respond"]

_F: Final = b"\xff" * 32
_SALT: Final = bytes(32)


@dataclass(frozen=True, slots=True)
class X3DHResult:
    """The outcome of X3DH for one side."""

    shared_secret: bytes = field(repr=False)
    ad_send: bytes  #: associated data of messages this side sends
    ad_recv: bytes  #: associated data of messages this side receives
    peer_ik_x25519: bytes  #: the peer's identity key in X25519 form (the trust key)


@dataclass(frozen=True, slots=True)
class Initiation:
    """What the initiator keeps besides the result: the key-exchange header values."""

    result: X3DHResult
    ek_pub: bytes  #: raw X25519 base key, to put in the key exchange
    spk: bytes  #: the responder's raw signed prekey (the initiator's first DH ratchet peer key)


def _kdf(flavour: Flavour, dh1: bytes, dh2: bytes, dh3: bytes, dh4: bytes) -> bytes:
    return hkdf_sha256(_F + dh1 + dh2 + dh3 + dh4, _SALT, flavour.x3dh_info, 32)


def initiate(
    flavour: Flavour,
    own: IdentityKeyPair,
    peer_ik: bytes,
    spk: bytes,
    spk_signature: bytes,
    opk: bytes,
    ek_private: bytes,
    *,
    signature_verified: bool = False,
) -> Initiation:
    """Active side: verify the signed prekey, then agree on a secret with the peer's bundle.

    ``peer_ik``, ``spk`` and ``opk`` are in wire form; ``ek_private`` is 32 fresh random bytes.
    ``signature_verified``: the caller verified this exact bundle's signature already (the
    engine does when the bundle arrives and stores only verified bundles).
    Raises :class:`~e2ee.errors.InvalidSignature` or :class:`~e2ee.errors.InvalidKey` before
    any secret is derived.
    """
    spk_raw = flavour.decode_public(spk)
    if not signature_verified:
        flavour.verify_prekey(peer_ik, spk_raw, spk_signature)
    opk_raw = flavour.decode_public(opk)
    peer_x = flavour.identity_to_x25519(peer_ik)
    dh1 = x25519(own.x25519_private, spk_raw)
    dh2 = x25519(ek_private, peer_x)
    dh3 = x25519(ek_private, spk_raw)
    dh4 = x25519(ek_private, opk_raw)
    own_ik = flavour.own_identity(own)
    ad_send, ad_recv = flavour.associated_data(own_ik, peer_ik, initiator=True)
    result = X3DHResult(_kdf(flavour, dh1, dh2, dh3, dh4), ad_send, ad_recv, peer_x)
    return Initiation(result, x25519_public(ek_private), spk_raw)


def respond(
    flavour: Flavour,
    own: IdentityKeyPair,
    spk_private: bytes,
    opk_private: bytes,
    peer_ik: bytes,
    ek: bytes,
) -> X3DHResult:
    """Passive side: the same secret from our signed and one-time prekeys and the
    initiator's identity key (wire form) and raw base key ``ek`` (already checked by the
    key-exchange parser)."""
    peer_x = flavour.identity_to_x25519(peer_ik)
    dh1 = x25519(spk_private, peer_x)
    dh2 = x25519(own.x25519_private, ek)
    dh3 = x25519(spk_private, ek)
    dh4 = x25519(opk_private, ek)
    own_ik = flavour.own_identity(own)
    ad_send, ad_recv = flavour.associated_data(own_ik, peer_ik, initiator=False)
    return X3DHResult(_kdf(flavour, dh1, dh2, dh3, dh4), ad_send, ad_recv, peer_x)
