"""Catalogue section 5, K5: every multi-record operation is all or nothing under crashes
injected at each write.
"""

from __future__ import annotations

import copy
import shutil
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from e2ee.engine import Engine
from e2ee.keystore import Keystore
from e2ee.keystore.errors import WrongPassphrase
from e2ee.limits import SPK_GRACE, SPK_ROTATION
from e2ee.model import DeviceEntry
from e2ee.results import (
    Decrypted,
)
from e2ee.trust import TrustLevel

from ..engine_support import O2, Net
from ..support import seeded_rng
from .support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    PW,
    deliver,
    dump,
    kex_flag,
    ks_device,
    o2_list,
    send,
)

# ================================================================== K5


class Crash(BaseException):
    """The simulated crash (not an ``Exception``: nothing in the engine may swallow it)."""


class HookedConnection:
    """Stands in for the keystore's sqlite3 connection: calls ``before(statement)`` before every
    statement, which may raise :class:`Crash` or copy the files (a kill at that moment)."""

    def __init__(self, db: sqlite3.Connection, before: Callable[[str], None]) -> None:
        self._db = db
        self._before = before

    def execute(self, statement: str, *args: Any) -> sqlite3.Cursor:
        self._before(statement)
        return self._db.execute(statement, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def is_write(statement: str) -> bool:
    return not statement.lstrip().upper().startswith(("SELECT", "PRAGMA"))


def copy_store(src: Path, dst_dir: Path) -> Path:
    """Copy a keystore's files (database, WAL when present, generation file) into ``dst_dir``."""
    dst_dir.mkdir(parents=True)
    for suffix in ("", "-wal", ".generation"):
        if Path(f"{src}{suffix}").exists():
            shutil.copy(f"{src}{suffix}", dst_dir / f"{src.name}{suffix}")
    return dst_dir / src.name


def crash_everywhere(tmp: Path, base: Path, label: str, op: Callable[[Engine], object], clock: Any) -> None:
    """Run ``op`` on copies of the closed keystore ``base`` and check K5 for it:

    * the write calls (``Keystore.put``/``delete``) it makes are counted; for N = 1..k the N-th
      raises :class:`Crash`; after closing and reopening, the store equals the old state, the
      identity is the same, and running ``op`` again reaches exactly the new state;
    * a crash after the commit, before the generation file is written: the new state, no
      ``RollbackDetected``;
    * a kill before every write statement and before the generation file (the files copied
      as they are on disk at that moment, without any rollback in the process): each copy opens
      in the old or the new state, the old one up to the COMMIT and the new one after it.
    """

    def engine(ks: Keystore) -> Engine:
        return Engine(ks, rng=seeded_rng(f"k5-{label}"), clock=clock)

    def fresh(tag: str) -> Keystore:
        return Keystore.open(copy_store(base, tmp / label / tag), PW)

    ks = fresh("clean")
    old = dump(ks)
    ik = engine(ks).identity_key
    writes = 0
    real_put, real_delete = ks.put, ks.delete

    def counting_put(table: str, key: str, value: bytes) -> None:
        nonlocal writes
        writes += 1
        real_put(table, key, value)

    def counting_delete(table: str, key: str) -> bool:
        nonlocal writes
        writes += 1
        return real_delete(table, key)

    ks.put, ks.delete = counting_put, counting_delete  # type: ignore[method-assign]
    op(engine(ks))
    new = dump(ks)
    ks.close()
    assert new != old and writes >= 1, label
    with Keystore.open(ks.path, PW) as again:
        assert dump(again) == new

    for n in range(1, writes + 1):
        ks = fresh(f"raise-{n}")
        count = 0
        real_put, real_delete = ks.put, ks.delete

        def crashing_put(table: str, key: str, value: bytes, n: int = n, real: Any = real_put) -> None:
            nonlocal count
            count += 1
            if count == n:
                raise Crash(f"before write {n}")
            real(table, key, value)

        def crashing_delete(table: str, key: str, n: int = n, real: Any = real_delete) -> bool:
            nonlocal count
            count += 1
            if count == n:
                raise Crash(f"before write {n}")
            return bool(real(table, key))

        ks.put, ks.delete = crashing_put, crashing_delete  # type: ignore[method-assign]
        with pytest.raises(Crash):
            op(engine(ks))
        ks.close()
        with Keystore.open(ks.path, PW) as again:
            assert dump(again) == old, f"{label}: crash before write {n}/{writes} left a partial state"
            e = engine(again)
            assert e.identity_key == ik
            op(e)
            assert dump(again) == new, f"{label}: after a crash at {n}, running it again differs"

    ks = fresh("after-commit")
    real_sidecar = ks._write_sidecar

    def no_sidecar(generation: int) -> None:
        raise Crash("after the commit")

    ks._write_sidecar = no_sidecar  # type: ignore[method-assign]
    with pytest.raises(Crash):
        op(engine(ks))
    ks._write_sidecar = real_sidecar  # type: ignore[method-assign]
    ks.close()
    with Keystore.open(ks.path, PW) as again:
        assert dump(again) == new and engine(again).identity_key == ik

    ks = fresh("kills")
    snaps: list[tuple[str, Path]] = []
    committed = False

    def kill_here(what: str) -> None:
        snaps.append((f"{what} (committed: {committed})", copy_store(ks.path, tmp / label / f"kill-{len(snaps)}")))

    def before(statement: str) -> None:
        nonlocal committed
        if is_write(statement):
            kill_here(statement.split("(")[0][:40])
            committed = committed or statement.strip().upper() == "COMMIT"

    assert ks._db is not None
    ks._db = HookedConnection(ks._db, before)  # type: ignore[assignment]
    real_sidecar = ks._write_sidecar

    def sidecar_then_kill(generation: int) -> None:
        kill_here("generation file")
        real_sidecar(generation)

    ks._write_sidecar = sidecar_then_kill  # type: ignore[method-assign]
    op(engine(ks))
    ks._db = ks._db._db  # type: ignore[union-attr]
    ks._write_sidecar = real_sidecar  # type: ignore[method-assign]
    kill_here("after the operation")
    ks.close()
    assert len(snaps) >= writes + 3, snaps  # BEGIN, the writes, the generation, COMMIT, the file
    for what, copied in snaps:
        with Keystore.open(copied, PW) as again:
            state = dump(again)
            assert state in (old, new), f"{label}: killed at {what}: neither the old nor the new state"
            expect_new = "generation file" in what or "after the operation" in what
            assert (state == new) is expect_new, f"{label}: killed at {what}"
            assert engine(again).identity_key == ik


def test_K5_every_multi_record_operation_is_all_or_nothing_under_injected_crashes(tmp_path: Path) -> None:
    """K5 without processes (``test_crash.py`` SIGKILLs a real process 200 times; R14).  For
    signed-prekey rotation (``maintenance`` with the previous key expiring and the current one due),
    ``publish`` (rotation and both own device lists), prekey consumption and refill (decrypting a
    key exchange), the end of a catch-up (hidden prekeys deleted, sessions answered), a trust
    change, the trust and session reset after a rollback, and device-list updates (a contact's,
    and our own list lacking us, which is rewritten): a crash before each write call, after the
    commit, and a kill (file copy) before each SQL write statement all leave exactly the old or
    the new state, with the same identity; redoing the operation reaches the same new state.
    See :func:`crash_everywhere`.  The passphrase change: a crash before each of its statements
    and after its commit leaves a store that exactly one of the two passphrases opens (the old
    one before the COMMIT, the new one after), records untouched.  No schema migration exists yet
    (one keystore version), so there is none to crash."""
    net = Net()
    base = tmp_path / "base" / "alice.db"
    base.parent.mkdir()
    alice, ks = ks_device(net, base, ALICE, "k5-a")
    bob = net.device(BOB, "k5-b")
    carol = net.device(CAROL, "k5-c")
    dave = net.device(DAVE, "k5-d")
    deliver(net, bob, send(net, alice, BOB, "hello bob"), alice)
    deliver(net, carol, send(net, alice, CAROL, "hello carol"), alice)
    alice.set_trust(BOB, bob.identity_key, TrustLevel.VERIFIED)
    t0 = net.clock.now
    net.clock.advance(SPK_ROTATION + timedelta(days=1))
    assert alice.maintenance()  # spk 2; spk 1 kept for the grace period
    net.run(alice, alice.publish())
    kex = send(net, dave, ALICE, "a key exchange")  # on spk 2, not yet decrypted
    assert kex_flag(kex, alice.device_id) == "true"
    ks.close()
    net.engines.remove(alice)
    t1 = net.clock.now

    clock = net.clock

    def timed(when: Any, op: Callable[[Engine], object]) -> Callable[[Engine], object]:
        def run(e: Engine) -> object:
            clock.now = when
            return op(e)

        return run

    later = t0 + SPK_ROTATION + SPK_GRACE + timedelta(days=2)  # spk 1 expired, spk 2 due
    scenarios: dict[str, Callable[[Engine], object]] = {
        "spk-rotation": timed(later, lambda e: e.maintenance()),
        "publish": timed(later, lambda e: e.publish()),
        "prekey-consumption": timed(t1, lambda e: e.decrypt(copy.deepcopy(kex), DAVE, to=ALICE)),
        "trust-change": timed(t1, lambda e: e.set_trust(CAROL, carol.identity_key, TrustLevel.DISTRUSTED)),
        "trust-reset-after-rollback": timed(t1, lambda e: e.after_rollback()),
        "contact-device-list": timed(
            t1, lambda e: e.on_device_list(BOB, O2, o2_list(DeviceEntry(bob.device_id), DeviceEntry(77)))
        ),
        "own-device-list-without-us": timed(t1, lambda e: e.on_device_list(ALICE, O2, o2_list(DeviceEntry(55)))),
    }
    for label, op in scenarios.items():
        crash_everywhere(tmp_path, base, label, op, clock)

    # the end of a catch-up, from a store in the middle of one
    catching = copy_store(base, tmp_path / "catch-up-base")
    with Keystore.open(catching, PW) as ks:
        clock.now = t1
        e = Engine(ks, rng=seeded_rng("k5-catch-up"), clock=clock)
        e.begin_catch_up()
        assert isinstance(e.decrypt(copy.deepcopy(kex), DAVE, to=ALICE), Decrypted)
    crash_everywhere(tmp_path, catching, "end-catch-up", timed(t1, lambda e: e.end_catch_up()), clock)

    # the passphrase change
    new_pw = "the new passphrase"

    def opens(path: Path) -> list[str]:
        ok = []
        for pw in (PW, new_pw):
            try:
                Keystore.open(path, pw).close()
                ok.append(pw)
            except WrongPassphrase:
                pass
        return ok

    with Keystore.open(base, PW) as ks:
        records = dump(ks)
    # a clean run, with a kill (file copy) before every write statement
    path = copy_store(base, tmp_path / "passphrase" / "clean")
    ks = Keystore.open(path, PW)
    statements: list[str] = []
    kills: list[Path] = []

    def record(statement: str) -> None:
        if is_write(statement):
            statements.append(statement.split("(")[0].strip()[:48])
            kills.append(copy_store(path, tmp_path / "passphrase" / f"kill-{len(statements)}"))

    assert ks._db is not None
    ks._db = HookedConnection(ks._db, record)  # type: ignore[assignment]
    ks.change_passphrase(new_pw)
    ks.close()
    assert opens(path) == [new_pw]
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT" and len(statements) >= 4, statements
    for statement, copied in zip(statements, kills, strict=True):
        assert opens(copied) == [PW], f"passphrase change killed before {statement!r}"
    # a crash before each statement
    for n, statement in enumerate(statements, 1):
        path = copy_store(base, tmp_path / "passphrase" / f"raise-{n}")
        ks = Keystore.open(path, PW)
        count = 0

        def crash_at(statement: str, n: int = n) -> None:
            nonlocal count
            if is_write(statement):
                count += 1
                if count == n:
                    raise Crash(statement)

        assert ks._db is not None
        ks._db = HookedConnection(ks._db, crash_at)  # type: ignore[assignment]
        with pytest.raises(Crash):
            ks.change_passphrase(new_pw)
        ks.close()
        assert opens(path) == [PW], f"passphrase change crashed before {statement!r}"
        with Keystore.open(path, PW) as again:
            assert dump(again) == records
    # after the commit, before the generation file: the new passphrase, records untouched
    path = copy_store(base, tmp_path / "passphrase" / "after-commit")
    ks = Keystore.open(path, PW)

    def no_sidecar(generation: int) -> None:
        raise Crash("after the commit")

    ks._write_sidecar = no_sidecar  # type: ignore[method-assign]
    with pytest.raises(Crash):
        ks.change_passphrase(new_pw)
    ks.close()
    assert opens(path) == [new_pw]
    with Keystore.open(path, new_pw) as again:
        assert dump(again) == records
