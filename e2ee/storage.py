"""The storage interface the engine reads and writes through, and an in-memory implementation.

The engine keeps everything it must remember (own keys, sessions, skipped message keys,
device lists, bundles, trust decisions) as opaque byte records in a handful of tables, each
record under a text key.  A backend only stores bytes; it never interprets them, so the
encrypted keystore (``keystore/``) and :class:`MemoryStorage` behave the same way and pass the
same conformance suite (``tests/storage_conformance.py``).

Contract (what the conformance suite checks):

* ``get`` returns exactly the bytes last ``put`` under (table, key), or None.
* ``delete`` returns whether a record was there.
* ``keys(table)`` lists the keys of one table (order unspecified).
* ``transaction()`` is a context manager: when its block raises, every write made inside it is
  undone, so the stored state is byte-identical to what it was before; when the block returns,
  the writes are durable (for a persistent backend: committed) before ``__exit__`` returns.
  Transactions may nest; only the outermost one commits.  A nested transaction whose block
  raises undoes its own writes only (a savepoint): the enclosing one goes on and may still
  commit.  So a caller can group many engine operations into one commit (``Engine.batch``)
  and an operation that fails inside the group still leaves nothing behind.
* Tables and keys are short text; values are bytes of any length.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager as ContextManager

from .errors import UsageError

__all__ = ["Storage", "MemoryStorage", "TABLES"]

#: The tables the engine uses.  A backend may rely on this list (e.g. to create them up front).
TABLES: tuple[str, ...] = (
    "own",  # identity, device id, signed prekeys, one-time prekeys, own device list state
    "session",  # per (namespace, bare JID, device id): current and archived sessions
    "skipped",  # skipped message keys, one record each
    "device",  # per bare JID: device lists seen, per-device identity keys and labels
    "bundle",  # per (namespace, bare JID, device id): the last bundle fetched
    "trust",  # per bare JID: trust level of each identity key (and OpenPGP fingerprint)
    "openpgp",  # per bare JID: announced and fetched OpenPGP keys; "seen/...": replay memory
)


class Storage(ABC):
    """A transactional store of byte records in named tables."""

    @abstractmethod
    def get(self, table: str, key: str) -> bytes | None: ...

    @abstractmethod
    def put(self, table: str, key: str, value: bytes) -> None: ...

    @abstractmethod
    def delete(self, table: str, key: str) -> bool: ...

    @abstractmethod
    def keys(self, table: str) -> list[str]: ...

    @abstractmethod
    def transaction(self) -> ContextManager[None]:
        """Group the writes of one engine operation: all or nothing."""


class MemoryStorage(Storage):
    """Records in dictionaries.  Rollback replays an undo journal, so a failed operation leaves
    the exact previous bytes."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, bytes]] = {t: {} for t in TABLES}
        self._journal: list[tuple[dict[str, bytes], str, bytes | None]] | None = None

    def _table(self, table: str) -> dict[str, bytes]:
        t = self._tables.get(table)
        if t is None:
            raise UsageError(f"unknown table {table!r}")
        return t

    def get(self, table: str, key: str) -> bytes | None:
        return self._table(table).get(key)

    def put(self, table: str, key: str, value: bytes) -> None:
        t = self._table(table)
        if self._journal is not None:
            self._journal.append((t, key, t.get(key)))
        t[key] = bytes(value)

    def delete(self, table: str, key: str) -> bool:
        t = self._table(table)
        old = t.pop(key, None)
        if old is not None and self._journal is not None:
            self._journal.append((t, key, old))
        return old is not None

    def keys(self, table: str) -> list[str]:
        return list(self._table(table))

    def transaction(self) -> ContextManager[None]:
        return _MemoryTransaction(self)

    def snapshot(self) -> dict[str, dict[str, bytes]]:
        """A deep copy of every table (tests compare snapshots byte for byte)."""
        return {name: dict(t) for name, t in self._tables.items()}


class _MemoryTransaction:
    """Context manager of :meth:`MemoryStorage.transaction` (a class: cheaper than a generator
    on the hot path)."""

    __slots__ = ("_store", "_mark")

    def __init__(self, store: MemoryStorage) -> None:
        self._store = store
        self._mark = -1  #: the journal length at a nested transaction's start (-1: outermost)

    def __enter__(self) -> None:
        store = self._store
        if store._journal is None:  # the outermost transaction decides
            store._journal = []
        else:
            self._mark = len(store._journal)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        store = self._store
        journal = store._journal
        assert journal is not None
        mark = self._mark
        if mark < 0:
            store._journal = None
            mark = 0
        if exc_type is not None and len(journal) > mark:
            for t, key, old in reversed(journal[mark:]):
                if old is None:
                    t.pop(key, None)
                else:
                    t[key] = old
            del journal[mark:]
