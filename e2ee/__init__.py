"""xmpp-e2ee: an end-to-end encryption engine for XMPP (OMEMO 2 and legacy OMEMO).

The engine is synchronous and does no I/O: :class:`Engine` takes device lists, bundles and
received ``<encrypted/>`` elements and returns elements to send, result values and *effects* for
the embedder (:mod:`e2ee.results`).  It stores through :class:`Storage` (:class:`MemoryStorage`
here; the encrypted keystore implements the same interface).  Raw primitives live in
:mod:`e2ee.primitives` and :mod:`e2ee.xeddsa` (sharp tools).
"""

from __future__ import annotations

from .errors import (
    AffixMismatch,
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
    RestrictedXml,
    ReusedBaseKey,
    SenderDistrusted,
    StorageError,
    TooManySkippedKeys,
    UnknownPreKey,
    UnknownSignedPreKey,
    UnsupportedVersion,
    UsageError,
)
from .engine import NAMESPACES, DeviceInfo, Engine, parse_device_list
from .identity import IdentityKeyPair
from .results import (
    Decrypted,
    DecryptResult,
    DeviceOutcome,
    Duplicate,
    Effect,
    EmptyMessage,
    EncryptResult,
    FetchBundle,
    FetchDeviceList,
    NotForThisDevice,
    Outcome,
    Publish,
    SendMessage,
    UntrustedIdentity,
)
from .storage import MemoryStorage, Storage
from .trust import TrustLevel, TrustPolicy, fingerprint

__version__ = "0.1.0"

__all__ = [
    "AffixMismatch",
    "AuthenticationFailed",
    "CorruptState",
    "DecryptResult",
    "Decrypted",
    "DecryptionFailed",
    "DeviceInfo",
    "DeviceOutcome",
    "Duplicate",
    "DuplicateMessage",
    "E2EEError",
    "Effect",
    "EmptyMessage",
    "EncryptResult",
    "Engine",
    "FetchBundle",
    "FetchDeviceList",
    "IdentityKeyPair",
    "InvalidBundle",
    "InvalidKey",
    "InvalidSignature",
    "MalformedMessage",
    "MemoryStorage",
    "MissingPreKey",
    "NAMESPACES",
    "NoSession",
    "NotForThisDevice",
    "Outcome",
    "PeerError",
    "Publish",
    "RestrictedXml",
    "ReusedBaseKey",
    "SendMessage",
    "SenderDistrusted",
    "Storage",
    "StorageError",
    "TooManySkippedKeys",
    "TrustLevel",
    "TrustPolicy",
    "UnknownPreKey",
    "UnknownSignedPreKey",
    "UnsupportedVersion",
    "UntrustedIdentity",
    "UsageError",
    "__version__",
    "fingerprint",
    "parse_device_list",
]
