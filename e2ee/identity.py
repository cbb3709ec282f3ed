"""A device's identity key pair.

The identity key is stored as an Ed25519 seed (as python-omemo does).  OMEMO 2 signs with
plain Ed25519 and shows the Ed25519 public key; legacy OMEMO shows the X25519 form and signs
with the Ed25519 sign bit copied into ``sig[63]``.  X25519 with the identity key uses the
scalar ``clamp(SHA-512(seed)[0:32])``, whose public key is the birational image of the
Ed25519 key, so one identity serves both protocol versions with the same fingerprint.
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
        return cls.from_seed(rng(32))
