"""The encrypted keystore: the engine's :class:`~e2ee.storage.Storage` on SQLite.

File layout (one SQLite database, WAL mode, ``secure_delete`` on):

* ``meta(name, value)``: ``header`` (magic, version, Argon2id parameters, salt, in clear: it is
  the associated data of the wrapped key), ``dek`` (the wrapped data key), ``generation`` (the
  commit counter with its MAC);
* ``records(k, v)``: ``k`` is the blinded lookup key (HMAC of table and key), ``v`` the sealed
  record (see :mod:`e2ee.keystore.sealing`).  Nothing else: no table names, JIDs or device ids.

Every engine operation is one SQLite transaction; it is committed before the engine hands out a
ciphertext.  By default commits are not fsync'ed (``synchronous=NORMAL`` in WAL mode): they
survive a crash of the process, not a power cut; ``sync=True`` syncs every commit.

A generation counter goes up with every commit and is also written after the commit to a small
file beside the database (``<path>.generation``, or ``generation_path``).  When the database is
behind that file, an older copy was restored: :class:`~e2ee.keystore.errors.RollbackDetected`.  Opening
with ``accept_rollback=True`` resets the file; the caller must then call
``Engine.after_rollback()`` so that no restored ratchet sends again.

A second process opening the same keystore gets :class:`~e2ee.keystore.errors.KeystoreLocked`.

Transactions nest: an inner transaction is a savepoint, so an operation that fails inside a
larger batch (:meth:`Keystore.transaction` around many engine operations, see
``Engine.batch``) undoes only its own writes; the batch commits once, at its end.

Limits: the passphrase and keys are Python ``bytes``/``str`` and cannot be wiped from memory;
decrypted records are cached in memory while the store is open.  While the store is open, the
sealed bytes of records overwritten or deleted remain in the WAL file until they are
overwritten: the keystore checkpoints every ``_WAL_PAGES`` pages (the frames SQLite really
wrote, read from its WAL index; SQLite's automatic checkpoint at twice that is the backstop), SQLite then reuses the WAL from
its start, and the file is cut back to ``_WAL_PAGES`` pages (``_WAL_KEEP`` bytes, 1 MiB) when it
is reused.  So the WAL file never holds more than about ``_WAL_PAGES`` pages of old versions,
but one may stay there up to two checkpoint intervals (until the next interval's frames
overwrite it) rather than one.  Keeping the file at that size instead of truncating it to
nothing makes a synced commit overwrite blocks in place rather than grow the file (a third
cheaper).  Without ``sync``, the WAL is synced on a thread shortly before each checkpoint
(:mod:`e2ee.keystore.walsync`), so that the checkpoint, which runs in the commit of some operation,
has little left to sync.  ``close()`` ends that thread, checkpoints and truncates the WAL.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import sqlite3
import struct
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from types import TracebackType

from e2ee.errors import E2EEError, UsageError
from e2ee.storage import TABLES, Storage

from .errors import (
    CorruptRecord,
    KeystoreCorrupt,
    KeystoreLocked,
    RollbackDetected,
)
from .sealing import Header, KdfParams, Keys, derive_keys, unwrap_dek, wrap_dek
from .walsync import WalSyncer

__all__ = ["Keystore", "KdfParams"]

_CACHE_SIZE = 8192
_MISS = object()
#: WAL pages between two checkpoints into the database (SQLite's default is 1000; 256 pages =
#: 1 MiB of window for old record versions at rest, at about 4% of encrypt time).
_WAL_PAGES = 256
#: The WAL file is cut back to this size when SQLite reuses it after a checkpoint (bytes: the
#: WAL header and ``_WAL_PAGES`` frames of 4 KiB pages).
_WAL_KEEP = 32 + _WAL_PAGES * (24 + 4096)
_GEN_LEN = 8 + 32
#: ``mxFrame`` of the WAL-index header at the start of the ``-shm`` file (SQLite's documented
#: file format, "The WAL-Index Format"): the number of valid frames in the WAL, native byte order
_MX_FRAME = struct.Struct("=I")
_MX_FRAME_OFFSET = 16
_SHM_HEADER = 136  #: bytes of the WAL-index header (two copies of 48 and the checkpoint info)


#: what sqlite3 raises for a damaged file: its own errors, and UnicodeDecodeError when a damaged
#: schema puts bytes that are not UTF-8 into an error message or a name
_DB_ERRORS = (sqlite3.Error, UnicodeDecodeError)


def _db_error(e: sqlite3.Error | UnicodeDecodeError) -> E2EEError:
    if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
        return KeystoreLocked("the keystore is in use by another process")
    if isinstance(e, UnicodeDecodeError):
        return KeystoreCorrupt("the keystore file is damaged (its schema holds text that is not UTF-8)")
    return KeystoreCorrupt(f"the keystore file is damaged ({e})")


class Keystore(Storage):
    """Open with :meth:`create` or :meth:`open`; close with :meth:`close` (or ``with``)."""

    def __init__(self) -> None:  # use create() / open()
        self._db: sqlite3.Connection | None = None
        self._keys: Keys | None = None
        self._dek: bytes | None = None
        self._lock_fd = -1
        self._gen_fd = -1
        self._generation = 0
        self._depth = 0
        #: record values by blinded key (None: no such record); the oldest is evicted first
        self._cache: dict[bytes, bytes | None] = {}
        self._blinds: dict[tuple[str, str], bytes] = {}
        self._gen_blind = b""  #: the blinded key of the generation row (fixed while open)
        self._sync = False
        self._pages = 0  #: WAL frames since the last checkpoint (SQLite's count; an estimate without it)
        self._shm: mmap.mmap | None = None  #: the WAL-index header, read-only
        self._shm_failed = False
        self._early_sync = False
        self._wal_syncer: WalSyncer | None = None
        self.path = Path()
        self._gen_path = Path()  #: the generation counter beside the database
        self.rolled_back = False

    def __repr__(self) -> str:
        return f"<Keystore {str(self.path)!r} {'open' if self._db else 'closed'}>"

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        passphrase: str,
        *,
        kdf: KdfParams = KdfParams(),  # noqa: B008 (a frozen dataclass: the shared default cannot change)
        sync: bool = False,
        generation_path: str | os.PathLike[str] | None = None,
    ) -> Keystore:
        """A new, empty keystore at ``path`` (which must not exist)."""
        kdf.check()
        path = Path(path)
        if path.exists():
            raise UsageError(f"{path} already exists")
        ks = cls()
        ks._attach(path, sync, generation_path)
        try:
            header = Header(kdf, os.urandom(16))
            dek = os.urandom(32)
            db = ks._conn()
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
            db.execute("CREATE TABLE records (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
            db.execute("INSERT INTO meta VALUES ('header', ?)", (header.to_bytes(),))
            db.execute("INSERT INTO meta VALUES ('dek', ?)", (wrap_dek(dek, passphrase, header, os.urandom(24)),))
            ks._keys = derive_keys(dek)
            ks._dek = dek
            ks._gen_blind = ks._keys.blind_key("meta", "generation")
            db.execute("INSERT INTO meta VALUES ('generation', ?)", (ks._k().generation_row(0),))
            db.execute("COMMIT")
            ks._write_sidecar(0)
        except BaseException:
            ks.close()
            for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), ks._gen_path):
                p.unlink(missing_ok=True)
            raise
        return ks

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        passphrase: str,
        *,
        accept_rollback: bool = False,
        sync: bool = False,
        generation_path: str | os.PathLike[str] | None = None,
    ) -> Keystore:
        """Open an existing keystore.  Raises :class:`~e2ee.keystore.errors.WrongPassphrase`,
        :class:`~e2ee.keystore.errors.KeystoreLocked`, :class:`~e2ee.keystore.errors.KeystoreCorrupt`,
        :class:`~e2ee.keystore.errors.KeystoreDowngrade`, :class:`~e2ee.keystore.errors.UnsupportedKeystoreVersion`
        or :class:`~e2ee.keystore.errors.RollbackDetected`."""
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"no keystore at {path}")
        ks = cls()
        try:
            ks._attach(path, sync, generation_path)
            db = ks._conn()
            try:
                rows = dict(db.execute("SELECT name, value FROM meta").fetchall())
            except _DB_ERRORS as e:
                raise _db_error(e) from None
            if "header" not in rows or "dek" not in rows:
                raise KeystoreCorrupt("keystore header missing")
            if not all(isinstance(v, bytes) for v in rows.values()):  # bytes(n) of an int: n zeros
                raise KeystoreCorrupt("keystore header is damaged")
            header = Header.from_bytes(bytes(rows["header"]))
            ks._dek = unwrap_dek(bytes(rows["dek"]), passphrase, header)
            ks._keys = derive_keys(ks._dek)
            ks._gen_blind = ks._keys.blind_key("meta", "generation")
            ks._generation = ks._read_generation(rows.get("generation"))
            ks._check_rollback(accept_rollback)
        except BaseException:
            ks.close()
            raise
        return ks

    def _attach(self, path: Path, sync: bool, generation_path: str | os.PathLike[str] | None) -> None:
        self.path = path
        self._gen_path = Path(generation_path) if generation_path is not None else Path(f"{path}.generation")
        lock_path = Path(f"{path}.lock")
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise KeystoreLocked(f"{path} is in use by another process") from None
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except _DB_ERRORS as e:
            raise _db_error(e) from None
        self._db = db  # closed by close() whatever fails below
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if sync else 'NORMAL'}")
            db.execute("PRAGMA secure_delete=ON")
            # Old versions of records (overwritten sessions, deleted keys) live in the WAL until a
            # checkpoint: checkpoint often, and keep the WAL file at one interval's size, so that
            # the window in which they can be found at rest stays small (catalogue K6).  The
            # keystore checkpoints itself every _WAL_PAGES pages (_after_commit); SQLite's
            # automatic checkpoint stays as a backstop should that count fall behind.
            db.execute(f"PRAGMA wal_autocheckpoint={2 * _WAL_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={_WAL_KEEP}")
        except _DB_ERRORS as e:
            raise _db_error(e) from None
        os.chmod(path, 0o600)
        self._db = db
        self._sync = sync

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise UsageError("the keystore is closed")
        return self._db

    def _k(self) -> Keys:
        if self._keys is None:
            raise UsageError("the keystore is closed")
        return self._keys

    def close(self) -> None:
        """Checkpoint the WAL into the database (so that deleted records leave no copy in it)
        and release the file."""
        if self._wal_syncer is not None:
            self._wal_syncer.stop()
            self._wal_syncer = None
        if self._shm is not None:
            self._shm.close()
            self._shm = None
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except _DB_ERRORS:
                pass
            self._db.close()
            self._db = None
        for fd in (self._gen_fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._gen_fd = self._lock_fd = -1
        self._keys = None
        self._dek = None
        self._cache.clear()
        self._blinds.clear()

    def __enter__(self) -> Keystore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ generation counter

    def _read_generation(self, row: object) -> int:
        if not isinstance(row, bytes):
            raise KeystoreCorrupt("generation record missing")
        try:
            return self._k().open_generation_row(row, self._gen_blind)
        except CorruptRecord:
            raise KeystoreCorrupt("generation record failed authentication") from None

    def _write_generation(self, generation: int) -> None:
        # UPDATE, not INSERT OR REPLACE: the row keeps its rowid, so only the meta table's page
        # is written, not also the page of its primary-key index (one WAL frame less per commit)
        row = self._k().generation_row(generation)
        cur = self._conn().execute("UPDATE meta SET value = ? WHERE name = 'generation'", (row,))
        if cur.rowcount != 1:
            raise KeystoreCorrupt("generation record missing")
        self._generation = generation

    def _write_sidecar(self, generation: int) -> None:
        if self._gen_fd < 0:
            self._gen_fd = os.open(self._gen_path, os.O_RDWR | os.O_CREAT, 0o600)
        data = generation.to_bytes(8, "big") + self._k().generation_mac(generation)
        os.pwrite(self._gen_fd, data, 0)

    def _check_rollback(self, accept: bool) -> None:
        path = self._gen_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        if len(data) == _GEN_LEN:
            recorded = int.from_bytes(data[:8], "big")
            if self._k().generation_mac(recorded) != data[8:]:
                raise KeystoreCorrupt(f"{path} does not belong to this keystore")
            if recorded > self._generation:
                if not accept:
                    raise RollbackDetected(
                        f"this keystore is older than its last use (generation {self._generation} < {recorded}):"
                        " an old copy was restored"
                    )
                self.rolled_back = True
        elif data:
            raise KeystoreCorrupt(f"{path} is damaged")
        elif self._generation > 0:
            # the file is written at creation, before the first commit: a database that has
            # committed without it is a copy restored without its generation file
            if not accept:
                raise RollbackDetected(
                    f"the generation file {path} is missing (generation {self._generation}):"
                    " this may be an old copy restored without it"
                )
            self.rolled_back = True
        self._write_sidecar(self._generation)

    @property
    def generation(self) -> int:
        return self._generation

    def _wal_frames(self) -> int | None:
        """The frames in the WAL now (``mxFrame`` of the WAL index, which SQLite keeps in the
        ``-shm`` file it maps into memory; read through a read-only map of the same file, no
        system call), or None when that file cannot be mapped."""
        shm = self._shm
        if shm is None:
            if self._shm_failed:
                return None
            try:
                fd = os.open(f"{self.path}-shm", os.O_RDONLY)
                try:
                    shm = self._shm = mmap.mmap(fd, _SHM_HEADER, mmap.MAP_SHARED, mmap.PROT_READ)
                finally:
                    os.close(fd)
            except (OSError, ValueError):
                self._shm_failed = True
                return None
        frames: int = _MX_FRAME.unpack_from(shm, _MX_FRAME_OFFSET)[0]
        return frames

    def _after_commit(self) -> None:
        """Count the WAL frames really written since the last checkpoint (SQLite's own count,
        :meth:`_wal_frames`; without it an estimate: one page per record and per commit).
        Every ``_WAL_PAGES`` frames, checkpoint (what SQLite's automatic checkpoint did, counted
        here so that the early sync below is in step with it); at seven eighths of the interval,
        have the WAL synced ahead of the checkpoint on a thread (keystore/walsync.py), so that
        the checkpoint finds little left to sync.  Not needed when every commit is synced."""
        frames = self._wal_frames()
        if frames is None:
            self._pages += 1
        else:
            self._pages = frames
        if self._pages >= _WAL_PAGES:
            self._pages = 0
            self._early_sync = False
            try:
                self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except _DB_ERRORS:
                pass  # SQLite's own checkpoint (every 2 intervals) is the fallback
        elif self._pages >= _WAL_PAGES * 7 // 8 and not self._early_sync and not self._sync:
            self._early_sync = True
            if self._wal_syncer is None:
                self._wal_syncer = WalSyncer(Path(f"{self.path}-wal"))
            self._wal_syncer.request()

    # ------------------------------------------------------------------ Storage

    def _check_table(self, table: str) -> None:
        if table not in TABLES:
            raise UsageError(f"unknown table {table!r}")

    def _blind(self, table: str, key: str) -> bytes:
        """The blinded key, memoised (an HMAC per lookup otherwise)."""
        blind = self._blinds.get((table, key))
        if blind is None:
            blind = self._k().blind_key(table, key)
            if len(self._blinds) > _CACHE_SIZE:
                self._blinds.clear()
            self._blinds[(table, key)] = blind
        return blind

    def get(self, table: str, key: str) -> bytes | None:
        blind = self._blinds.get((table, key))  # memoised: the table was checked then
        if blind is None:
            self._check_table(table)
            blind = self._blind(table, key)
        hit = self._cache.get(blind, _MISS)  # (emptied by close(): a closed store misses and raises below)
        if hit is not _MISS:
            return hit  # type: ignore[return-value]
        keys = self._k()
        try:
            row = self._conn().execute("SELECT v FROM records WHERE k = ?", (blind,)).fetchone()
        except _DB_ERRORS as e:
            raise _db_error(e) from None
        value: bytes | None = None
        if row is not None:
            entry = keys.open(blind, bytes(row[0]))
            if entry[0] != table or entry[1] != key:  # a blind-key collision or a forged row
                raise CorruptRecord("a keystore record is in the wrong place")
            value = entry[2]
        self._remember(blind, value)
        return value

    def _remember(self, blind: bytes, value: bytes | None) -> None:
        cache = self._cache
        cache[blind] = value
        if len(cache) > _CACHE_SIZE:
            del cache[next(iter(cache))]

    def put(self, table: str, key: str, value: bytes) -> None:
        self._check_table(table)
        if self._depth == 0:  # on its own: one transaction (inside one, a statement is atomic)
            with self.transaction():
                return self._put(table, key, value)
        self._put(table, key, value)

    def _put(self, table: str, key: str, value: bytes) -> None:
        blind = self._blind(table, key)
        value = bytes(value)
        sealed = self._k().seal(blind, table, key, value, os.urandom(24))
        self._pages += 1 + (len(sealed) >> 12)
        try:
            self._conn().execute("INSERT OR REPLACE INTO records VALUES (?, ?)", (blind, sealed))
        except _DB_ERRORS as e:
            raise _db_error(e) from None
        self._remember(blind, value)

    def delete(self, table: str, key: str) -> bool:
        self._check_table(table)
        if self._depth == 0:
            with self.transaction():
                return self._delete(table, key)
        return self._delete(table, key)

    def _delete(self, table: str, key: str) -> bool:
        blind = self._blind(table, key)
        self._pages += 1
        try:
            cur = self._conn().execute("DELETE FROM records WHERE k = ?", (blind,))
        except _DB_ERRORS as e:
            raise _db_error(e) from None
        self._remember(blind, None)
        return cur.rowcount > 0

    def keys(self, table: str) -> list[str]:
        """Every key of ``table`` (decrypts every record: meant for rare listings)."""
        self._check_table(table)
        keys = self._k()
        out = []
        try:
            rows = self._conn().execute("SELECT k, v FROM records").fetchall()
        except _DB_ERRORS as e:
            raise _db_error(e) from None
        for k, v in rows:
            t, key, _value = keys.open(bytes(k), bytes(v))
            if keys.blind_key(t, key) != bytes(k):
                raise CorruptRecord("a keystore record is in the wrong place")
            if t == table:
                out.append(key)
        return out

    def transaction(self) -> ContextManager[None]:
        return _Transaction(self)

    # ------------------------------------------------------------------ passphrase

    def change_passphrase(self, new_passphrase: str, kdf: KdfParams | None = None) -> None:
        """Rewrap the data key under ``new_passphrase`` (fresh salt; ``kdf`` or the current
        parameters).  One transaction: either passphrase opens the store afterwards, never
        neither.  The records are not touched."""
        db = self._conn()
        header_now = Header.from_bytes(bytes(db.execute("SELECT value FROM meta WHERE name='header'").fetchone()[0]))
        params = kdf or header_now.kdf
        params.check()
        header = Header(params, os.urandom(16))
        dek = self._dek_for_rewrap()
        wrapped = wrap_dek(dek, new_passphrase, header, os.urandom(24))
        with self.transaction():
            db.execute("UPDATE meta SET value = ? WHERE name = 'header'", (header.to_bytes(),))
            db.execute("UPDATE meta SET value = ? WHERE name = 'dek'", (wrapped,))

    def _dek_for_rewrap(self) -> bytes:
        if self._dek is None:
            raise UsageError("the keystore is closed")
        return self._dek


class _Transaction:
    """Outermost transaction: BEGIN IMMEDIATE ... bump the generation, COMMIT, then record the
    generation beside the file; on an exception: ROLLBACK.  A nested one is a savepoint: on an
    exception it undoes its own writes (ROLLBACK TO) and the enclosing transaction goes on.
    Whenever writes are undone, the cache of decrypted records is dropped."""

    __slots__ = ("_ks", "_savepoint")

    def __init__(self, ks: Keystore) -> None:
        self._ks = ks
        self._savepoint = ""  #: empty for the outermost transaction

    def __enter__(self) -> None:
        ks = self._ks
        try:
            if ks._depth == 0:
                ks._conn().execute("BEGIN IMMEDIATE")
            else:
                self._savepoint = f"s{ks._depth}"
                ks._conn().execute(f"SAVEPOINT {self._savepoint}")
        except _DB_ERRORS as e:
            raise _db_error(e) from None
        ks._depth += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ks = self._ks
        ks._depth -= 1
        db = ks._conn()
        if self._savepoint:
            try:
                if exc_type is not None:
                    ks._cache.clear()
                    db.execute(f"ROLLBACK TO {self._savepoint}")
                db.execute(f"RELEASE {self._savepoint}")
            except _DB_ERRORS as e:
                if exc_type is None:
                    raise _db_error(e) from None
            return
        if exc_type is None:
            generation = ks._generation
            try:
                ks._write_generation(generation + 1)
                db.execute("COMMIT")
            except BaseException as e:
                try:
                    db.execute("ROLLBACK")
                except _DB_ERRORS:
                    pass
                ks._cache.clear()
                ks._generation = generation
                if isinstance(e, _DB_ERRORS):
                    raise _db_error(e) from None
                raise
            ks._write_sidecar(ks._generation)
            ks._after_commit()
        else:
            try:
                db.execute("ROLLBACK")
            except _DB_ERRORS:
                pass
            ks._cache.clear()
