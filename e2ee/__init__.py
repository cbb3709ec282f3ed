"""xmpp-e2ee: an end-to-end encryption engine for XMPP (OMEMO 2 and legacy OMEMO).

The engine is synchronous and does no I/O.  What is public so far: the identity key pair, the
typed errors, and the session layer (:mod:`e2ee.session`) over our X3DH and Double Ratchet.
Raw primitives live in :mod:`e2ee.primitives` and :mod:`e2ee.xeddsa` (sharp tools).
"""

from __future__ import annotations

from .errors import (
    AuthenticationFailed,
    CorruptState,
    DecryptionFailed,
    DuplicateMessage,
    E2EEError,
    InvalidBundle,
    InvalidKey,
    InvalidSignature,
    MalformedMessage,
    MissingPreKey,
    NoSession,
    PeerError,
    ReusedBaseKey,
    StorageError,
    TooManySkippedKeys,
    UnknownPreKey,
    UnknownSignedPreKey,
    UnsupportedVersion,
    UsageError,
)
from .identity import IdentityKeyPair

__version__ = "0.1.0"

__all__ = [
    "AuthenticationFailed",
    "CorruptState",
    "DecryptionFailed",
    "DuplicateMessage",
    "E2EEError",
    "IdentityKeyPair",
    "InvalidBundle",
    "InvalidKey",
    "InvalidSignature",
    "MalformedMessage",
    "MissingPreKey",
    "NoSession",
    "PeerError",
    "ReusedBaseKey",
    "StorageError",
    "TooManySkippedKeys",
    "UnknownPreKey",
    "UnknownSignedPreKey",
    "UnsupportedVersion",
    "UsageError",
    "__version__",
]
