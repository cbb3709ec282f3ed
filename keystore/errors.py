"""Errors of the encrypted keystore: each a :class:`~e2ee.errors.StorageError` (the engine's
base for "the local store cannot be used as it is"), defined here beside the keystore."""

from __future__ import annotations

from e2ee.errors import StorageError

__all__ = [
    "WrongPassphrase",
    "KeystoreLocked",
    "KeystoreCorrupt",
    "CorruptRecord",
    "RollbackDetected",
    "KeystoreDowngrade",
    "UnsupportedKeystoreVersion",
]


class WrongPassphrase(StorageError):
    """The passphrase does not open this keystore."""


class KeystoreLocked(StorageError):
    """Another process has this keystore open."""


class KeystoreCorrupt(StorageError):
    """The keystore file is damaged (a modified, truncated or foreign file)."""


class CorruptRecord(KeystoreCorrupt):
    """One record failed authentication (modified, or moved from another row or table).  It is
    never treated as missing."""


class RollbackDetected(StorageError):
    """The keystore is older than its generation counter: an old copy was restored.  Sessions
    must be replaced and trust re-confirmed before sending (see ``Engine.after_rollback``)."""


class KeystoreDowngrade(StorageError):
    """The keystore header asks for key-derivation parameters below the floor."""


class UnsupportedKeystoreVersion(StorageError):
    """The keystore was written by a newer (or unknown) version of this software."""
