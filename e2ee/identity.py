"""A device's identity key pair.

The identity key is stored as an Ed25519 seed (as python-omemo does).  OMEMO 2 signs with
plain Ed25519 and shows the Ed25519 public key; legacy OMEMO shows the X25519 form and signs
with the Ed25519 sign bit copied into ``sig[63]``.  X25519 with the identity key uses the
scalar ``clamp(SHA-512(seed)[0:32])``, whose public key is the birational image of the
Ed25519 key, so one identity serves both protocol versions with the same fingerprint.

The X25519 form carries no sign, so XEdDSA verifiers (Converse.js's libomemo, libomemo-c)
rebuild the Ed25519 key with its sign bit clear.  :meth:`IdentityKeyPair.generate` therefore
only makes keys whose Ed25519 form has that bit clear (rejection sampling: half of all seeds),
and plain-Ed25519 and XEdDSA verifiers agree on every signature we make.  An older identity
with the bit set keeps working with libsignal-style and plain-Ed25519 peers but not with
XEdDSA-only ones: :attr:`IdentityKeyPair.sign_bit_set` tells, and only a new identity (a new
device) changes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UsageError
from .primitives import ed25519_public, ed25519_seed_to_x25519, x25519_public
from .rng import Random, system_random

__all__ = ["IdentityKeyPair"]


@dataclass(frozen=True, slots=True)
class IdentityKeyPair:
    """An identity key pair; build it with :meth:`from_seed` or :meth:`generate`."""

    seed: bytes = field(repr=False)
    ed25519_public: bytes
    x25519_private: bytes = field(repr=False)
    x25519_public: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> IdentityKeyPair:
        if len(seed) != 32:
            raise UsageError("an identity seed is 32 bytes")
        x_priv = ed25519_seed_to_x25519(seed)
        return cls(seed, ed25519_public(seed), x_priv, x25519_public(x_priv))

    @classmethod
    def generate(cls, rng: Random = system_random) -> IdentityKeyPair:
        """A fresh identity whose Ed25519 public key has the sign bit clear."""
        while True:
            pair = cls.from_seed(rng(32))
            if not pair.sign_bit_set:
                return pair

    @property
    def sign_bit_set(self) -> bool:
        """Whether the Ed25519 public key's sign bit (bit 7 of its last byte) is set: then
        XEdDSA-only verifiers (Converse.js) reject our signatures."""
        return bool(self.ed25519_public[31] & 0x80)
