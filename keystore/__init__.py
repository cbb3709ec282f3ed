"""The encrypted local keystore: the engine's storage interface on SQLite, every record sealed
with XChaCha20-Poly1305 and bound to its place, lookup keys blinded, the data key wrapped under
an Argon2id passphrase key.  See :mod:`e2ee.keystore.store` and :mod:`e2ee.keystore.sealing`."""

from __future__ import annotations

from .sealing import KdfParams
from .store import Keystore

__all__ = ["Keystore", "KdfParams"]
