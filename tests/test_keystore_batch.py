"""Batches of engine operations on the keystore (``Engine.batch``, issue 7), the generation row's
format, and opening a store with many sessions without reading them all.

* A batch commits once; an operation that fails inside it undoes its own writes only (a
  savepoint) and the batch goes on.
* A crash in the middle of a batch loses the whole batch and nothing committed before it: the
  copy of the files taken inside the batch opens in the state before it (its messages decrypt
  again); taken after it, every message of the batch is a duplicate.
* The generation row is a MAC'd counter; the first version's sealed row still opens; the
  content of the generation file beside the database is no valid row.
* Opening a keystore holding many sessions and decrypting one message reads as many records as
  with one session stored, and never the whole table (``bench/memory_bench.py`` does the same
  with 10,000 sessions).
* The keystore's own checkpoints keep the WAL at its working size, and the thread that syncs
  the WAL ahead of them ends with the store.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from e2ee.engine import Engine
from e2ee.keystore import KdfParams, Keystore
from e2ee.keystore.errors import KeystoreCorrupt
from e2ee.results import Decrypted, Duplicate

from .engine_support import O2, Net
from .support import seeded_rng, sql

PW = "batch passphrase"
ALICE, BOB = "alice@example.org", "bob@example.net"


class Crash(Exception):
    pass


def _setup(tmp_path: Path) -> tuple[Net, Engine, Engine, Keystore]:
    net = Net()
    ks = Keystore.create(tmp_path / "bob.db", PW, kdf=KdfParams.floor())
    bob = net.device(BOB, "bob", storage=ks)
    alice = net.device(ALICE, "alice")
    first = net.encrypt(alice, [BOB], "hello")
    out = bob.decrypt(first.elements[O2], ALICE, to=BOB)
    net.run(bob, out.effects)
    for _sender, e in net.take_outbox():
        alice.decrypt(e.encrypted, BOB, to=ALICE)
    return net, alice, bob, ks


def _copy(path: Path, dst: Path) -> Path:
    dst.mkdir()
    for suffix in ("", "-wal", ".generation"):
        if Path(f"{path}{suffix}").exists():
            shutil.copy(f"{path}{suffix}", dst / f"{path.name}{suffix}")
    return dst / path.name


def _body(result: object) -> str | None:
    return result.body if isinstance(result, Decrypted) else None


def test_a_batch_commits_once_and_a_failed_operation_inside_undoes_only_itself(tmp_path: Path) -> None:
    _net, alice, bob, ks = _setup(tmp_path)
    msgs = [alice.encrypt_omemo([BOB], f"m{i}").elements[O2] for i in range(3)]
    generation = ks.generation
    real_put = ks.put
    with bob.batch():
        assert _body(bob.decrypt(msgs[0], ALICE, to=BOB)) == "m0"

        def crash(table: str, key: str, value: bytes) -> None:
            real_put(table, key, value)  # written inside the batch, then the operation fails
            raise Crash(table)

        ks.put = crash  # type: ignore[method-assign]
        with pytest.raises(Crash):
            bob.decrypt(msgs[1], ALICE, to=BOB)
        ks.put = real_put  # type: ignore[method-assign]
        assert ks.generation == generation  # nothing committed yet
        assert _body(bob.decrypt(msgs[1], ALICE, to=BOB)) == "m1"  # the failed attempt left nothing behind
        assert _body(bob.decrypt(msgs[2], ALICE, to=BOB)) == "m2"
    assert ks.generation == generation + 1  # one commit for the batch
    path = ks.path
    ks.close()
    with Keystore.open(path, PW) as again:
        bob = Engine(again, rng=seeded_rng("bob-again"))
        assert [type(bob.decrypt(m, ALICE, to=BOB)) for m in msgs] == [Duplicate] * 3


def test_a_crash_inside_a_batch_loses_the_batch_and_nothing_acknowledged(tmp_path: Path) -> None:
    _net, alice, bob, ks = _setup(tmp_path)
    acknowledged = alice.encrypt_omemo([BOB], "before the batch").elements[O2]
    assert _body(bob.decrypt(acknowledged, ALICE, to=BOB)) == "before the batch"
    batch = [alice.encrypt_omemo([BOB], f"archived {i}").elements[O2] for i in range(4)]
    with bob.batch():
        results = [bob.decrypt(m, ALICE, to=BOB) for m in batch[:2]]
        during = _copy(ks.path, tmp_path / "during")  # the files as a crash would leave them
        results += [bob.decrypt(m, ALICE, to=BOB) for m in batch[2:]]
    after = _copy(ks.path, tmp_path / "after")
    assert [_body(r) for r in results] == [f"archived {i}" for i in range(4)]
    ks.close()
    with Keystore.open(during, PW) as crashed:
        bob = Engine(crashed, rng=seeded_rng("bob-crashed"))
        assert isinstance(bob.decrypt(acknowledged, ALICE, to=BOB), Duplicate)  # committed before: kept
        assert [_body(bob.decrypt(m, ALICE, to=BOB)) for m in batch] == [f"archived {i}" for i in range(4)]
    with Keystore.open(after, PW) as committed:
        bob = Engine(committed, rng=seeded_rng("bob-after"))
        assert [type(bob.decrypt(m, ALICE, to=BOB)) for m in [acknowledged, *batch]] == [Duplicate] * 5


def test_a_batch_that_raises_undoes_every_operation_in_it(tmp_path: Path) -> None:
    _net, alice, bob, ks = _setup(tmp_path)
    batch = [alice.encrypt_omemo([BOB], f"archived {i}").elements[O2] for i in range(3)]
    generation = ks.generation
    with pytest.raises(Crash):
        with bob.batch():
            for m in batch:
                bob.decrypt(m, ALICE, to=BOB)
            raise Crash("before the commit")
    assert ks.generation == generation
    assert [_body(bob.decrypt(m, ALICE, to=BOB)) for m in batch] == [f"archived {i}" for i in range(3)]


def test_the_generation_row_is_a_mac_and_the_first_versions_sealed_row_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "ks.db"
    with Keystore.create(path, PW, kdf=KdfParams.floor()) as ks:
        ks.put("own", "x", b"1")
        ks.put("own", "y", b"2")
        keys = ks._k()
        blind = keys.blind_key("meta", "generation")
        generation = ks.generation
    (row,) = sql(path, "SELECT value FROM meta WHERE name='generation'")[0]
    assert bytes(row) == keys.generation_row(generation) and len(row) == 41
    # the first version wrote a sealed record: still read
    sealed = keys.seal(blind, "meta", "generation", generation.to_bytes(8, "big"), os.urandom(24))
    sql(path, "UPDATE meta SET value=? WHERE name='generation'", sealed)
    with Keystore.open(path, PW) as ks:
        assert ks.generation == generation and ks.get("own", "y") == b"2"
        ks.put("own", "z", b"3")  # written back in the current form
    (row,) = sql(path, "SELECT value FROM meta WHERE name='generation'")[0]
    assert bytes(row) == keys.generation_row(generation + 1)
    # the generation file's content (a MAC under the same key, other label) is no valid row
    sidecar = Path(f"{path}.generation").read_bytes()
    for forged in (b"\x02" + sidecar, keys.generation_row(generation + 5)[:9] + keys.generation_mac(generation + 5)):
        sql(path, "UPDATE meta SET value=? WHERE name='generation'", forged)
        with pytest.raises(KeystoreCorrupt):
            Keystore.open(path, PW)


def test_opening_many_sessions_reads_only_what_one_message_needs(tmp_path: Path) -> None:
    from bench.keystore_bench import PW as BENCH_PW
    from bench.memory_bench import build, probe

    reads = {}
    for sessions in (1, 40):
        built = build(tmp_path / f"s{sessions}.db", sessions)
        with Keystore.open(built.path, BENCH_PW) as ks:
            assert len(ks.keys("session")) == sessions  # they are all there
        result = probe(built.path, built.message, built.sender)
        assert result["full_scans"] == 0, result
        reads[sessions] = result["records_read"]
    assert reads[40] == reads[1] <= 6, reads  # own identity, the sender's device list, trust, session


def test_the_probe_message_is_a_real_message(tmp_path: Path) -> None:
    from bench.memory_bench import build

    built = build(tmp_path / "one.db", 1)
    assert ET.fromstring(built.message).tag == f"{{{O2}}}encrypted"


def test_checkpoints_keep_the_wal_small_and_the_early_sync_thread_ends_with_the_store(tmp_path: Path) -> None:
    """The keystore checkpoints every ``_WAL_PAGES`` pages itself and syncs the WAL ahead of it
    on a thread: after many single-record commits the WAL file is still about one interval
    long (it is reused, not grown), the thread ran, and ``close()`` ends it and empties the WAL."""
    import threading

    from e2ee.keystore.store import _WAL_KEEP, _WAL_PAGES

    path = tmp_path / "ks.db"
    ks = Keystore.create(path, PW, kdf=KdfParams.floor())
    for i in range(3 * _WAL_PAGES):  # two pages per commit: about six intervals
        ks.put("session", "peer", os.urandom(400) + bytes([i & 0xFF]))
    assert os.path.getsize(f"{path}-wal") <= _WAL_KEEP + 8 * (4096 + 24)
    assert ks._wal_syncer is not None and ks._wal_syncer.syncs > 0
    names = {t.name for t in threading.enumerate()}
    assert "keystore-wal-sync" in names
    ks.close()
    assert "keystore-wal-sync" not in {t.name for t in threading.enumerate()}
    assert not Path(f"{path}-wal").exists() or os.path.getsize(f"{path}-wal") == 0
    with Keystore.open(path, PW) as again:
        assert again.get("session", "peer") is not None
