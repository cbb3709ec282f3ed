"""The encrypted local keystore: the engine's storage interface on SQLite, every record sealed
with XChaCha20-Poly1305 and bound to its place, lookup keys blinded, the data key wrapped under
an Argon2id passphrase key.  See :mod:`e2ee.keystore.store` and :mod:`e2ee.keystore.sealing`;
its errors are in :mod:`e2ee.keystore.errors` (re-exported here)."""

from __future__ import annotations

from .errors import (
    CorruptRecord,
    KeystoreCorrupt,
    KeystoreDowngrade,
    KeystoreLocked,
    RollbackDetected,
    UnsupportedKeystoreVersion,
    WrongPassphrase,
)
from .sealing import KdfParams
from .store import Keystore

__all__ = [
    "Keystore",
    "KdfParams",
    "WrongPassphrase",
    "KeystoreLocked",
    "KeystoreCorrupt",
    "CorruptRecord",
    "RollbackDetected",
    "KeystoreDowngrade",
    "UnsupportedKeystoreVersion",
]
