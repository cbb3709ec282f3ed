"""Sessions with peer devices in storage: one record per (namespace, bare JID, device id) with
the current session and up to :data:`~e2ee.limits.MAX_ARCHIVED_SESSIONS` archived ones, and
every skipped message key as a record of its own.

Keeping skipped keys out of the session record means a decrypt reads and writes a small record
whatever the number of skipped keys held (catalogue R1/R3, bench ``reverse_1000``).  Their
first-in-first-out order is kept as *runs* (ratchet key, first counter, end) in the session
record; eviction walks the oldest run.

Decoded records are cached with the bytes they came from; a cached object is reused only when
the store still returns identical bytes, and the whole cache is dropped whenever an operation
fails (its objects may hold changes that were rolled back).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import records
from .errors import CorruptState
from .identity import IdentityKeyPair
from .limits import MAX_ARCHIVED_SESSIONS, MAX_SKIPPED_KEYS_PER_SESSION
from .ratchet import MemorySkippedKeys, SkipIndex
from .session import Session
from .storage import Storage
from .wire.state_pb2 import SessionRecord, SkipRun

__all__ = ["SessionStore", "SessionSet", "StoredSkippedKeys", "session_key"]

_VERSION = 1
_TABLE = "session"
_SKIPPED = "skipped"


def session_key(flavour: str, jid: str, device_id: int) -> str:
    """Storage key of a peer device's sessions (the JID last: it may contain anything)."""
    return f"{flavour}/{device_id}/{jid}"


@dataclass(slots=True)
class Run:
    """Skipped keys ``start .. stop - 1`` of ratchet key ``dh`` (some may be used already)."""

    dh: bytes
    start: int
    stop: int


class StoredSkippedKeys:
    """The :class:`~e2ee.ratchet.SkippedKeys` of one session, one storage record per key."""

    __slots__ = ("_storage", "_prefix", "runs", "live")

    def __init__(self, storage: Storage, uid: bytes, runs: list[Run], live: int) -> None:
        self._storage = storage
        self._prefix = uid.hex() + "/"
        #: oldest first
        self.runs = runs
        self.live = live

    def _key(self, index: SkipIndex) -> str:
        return f"{self._prefix}{index[0].hex()}/{index[1]}"

    def get(self, index: SkipIndex) -> bytes | None:
        return self._storage.get(_SKIPPED, self._key(index))

    def pop(self, index: SkipIndex) -> None:
        if self._storage.delete(_SKIPPED, self._key(index)):
            self.live -= 1

    def add(self, keys: list[tuple[SkipIndex, bytes]]) -> None:
        storage = self._storage
        runs = self.runs
        for index, mk in keys:
            dh, n = index
            storage.put(_SKIPPED, self._key(index), mk)
            last = runs[-1] if runs else None
            if last is not None and last.dh == dh and last.stop == n:
                last.stop = n + 1
            else:
                runs.append(Run(dh, n, n + 1))
        self.live += len(keys)
        while self.live > MAX_SKIPPED_KEYS_PER_SESSION:
            run = runs[0]
            if storage.delete(_SKIPPED, self._key((run.dh, run.start))):
                self.live -= 1
            run.start += 1
            if run.start == run.stop:
                runs.pop(0)

    def __len__(self) -> int:
        return self.live

    def clear(self) -> None:
        """Delete every key of this session (it is being dropped)."""
        for run in self.runs:
            for n in range(run.start, run.stop):
                self._storage.delete(_SKIPPED, self._key((run.dh, n)))
        self.runs = []
        self.live = 0


@dataclass(slots=True)
class Entry:
    session: Session
    uid: bytes
    created: float
    skipped: StoredSkippedKeys
    #: the keystore was restored from an older copy: this ratchet may have sent keys already
    quarantined: bool = False


class SessionSet:
    """The sessions with one peer device: ``entries[0]`` is current."""

    __slots__ = ("key", "entries")

    def __init__(self, key: str, entries: list[Entry]) -> None:
        self.key = key
        self.entries = entries

    @property
    def current(self) -> Entry | None:
        return self.entries[0] if self.entries else None


class SessionStore:
    """Loads and saves :class:`SessionSet` records."""

    def __init__(self, storage: Storage, own: IdentityKeyPair) -> None:
        self._storage = storage
        self._own = own
        self._cache: dict[str, tuple[bytes, SessionSet]] = {}

    def forget_cache(self) -> None:
        self._cache.clear()

    def load(self, key: str) -> SessionSet:
        raw = self._storage.get(_TABLE, key)
        if raw is None:
            return SessionSet(key, [])
        cached = self._cache.get(key)
        if cached is not None and cached[0] == raw:
            return cached[1]
        rec = records.load(raw, _VERSION, SessionRecord(), "session record")
        entries = []
        for st in rec.sessions:
            runs = [Run(r.dh_pub, r.start, r.stop) for r in st.runs]
            skipped = StoredSkippedKeys(self._storage, st.uid, runs, st.skipped)
            session = Session.from_state(st.state, self._own, skipped)
            entries.append(Entry(session, st.uid, st.created, skipped, st.quarantined))
        if not entries:
            raise CorruptState("empty session record")
        result = SessionSet(key, entries)
        self._cache[key] = (raw, result)
        return result

    def save(self, sessions: SessionSet) -> None:
        """Write the set back (dropping archived sessions beyond the limit)."""
        for dropped in sessions.entries[1 + MAX_ARCHIVED_SESSIONS :]:
            dropped.skipped.clear()
        del sessions.entries[1 + MAX_ARCHIVED_SESSIONS :]
        rec = SessionRecord()
        for e in sessions.entries:
            st = rec.sessions.add()
            e.session.fill_state(st.state)
            st.uid = e.uid
            st.created = e.created
            st.skipped = e.skipped.live
            if e.quarantined:
                st.quarantined = True
            for run in e.skipped.runs:
                st.runs.append(SkipRun(dh_pub=run.dh, start=run.start, stop=run.stop))
        raw = records.dump(_VERSION, rec)
        self._storage.put(_TABLE, sessions.key, raw)
        self._cache[sessions.key] = (raw, sessions)

    def new_entry(self, session: Session, created: float) -> Entry:
        """Wrap a fresh session (its uid is derived from its unique base key)."""
        uid = (b"i" if session.initiator else b"r") + session.ek[:15]
        skipped = StoredSkippedKeys(self._storage, uid, [], 0)
        # the ratchet of a fresh session holds no skipped keys yet (a first message may have
        # skipped some: move them into the store)
        mem = session.ratchet.skipped
        if isinstance(mem, MemorySkippedKeys) and mem:
            skipped.add(list(mem.items()))
        session.ratchet.skipped = skipped
        return Entry(session, uid, created, skipped)
