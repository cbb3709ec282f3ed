"""The encrypted keystore: the storage conformance suite, typed errors for every kind of damage,
passphrase change, locking, and rollback detection."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2ee.keystore import KdfParams, Keystore
from e2ee.keystore.errors import (
    CorruptRecord,
    KeystoreCorrupt,
    KeystoreDowngrade,
    KeystoreLocked,
    RollbackDetected,
    UnsupportedKeystoreVersion,
    WrongPassphrase,
)
from e2ee.storage import Storage

from .storage_conformance import CONFORMANCE
from .support import sql

PW = "correct horse battery staple"
FAST = KdfParams.floor()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[[], Storage]]:
    opened: list[Keystore] = []

    def factory() -> Storage:
        ks = Keystore.create(tmp_path / f"ks{len(opened)}.db", PW, kdf=FAST)
        opened.append(ks)
        return ks

    yield factory
    for ks in opened:
        ks.close()


@pytest.mark.parametrize("check", CONFORMANCE, ids=lambda f: f.__name__)
def test_keystore_conformance(check: Callable[[Callable[[], Storage]], None], make: Callable[[], Storage]) -> None:
    check(make)


def _store(tmp_path: Path) -> Path:
    path = tmp_path / "ks.db"
    with Keystore.create(path, PW, kdf=FAST) as ks:
        ks.put("session", "omemo2/1234/bob@example.net", b"session bytes")
        ks.put("trust", "mallory@evil.example", b"mallory trust")
        ks.put("trust", "alice@example.org", b"alice trust")
    return path


def test_records_survive_reopening(tmp_path: Path) -> None:
    path = _store(tmp_path)
    with Keystore.open(path, PW) as ks:
        assert ks.get("session", "omemo2/1234/bob@example.net") == b"session bytes"
        assert sorted(ks.keys("trust")) == ["alice@example.org", "mallory@evil.example"]


def test_wrong_passphrase(tmp_path: Path) -> None:
    path = _store(tmp_path)
    before = path.read_bytes()
    with pytest.raises(WrongPassphrase):
        Keystore.open(path, "not it")
    assert path.read_bytes() == before  # nothing was written
    with Keystore.open(path, PW) as ks:  # still opens
        assert ks.get("trust", "alice@example.org") == b"alice trust"


def test_header_edits(tmp_path: Path) -> None:
    path = _store(tmp_path)
    (header,) = sql(path, "SELECT value FROM meta WHERE name='header'")[0]
    h = bytearray(header)  # type: ignore[arg-type]
    # magic 6, version 1, kdf 1, t 4, m 4, p 1, salt 16
    cases = {
        "lower passes": (slice(8, 12), (1).to_bytes(4, "big"), KeystoreDowngrade),
        "lower memory": (slice(12, 16), (8 * 1024).to_bytes(4, "big"), KeystoreDowngrade),
        "other salt": (slice(17, 33), bytes(16), WrongPassphrase),
        "more passes": (slice(8, 12), (5).to_bytes(4, "big"), WrongPassphrase),
        "version": (slice(6, 7), b"\x09", UnsupportedKeystoreVersion),
        "magic": (slice(0, 6), b"XXXXXX", KeystoreCorrupt),
    }
    for name, (where, value, error) in cases.items():
        edited = bytearray(h)
        edited[where] = value
        sql(path, "UPDATE meta SET value=? WHERE name='header'", bytes(edited))
        with pytest.raises(error):
            Keystore.open(path, PW)
    sql(path, "UPDATE meta SET value=? WHERE name='header'", bytes(h))
    Keystore.open(path, PW).close()


def test_flipped_byte_in_a_record_is_corrupt_record_and_other_rows_stay_usable(tmp_path: Path) -> None:
    path = _store(tmp_path)
    rows = sql(path, "SELECT k, v FROM records")
    assert len(rows) == 3
    for i in range(0, len(rows[0][1]), 7):  # type: ignore[arg-type]
        for k, v in rows:
            flipped = bytearray(v)  # type: ignore[arg-type]
            flipped[i % len(flipped)] ^= 0x01
            sql(path, "UPDATE records SET v=? WHERE k=?", bytes(flipped), k)
            with Keystore.open(path, PW) as ks:
                values = []
                for table, key in (
                    ("session", "omemo2/1234/bob@example.net"),
                    ("trust", "mallory@evil.example"),
                    ("trust", "alice@example.org"),
                ):
                    try:
                        values.append(ks.get(table, key))
                    except CorruptRecord:
                        values.append("corrupt")
                assert values.count("corrupt") == 1 and None not in values
            sql(path, "UPDATE records SET v=? WHERE k=?", v, k)


def test_a_record_copied_into_another_row_is_corrupt_not_missing(tmp_path: Path) -> None:
    path = _store(tmp_path)
    with Keystore.open(path, PW) as ks:
        keys = ks._k()  # which row is whose (the file does not say)
        mallory = keys.blind_key("trust", "mallory@evil.example")
        alice = keys.blind_key("trust", "alice@example.org")
        session = keys.blind_key("session", "omemo2/1234/bob@example.net")
    (mallory_v,) = sql(path, "SELECT v FROM records WHERE k=?", mallory)[0]
    sql(path, "UPDATE records SET v=? WHERE k=?", mallory_v, alice)
    sql(path, "INSERT OR REPLACE INTO records VALUES (?, ?)", session, mallory_v)  # across tables
    with Keystore.open(path, PW) as ks:
        with pytest.raises(CorruptRecord):
            ks.get("trust", "alice@example.org")
        with pytest.raises(CorruptRecord):
            ks.get("session", "omemo2/1234/bob@example.net")
        assert ks.get("trust", "mallory@evil.example") == b"mallory trust"


@pytest.mark.parametrize("keep", [0, 100, 1000, 4096, 8192])
def test_truncated_file_is_keystore_corrupt(tmp_path: Path, keep: int) -> None:
    path = _store(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(KeystoreCorrupt):
        with Keystore.open(path, PW) as ks:
            ks.get("trust", "alice@example.org")
            ks.keys("session")


def test_foreign_file_is_keystore_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(KeystoreCorrupt):
        Keystore.open(path, PW)


def test_restored_older_copy_is_rollback_detected(tmp_path: Path) -> None:
    path = _store(tmp_path)
    shutil.copy(path, tmp_path / "backup.db")
    with Keystore.open(path, PW) as ks:
        ks.put("session", "omemo2/1234/bob@example.net", b"newer")
    shutil.copy(tmp_path / "backup.db", path)  # the sidecar generation stays
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(RollbackDetected):
        Keystore.open(path, PW)
    with Keystore.open(path, PW, accept_rollback=True) as ks:
        assert ks.rolled_back
        assert ks.get("session", "omemo2/1234/bob@example.net") == b"session bytes"
    with Keystore.open(path, PW) as ks:  # accepted once: the counter follows the file again
        assert not ks.rolled_back


def test_second_opener_gets_keystore_locked(tmp_path: Path) -> None:
    path = _store(tmp_path)
    with Keystore.open(path, PW):
        with pytest.raises(KeystoreLocked):
            Keystore.open(path, PW)


def test_second_process_gets_keystore_locked(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _store(tmp_path)
    code = (
        "import sys; from e2ee.keystore import Keystore; from e2ee.keystore.errors import KeystoreLocked\n"
        f"try:\n    Keystore.open({str(path)!r}, {PW!r})\nexcept KeystoreLocked:\n    sys.exit(7)\n"
    )
    with Keystore.open(path, PW):
        proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
    assert proc.returncode == 7


def test_passphrase_change_rewraps_the_key_only(tmp_path: Path) -> None:
    path = _store(tmp_path)
    records_before = sql(path, "SELECT k, v FROM records ORDER BY k")
    with Keystore.open(path, PW) as ks:
        ks.change_passphrase("a new passphrase")
    with pytest.raises(WrongPassphrase):
        Keystore.open(path, PW)
    with Keystore.open(path, "a new passphrase") as ks:
        assert ks.get("trust", "alice@example.org") == b"alice trust"
    assert sql(path, "SELECT k, v FROM records ORDER BY k") == records_before


def test_kdf_floor_enforced_on_create() -> None:
    with pytest.raises(KeystoreDowngrade):
        Keystore.create("/nonexistent/x.db", PW, kdf=KdfParams(1, 64 * 1024))
    with pytest.raises(KeystoreDowngrade):
        Keystore.create("/nonexistent/x.db", PW, kdf=KdfParams(3, 8 * 1024))


def test_default_kdf_is_about_64_mib_and_3_passes() -> None:
    assert KdfParams() == KdfParams(3, 64 * 1024)
