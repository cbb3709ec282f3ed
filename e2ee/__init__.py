"""xmpp-e2ee: an end-to-end encryption engine for XMPP (OMEMO 2 and legacy OMEMO, OpenPGP fallback).

The engine is synchronous and does no I/O: :class:`Engine` takes device lists, bundles and
received elements and returns elements to send, result values and *effects* for the embedder
(:mod:`e2ee.results`).  It stores through :class:`Storage` (:class:`MemoryStorage` here; the
encrypted keystore, :mod:`e2ee.keystore`, implements the same interface).

This namespace holds what an embedder uses; the rest lives next to its layer: every error in
:mod:`e2ee.errors` (the keystore's in :mod:`e2ee.keystore.errors`), device and key values in
:mod:`e2ee.keys`, the OpenPGP backend in :mod:`e2ee.openpgp`, the namespaces' backends in
:mod:`e2ee.registry`, raw primitives in :mod:`e2ee.primitives` and :mod:`e2ee.xeddsa` (sharp
tools).
"""

from __future__ import annotations

from .engine import NAMESPACES, Engine, parse_device_list
from .errors import E2EEError, NoEligibleDevices, PeerError, StorageError, UsageError
from .fallback import RecipientResult, Route, SendResult
from .openpgp.crypto import OpenPgpCrypto
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
    FetchPublicKey,
    FetchPublicKeys,
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
    # the engine and its storage
    "Engine",
    "MemoryStorage",
    "Storage",
    "NAMESPACES",
    "parse_device_list",
    "OpenPgpCrypto",
    "TrustLevel",
    "TrustPolicy",
    "fingerprint",
    # effects for the embedder to carry out
    "Effect",
    "Publish",
    "FetchDeviceList",
    "FetchBundle",
    "SendMessage",
    "FetchPublicKeys",
    "FetchPublicKey",
    # what a send returns
    "SendResult",
    "RecipientResult",
    "Route",
    "EncryptResult",
    "DeviceOutcome",
    "Outcome",
    # what a decryption returns
    "DecryptResult",
    "Decrypted",
    "EmptyMessage",
    "Duplicate",
    "NotForThisDevice",
    "UntrustedIdentity",
    # the roots of the errors (each error class: e2ee.errors)
    "E2EEError",
    "UsageError",
    "PeerError",
    "StorageError",
    "NoEligibleDevices",
    "__version__",
]
