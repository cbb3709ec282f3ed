"""Catalogue section 5, K1-K4: passphrase and header edits, moved and corrupt records, unknown
versions, rollback of a restored copy.
"""

from __future__ import annotations

import copy
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from e2ee.engine import Engine
from e2ee.errors import E2EEError, UsageError
from e2ee.keystore import Keystore
from e2ee.keystore.errors import (
    CorruptRecord,
    KeystoreCorrupt,
    KeystoreDowngrade,
    RollbackDetected,
    UnsupportedKeystoreVersion,
    WrongPassphrase,
)
from e2ee.keystore.sealing import MAX_MEMORY_KIB, MAX_PASSES
from e2ee.results import (
    Decrypted,
    Outcome,
)
from e2ee.sessions import session_key
from e2ee.trust import TrustLevel

from ..engine_support import O2, Net, snapshot
from ..support import seeded_rng, sql
from .support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    FAST,
    MALLORY,
    PW,
    assert_refused_unchanged,
    deliver,
    identity_of,
    ks_device,
    outcomes,
    raw_records,
    replace_engine,
    restore_memory,
    send,
    store_files,
)

# ================================================================== K1


def test_K1_wrong_passphrase_and_header_edits_are_refused_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """K1.  A wrong passphrase is ``WrongPassphrase`` after the same Argon2id work as the right one
    (same parameters, one derivation each); a header lowered below the floor is
    ``KeystoreDowngrade`` before any derivation; every other header edit fails (the header is the
    associated data of the wrapped key).  In every case the database, its WAL and the generation
    file are byte-identical afterwards, and the store still opens with its identity.
    (``test_keystore.py::test_wrong_passphrase`` and ``::test_header_edits`` cover the error
    types; this adds the cost check and "nothing is written".)"""
    import nacl.pwhash

    net = Net()
    path = tmp_path / "alice.db"
    alice, ks = ks_device(net, path, ALICE, "k1-a")
    ik = alice.identity_key
    ks.close()

    calls: list[tuple[int, int]] = []
    real_kdf = nacl.pwhash.argon2id.kdf

    def spy(size: int, password: bytes, salt: bytes, *, opslimit: int, memlimit: int) -> bytes:
        calls.append((opslimit, memlimit))
        return real_kdf(size, password, salt, opslimit=opslimit, memlimit=memlimit)

    monkeypatch.setattr(nacl.pwhash.argon2id, "kdf", spy)
    files = store_files(path)
    for wrong in ("not it", PW + " ", PW.upper(), "x" * 1000):
        calls.clear()
        assert_refused_unchanged(lambda: store_files(path), lambda: Keystore.open(path, wrong), WrongPassphrase)
        assert store_files(path) == files
        assert calls == [(FAST.passes, FAST.memory_kib * 1024)]
    calls.clear()
    assert identity_of(path) == ik
    assert calls == [(FAST.passes, FAST.memory_kib * 1024)]  # the same cost as a wrong one

    (header,) = sql(path, "SELECT value FROM meta WHERE name='header'")[0]
    header = bytes(header)
    # magic 6, version 1, kdf 1, t 4, m 4, p 1, salt 16
    edits: list[tuple[str, int, bytes, type[E2EEError], bool]] = [
        ("passes 1", 8, (1).to_bytes(4, "big"), KeystoreDowngrade, False),
        ("passes 0", 8, (0).to_bytes(4, "big"), KeystoreDowngrade, False),
        ("memory 8 MiB", 12, (8 * 1024).to_bytes(4, "big"), KeystoreDowngrade, False),
        ("memory 1 KiB", 12, (1).to_bytes(4, "big"), KeystoreDowngrade, False),
        ("memory floor - 1", 12, (FAST.memory_kib - 1).to_bytes(4, "big"), KeystoreDowngrade, False),
        # issue 14.5: above the ceiling, refused before any derivation (minutes, or killed for memory)
        ("passes 2^32 - 1", 8, b"\xff\xff\xff\xff", KeystoreCorrupt, False),
        ("passes ceiling + 1", 8, (MAX_PASSES + 1).to_bytes(4, "big"), KeystoreCorrupt, False),
        ("memory 4 TiB", 12, b"\xff\xff\xff\xff", KeystoreCorrupt, False),
        ("memory ceiling + 1", 12, (MAX_MEMORY_KIB + 1).to_bytes(4, "big"), KeystoreCorrupt, False),
        ("memory high byte", 12, bytes([header[12] | 0x80]), KeystoreCorrupt, False),
        ("passes up", 8, (FAST.passes + 1).to_bytes(4, "big"), WrongPassphrase, True),
        ("memory up", 12, (FAST.memory_kib + 1024).to_bytes(4, "big"), WrongPassphrase, True),
        ("salt", 17, bytes(16), WrongPassphrase, True),
        ("salt bit", 32, bytes([header[32] ^ 1]), WrongPassphrase, True),
        ("lanes", 16, b"\x02", UnsupportedKeystoreVersion, False),
        ("version", 6, b"\x02", UnsupportedKeystoreVersion, False),
        ("kdf id", 7, b"\x02", UnsupportedKeystoreVersion, False),
        ("magic", 0, b"E2EEKX", KeystoreCorrupt, False),
    ]
    for label, at, value, error, derives in edits:
        edited = header[:at] + value + header[at + len(value) :]
        assert len(edited) == len(header) and edited != header, label
        sql(path, "UPDATE meta SET value=? WHERE name='header'", edited)
        damaged = store_files(path)
        calls.clear()
        assert_refused_unchanged(lambda: store_files(path), lambda: Keystore.open(path, PW), error, label)
        assert store_files(path) == damaged, f"{label}: the failed open wrote to the store"
        assert bool(calls) == derives, f"{label}: derivations {calls}"
    for label, edited in [("truncated", header[:-1]), ("longer", header + b"\x00"), ("empty", b"")]:
        sql(path, "UPDATE meta SET value=? WHERE name='header'", edited)
        damaged = store_files(path)
        assert_refused_unchanged(lambda: store_files(path), lambda: Keystore.open(path, PW), KeystoreCorrupt, label)
        assert store_files(path) == damaged, label
    sql(path, "UPDATE meta SET value=? WHERE name='header'", header)
    assert identity_of(path) == ik


# ================================================================== K2


def test_K2_a_moved_record_is_CorruptRecord_through_the_engine_never_a_missing_one(tmp_path: Path) -> None:
    """K2.  On alice's keystore: (a) the sealed session of bob's device 1 copied over the session
    row of bob's device 2; (b) carol's trust record copied over bob's; (c) bob's device-1 session
    moved into the row of bob's *trust* record (another table).  Through the engine, ``encrypt`` to
    bob and ``decrypt`` of bob's messages raise ``CorruptRecord`` -- never a silent "no session"
    (a new key exchange) or "no trust" (a new first sight) -- and the stored rows are unchanged
    afterwards.  Sessions and trust of other contacts keep working.  ``Keystore.get`` alone is
    covered by ``test_keystore.py::test_a_record_copied_into_another_row_is_corrupt_not_missing``.
    There is a single prekey record (``own/prekeys``), so "swap two prekey rows" has no rows to
    swap; moving it is the same kind of damage as (a)."""
    net = Net()
    path = tmp_path / "alice.db"
    alice, ks = ks_device(net, path, ALICE, "k2-a")
    b1 = net.device(BOB, "k2-b1")
    b2 = net.device(BOB, "k2-b2")
    carol = net.device(CAROL, "k2-c")
    res = net.encrypt(alice, [BOB], "hello bob")
    for b in (b1, b2):
        deliver(net, b, res.elements[O2], alice)
    deliver(net, carol, send(net, alice, CAROL, "hello carol"), alice)
    from_b1 = send(net, b1, ALICE, "from b1")
    from_b2 = send(net, b2, ALICE, "from b2")
    blind = ks._k().blind_key
    rows = {
        "s1": blind("session", session_key("omemo2", BOB, b1.device_id)),
        "s2": blind("session", session_key("omemo2", BOB, b2.device_id)),
        "trust bob": blind("trust", BOB),
        "trust carol": blind("trust", CAROL),
    }
    ks.close()
    net.engines.remove(alice)
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    for p in (path, Path(f"{path}.generation")):
        shutil.copy(p, pristine / p.name)
    value = {name: bytes(sql(path, "SELECT v FROM records WHERE k=?", k)[0][0]) for name, k in rows.items()}
    carol_state = snapshot(carol)

    for label, src, dst, hits in [
        ("session of b1 over b2", "s1", "s2", [from_b2]),
        ("carol's trust over bob's", "trust carol", "trust bob", [from_b1, from_b2]),
        ("session of b1 into bob's trust row", "s1", "trust bob", [from_b1, from_b2]),
    ]:
        for p in (path, Path(f"{path}.generation")):
            shutil.copy(pristine / p.name, p)
        sql(path, "UPDATE records SET v=? WHERE k=?", value[src], rows[dst])
        damaged = raw_records(path)
        ks = Keystore.open(path, PW)
        engine = Engine(ks, rng=seeded_rng(f"k2-{label}"), clock=net.clock)
        with pytest.raises(CorruptRecord):
            engine.encrypt_omemo([BOB], "must not start a new session")
        with pytest.raises(CorruptRecord):
            engine.prepare([BOB])
        for el in hits:
            with pytest.raises(CorruptRecord):
                engine.decrypt(el, BOB, to=ALICE)
        assert raw_records(path) == damaged, f"{label}: a failed operation wrote"  # read beside the open store
        if label == "session of b1 over b2":  # b1's own row is intact
            out = engine.decrypt(copy.deepcopy(from_b1), BOB, to=ALICE)
            assert isinstance(out, Decrypted) and out.body == "from b1"
        # other contacts are unaffected (carol is reset too: alice's store restarts from the copy)
        restore_memory(carol, carol_state)
        res = engine.encrypt_omemo([CAROL], f"carol after {label}")
        assert res.ready and outcomes(res, CAROL) == {carol.device_id: (O2, Outcome.ENCRYPTED)}
        out = carol.decrypt(res.elements[O2], ALICE, to=CAROL)
        assert isinstance(out, Decrypted) and out.body == f"carol after {label}"
        ks.close()
        after = dict(raw_records(path))
        assert after[rows[dst]] == value[src], f"{label}: the damaged row was replaced"


# ================================================================== K3


def test_K3_corruption_and_unknown_versions_are_typed_and_never_reset_the_identity(tmp_path: Path) -> None:
    """K3.  An unknown schema version is ``UnsupportedKeystoreVersion``; a flipped byte in the
    sealed ``generation`` row is ``KeystoreCorrupt``; a damaged generation file beside the database
    is ``KeystoreCorrupt``; a damaged identity record opens the store but the engine gets
    ``CorruptRecord`` from both ``Engine(...)`` and ``Engine.create(...)`` (no fresh identity is
    made over it); a deleted identity record is a ``UsageError``, not a silent new identity.
    Torn WAL writes (the files copied while the store was open, then one WAL frame damaged): SQLite
    drops the commits from that frame on, and the loss is never silent -- ``RollbackDetected``
    (the file is behind its generation counter) for the last frame, ``KeystoreCorrupt`` for the
    first (nothing had been checkpointed, so the file has no tables); accepting the rollback gives
    back the same identity.  After undoing each damage in place, the store opens with the same
    identity key.  (``test_keystore.py`` covers flipped record bytes, truncation and foreign
    files.)  GAP: no schema migration exists yet (one version only), so there are no golden files
    to migrate from."""
    net = Net()
    path = tmp_path / "alice.db"
    alice, ks = ks_device(net, path, ALICE, "k3-a")
    ik = alice.identity_key
    identity_row = ks._k().blind_key("own", "identity")
    ks.close()
    net.engines.remove(alice)
    records = raw_records(path)

    # unknown schema version
    (header,) = sql(path, "SELECT value FROM meta WHERE name='header'")[0]
    header = bytes(header)
    for version in (0, 2, 255):
        sql(path, "UPDATE meta SET value=? WHERE name='header'", header[:6] + bytes([version]) + header[7:])
        with pytest.raises(UnsupportedKeystoreVersion):
            Keystore.open(path, PW)
        sql(path, "UPDATE meta SET value=? WHERE name='header'", header)
        assert identity_of(path) == ik and raw_records(path) == records

    # the sealed generation row
    (gen,) = sql(path, "SELECT value FROM meta WHERE name='generation'")[0]
    gen = bytes(gen)
    for i in (0, 1, 12, 30, len(gen) - 1):
        flipped = bytearray(gen)
        flipped[i] ^= 0x40
        sql(path, "UPDATE meta SET value=? WHERE name='generation'", bytes(flipped))
        with pytest.raises(KeystoreCorrupt):
            Keystore.open(path, PW)
        sql(path, "UPDATE meta SET value=? WHERE name='generation'", gen)
        assert identity_of(path) == ik
    sql(path, "DELETE FROM meta WHERE name='generation'")
    with pytest.raises(KeystoreCorrupt):
        Keystore.open(path, PW)
    sql(path, "INSERT INTO meta VALUES ('generation', ?)", gen)
    assert identity_of(path) == ik

    # the generation file beside the database
    sidecar = Path(f"{path}.generation")
    good = sidecar.read_bytes()
    for bad in (good[:-1], bytes([good[0] ^ 1]) + good[1:], good[:8] + bytes(32)):
        sidecar.write_bytes(bad)
        with pytest.raises(KeystoreCorrupt):
            Keystore.open(path, PW)
        sidecar.write_bytes(good)
    assert identity_of(path) == ik

    # the identity record
    (sealed,) = sql(path, "SELECT v FROM records WHERE k=?", identity_row)[0]
    sealed = bytes(sealed)
    flipped = bytearray(sealed)
    flipped[len(flipped) // 2] ^= 0x01
    sql(path, "UPDATE records SET v=? WHERE k=?", bytes(flipped), identity_row)
    with Keystore.open(path, PW) as ks:
        with pytest.raises(CorruptRecord):
            Engine(ks)
        with pytest.raises(CorruptRecord):
            Engine.create(ks, ALICE)
    sql(path, "UPDATE records SET v=? WHERE k=?", sealed, identity_row)
    assert identity_of(path) == ik and raw_records(path) == records
    sql(path, "DELETE FROM records WHERE k=?", identity_row)
    with Keystore.open(path, PW) as ks, pytest.raises(UsageError):
        Engine(ks)
    sql(path, "INSERT INTO records VALUES (?, ?)", identity_row, sealed)
    assert identity_of(path) == ik and raw_records(path) == records

    # a torn write at the end of the WAL (files copied while the store is open)
    ks = Keystore.open(path, PW)
    alice = Engine(ks, rng=seeded_rng("k3-a2"), clock=net.clock)
    bob = net.device(BOB, "k3-b")
    net.engines.append(alice)
    for i in range(3):
        deliver(net, bob, send(net, alice, BOB, f"m{i}"), alice)
    crash = tmp_path / "crash"
    crash.mkdir()
    copied = crash / path.name
    for suffix in ("", "-wal", ".generation"):
        shutil.copy(f"{path}{suffix}", f"{copied}{suffix}")
    ks.close()
    wal = Path(f"{copied}-wal")
    data = wal.read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    frame = 24 + page_size
    assert len(data) >= 32 + 2 * frame and (len(data) - 32) % frame == 0
    seen = set()
    last = len(data) - frame
    # undamaged; page data and header of the last frame (its commit is lost); the first frame
    # (nothing before it was ever checkpointed: the file looks empty)
    for where in (None, last + 24 + 100, last + 3, 32 + 24 + 5):
        torn = crash / f"torn{where}"
        torn.mkdir()
        db = torn / path.name
        shutil.copy(copied, db)
        shutil.copy(f"{copied}.generation", f"{db}.generation")
        damaged = bytearray(data)
        if where is None:
            Path(f"{db}-wal").write_bytes(data)
            assert identity_of(db) == ik  # a crash copy as such opens, at its last commit
            continue
        damaged[where] ^= 0xFF
        Path(f"{db}-wal").write_bytes(bytes(damaged))
        try:
            assert identity_of(db) == ik
            seen.add("opened")
        except RollbackDetected:
            assert identity_of(db, accept_rollback=True) == ik
            seen.add("rollback")
        except KeystoreCorrupt:
            seen.add("corrupt")
            with pytest.raises(KeystoreCorrupt):  # and stays so: nothing was "repaired" into a new store
                Keystore.open(db, PW)
    assert seen and "opened" not in seen, seen  # a lost commit is always reported
    assert identity_of(path) == ik


def test_K3_a_damaged_schema_or_meta_row_is_KeystoreCorrupt_and_the_file_is_unchanged(tmp_path: Path) -> None:
    """Issue 14.6: names in the schema that are not UTF-8 (sqlite3 then raises
    ``UnicodeDecodeError`` from its error message), a malformed schema, and a header row that is
    an integer or text instead of bytes are ``KeystoreCorrupt``, with the file left as it was."""
    path = tmp_path / "alice.db"
    Keystore.create(path, PW, kdf=FAST).close()
    pristine = path.read_bytes()
    damages = {
        "schema name not UTF-8": "UPDATE sqlite_master SET name = CAST(X'ff41' AS TEXT), sql = CAST(X'4352454154452054414231' AS TEXT) WHERE name = 'meta'",
        "schema sql malformed": "UPDATE sqlite_master SET sql = 'CREATE TABLE meta(' WHERE name = 'meta'",
        "header an integer": "UPDATE meta SET value = 1000000000000 WHERE name = 'header'",
        "header text": "UPDATE meta SET value = 'abc' WHERE name = 'header'",
    }

    def restore() -> None:
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.write_bytes(pristine)

    for label, statement in damages.items():
        restore()
        db = sqlite3.connect(path)
        db.execute("PRAGMA writable_schema=ON")
        db.execute(statement)
        db.commit()
        db.close()
        damaged = path.read_bytes()
        assert_refused_unchanged(path.read_bytes, lambda: Keystore.open(path, PW), KeystoreCorrupt, label)
        assert path.read_bytes() == damaged, label
    restore()
    Keystore.open(path, PW).close()


# ================================================================== K4


def test_K4_restored_copy_after_accept_rollback_keeps_distrust_and_resets_other_trust(tmp_path: Path) -> None:
    """K4.  A week-old copy of alice's keystore is put back.  Opening it is ``RollbackDetected``;
    after ``accept_rollback=True`` and ``Engine.after_rollback()``: a key DISTRUSTED in the copy
    stays DISTRUSTED; BLIND and VERIFIED keys go back to UNDECIDED -- including carol's key, which
    the copy still has as BLIND although the user distrusted it after the copy was made -- so
    nothing is encrypted for them until the user decides again; the restored sessions are
    quarantined.  (``test_keystore.py::test_restored_older_copy_is_rollback_detected`` and
    ``test_keystore_engine.py::test_restored_copy_is_detected_and_no_ratchet_key_is_reused``
    cover detection, quarantine, session replacement and no (ratchet key, counter) reuse.)"""
    net = Net()
    path = tmp_path / "alice.db"
    alice, ks = ks_device(net, path, ALICE, "k4-a")
    a2 = net.device(ALICE, "k4-a2")
    peers = {jid: net.device(jid, f"k4-{jid}") for jid in (BOB, CAROL, DAVE, MALLORY)}
    for jid, peer in peers.items():
        deliver(net, peer, send(net, alice, jid, f"hello {jid}"), alice)
    alice.set_trust(BOB, peers[BOB].identity_key, TrustLevel.VERIFIED)
    alice.set_trust(DAVE, peers[DAVE].identity_key, TrustLevel.DISTRUSTED)
    alice.set_trust(MALLORY, peers[MALLORY].identity_key, TrustLevel.UNDECIDED)
    in_copy = {
        BOB: TrustLevel.VERIFIED,
        CAROL: TrustLevel.BLIND,
        DAVE: TrustLevel.DISTRUSTED,
        MALLORY: TrustLevel.UNDECIDED,
    }
    for jid, level in in_copy.items():
        assert alice.trust.level(jid, peers[jid].identity_key) is level
    assert alice.trust.level(ALICE, a2.identity_key) is TrustLevel.BLIND
    ks.close()  # closed: a consistent copy
    backup = tmp_path / "backup"
    backup.mkdir()
    shutil.copy(path, backup / path.name)
    net.clock.advance(timedelta(days=7))
    ks = Keystore.open(path, PW)
    alice = replace_engine(net, alice, Engine(ks, rng=seeded_rng("k4-a-later"), clock=net.clock))
    alice.set_trust(CAROL, peers[CAROL].identity_key, TrustLevel.DISTRUSTED)  # after the copy
    deliver(net, peers[BOB], send(net, alice, BOB, "after the copy"), alice)
    ks.close()
    shutil.copy(backup / path.name, path)  # the restore (the generation file stays)
    with pytest.raises(RollbackDetected):
        Keystore.open(path, PW)
    ks = Keystore.open(path, PW, accept_rollback=True)
    assert ks.rolled_back
    alice = replace_engine(net, alice, Engine(ks, rng=seeded_rng("k4-a-restored"), clock=net.clock))
    assert alice.trust.level(CAROL, peers[CAROL].identity_key) is TrustLevel.BLIND  # what the copy says
    assert alice.after_rollback() == len(peers) + 1  # one session per peer and one with a2
    expected = {
        BOB: TrustLevel.UNDECIDED,
        CAROL: TrustLevel.UNDECIDED,
        DAVE: TrustLevel.DISTRUSTED,
        MALLORY: TrustLevel.UNDECIDED,
    }
    for jid, level in expected.items():
        assert alice.trust.level(jid, peers[jid].identity_key) is level, jid
        assert {d.trust for d in alice.devices(jid)} == {level}
    assert alice.trust.level(ALICE, a2.identity_key) is TrustLevel.UNDECIDED  # own devices too
    # nothing goes out until the user acts: quarantined sessions, undecided or distrusted keys
    for jid in peers:
        res = alice.encrypt_omemo([jid], "stale state")
        assert not res.ready and res.elements == {}
    # after replacing carol's session, carol is still undecided: no silent re-trust
    net.run(alice, alice.replace_session(CAROL, peers[CAROL].device_id, O2))
    res = net.encrypt(alice, [CAROL], "carol?")
    assert outcomes(res, CAROL) == {peers[CAROL].device_id: (O2, Outcome.UNDECIDED)} and not res.ready
    ks.close()


def test_K4_a_copy_restored_without_its_generation_file_is_RollbackDetected(tmp_path: Path) -> None:
    """Issue 14.3: an older copy of the database is put back and the ``.generation`` file beside
    it is gone (not copied, deleted).  A database whose sealed generation is above 0 with no
    generation file is ``RollbackDetected`` with the file unchanged; ``accept_rollback`` opens it
    as rolled back.  A new keystore (generation 0) never written to opens without the file."""
    path = tmp_path / "alice.db"
    sidecar = Path(f"{path}.generation")
    Keystore.create(path, PW, kdf=FAST).close()
    sidecar.unlink()
    with Keystore.open(path, PW) as ks:  # generation 0: nothing was ever committed
        assert not ks.rolled_back and ks.generation == 0
    net = Net()
    alice, ks = ks_device(net, tmp_path / "a2.db", ALICE, "k4-gen")
    assert ks.generation > 0
    ks.close()
    path = tmp_path / "a2.db"
    Path(f"{path}.generation").unlink()
    before = path.read_bytes()
    assert_refused_unchanged(path.read_bytes, lambda: Keystore.open(path, PW), RollbackDetected)
    assert path.read_bytes() == before and not Path(f"{path}.generation").exists()
    with Keystore.open(path, PW, accept_rollback=True) as ks:
        assert ks.rolled_back
        engine = Engine(ks, rng=seeded_rng("k4-gen-2"), clock=net.clock)
        assert engine.jid == ALICE
    with Keystore.open(path, PW) as ks:  # the file is back: no rollback from now on
        assert not ks.rolled_back
