"""Archive catch-up: ``count`` archived messages (10,000 in a full run) from 20 contacts' devices
(one device each, sessions confirmed beforehand), decrypted in archive order (the contacts
interleaved, each one's messages in order) by one device, from the same starting state in every
round.

* ``catch_up[memory]``: our engine on :class:`~e2ee.storage.MemoryStorage`.
* ``catch_up[keystore]``: the same on a keystore (WAL, no fsync per commit), the messages
  decrypted in batches of :data:`BATCH` under :meth:`Engine.batch`: one commit per batch.  A
  result is acknowledged (shown, its effects run) only once its batch has committed, so a crash
  loses nothing acknowledged: it undoes the uncommitted batch, whose messages are still in the
  archive and decrypt again.  Both rows run the very same code (``begin_catch_up``, batches,
  ``end_catch_up``); only the storage differs.
* ``catch_up[keystore, commit each]``: no batches, one commit per message (for comparison).
* peer: python-omemo's ``SessionManager`` (in-memory storage, heartbeats off as in
  :mod:`bench.peer_omemo`) decrypting the same kind of archive: 20 contacts of its own, the same
  interleaving, restored from a deep copy of its storage before each round.

Each op is the whole catch-up (the figures are totals); the store is opened before timing
(opening costs the Argon2id derivation, see ``keystore_open``).  Floor: the primitive cost of
``count`` in-order decryptions (:func:`bench.engine_bench.floors` ``decrypt``).
"""

from __future__ import annotations

import copy
import random
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from e2ee.engine import Engine
from e2ee.keystore import KdfParams, Keystore
from e2ee.results import Decrypted
from e2ee.rng import system_random
from e2ee.storage import MemoryStorage
from tests.engine_support import O2, Net

from .engine_bench import MSG, floors
from .floor import Prims
from .keystore_bench import PW, scratch_dir

__all__ = ["BATCH", "CONTACTS", "CatchUp", "floor", "peer"]

ME = "me@example.org"
CONTACTS = 20
#: messages per commit on the keystore (the client's MAM page is 200 messages)
BATCH = 200

Op = Callable[[], object]


def _order(count: int, contacts: int) -> list[int]:
    """Which contact sent each archived message: interleaved at random, reproducibly."""
    order = [i % contacts for i in range(count)]
    random.Random(7).shuffle(order)
    return order


class CatchUp:
    """Our side: the starting state of our device (a memory snapshot and a closed keystore
    file) and the archive."""

    def __init__(self, count: int, contacts: int = CONTACTS) -> None:
        net = Net()
        self.clock = net.clock
        me_store = MemoryStorage()
        me = net.device(ME, "me", rng=system_random, storage=me_store)
        people = [net.device(f"contact{i}@example.net", f"c{i}", rng=system_random) for i in range(contacts)]
        for c in people:  # session set up and confirmed: key exchange, our answer, one message
            first = net.encrypt(c, [ME], "hello")
            out = me.decrypt(first.elements[O2], c.jid, to=ME)
            net.run(me, out.effects)  # the bundle without the used prekey
            for _sender, e in net.take_outbox():
                c.decrypt(e.encrypted, ME, to=c.jid)
            me.decrypt(c.encrypt_omemo([ME], "again").elements[O2], c.jid, to=ME)
        self.archive: list[tuple[ET.Element, str]] = [
            (people[i].encrypt_omemo([ME], f"{MSG} #{n}").elements[O2], people[i].jid)
            for n, i in enumerate(_order(count, contacts))
        ]
        self.snapshot = me_store.snapshot()
        self._dir = scratch_dir()
        self.template = self._dir / "template.db"
        ks = Keystore.create(self.template, PW, kdf=KdfParams.floor())
        with ks.transaction():
            for table, records in self.snapshot.items():
                for key, value in records.items():
                    ks.put(table, key, value)
        ks.close()
        self._copies = 0
        self._open: list[Keystore] = []

    def memory(self) -> MemoryStorage:
        store = MemoryStorage()
        for table, records in self.snapshot.items():
            for key, value in records.items():
                store.put(table, key, value)
        return store

    def keystore(self) -> Keystore:
        self._copies += 1
        path = self._dir / f"round{self._copies}.db"
        shutil.copy(self.template, path)
        shutil.copy(f"{self.template}.generation", f"{path}.generation")
        ks = Keystore.open(path, PW)
        self._open.append(ks)  # closed by cleanup(): closing (a checkpoint) is not timed
        return ks

    def run(self, storage: MemoryStorage | Keystore, batch: int) -> list[object]:
        """The timed part: the catch-up, in batches of ``batch`` messages (0: no batches)."""
        engine = Engine(storage, rng=system_random, clock=self.clock)
        engine.begin_catch_up()
        acknowledged: list[object] = []
        archive = self.archive
        if batch:
            for start in range(0, len(archive), batch):
                with engine.batch():
                    results = [engine.decrypt(elem, jid, to=ME) for elem, jid in archive[start : start + batch]]
                acknowledged += results  # committed: now they may be shown
        else:
            for elem, jid in archive:
                acknowledged.append(engine.decrypt(elem, jid, to=ME))
        engine.end_catch_up()
        return acknowledged

    def check(self, results: list[object]) -> None:
        if len(results) != len(self.archive) or not all(isinstance(r, Decrypted) for r in results):
            raise RuntimeError("catch-up: not every archived message decrypted")

    def op(self, kind: str) -> Callable[[], Op]:
        """``prepare()`` makes a fresh starting state (untimed) and returns the timed op."""

        def prepare() -> Op:
            storage: MemoryStorage | Keystore = self.memory() if kind == "memory" else self.keystore()
            batch = 0 if kind == "keystore-each" else BATCH

            def op() -> object:
                self.check(self.run(storage, batch))
                return None

            return op

        return prepare

    def cleanup_round(self) -> None:
        """Close and delete the keystores of the round (untimed)."""
        for ks in self._open:
            path = ks.path
            ks.close()
            for p in (path, Path(f"{path}.generation"), Path(f"{path}-wal"), Path(f"{path}-shm")):
                p.unlink(missing_ok=True)
        self._open.clear()

    def cleanup(self) -> None:
        for ks in self._open:
            ks.close()
        self._open.clear()
        shutil.rmtree(self._dir, ignore_errors=True)


def floor(count: int, prims: Prims) -> Op:
    """The primitive cost of ``count`` in-order decryptions on ``prims``."""
    one = floors(prims)["decrypt"]()

    def op() -> object:
        for _ in range(count):
            one()
        return None

    return op


def peer(count: int, contacts: int = CONTACTS) -> Callable[[], Op]:
    """python-omemo's side; ``prepare()`` restores its starting state and returns the timed op."""
    from tests.peers.session_manager import Directory

    from .peer_omemo import NO_HEARTBEATS, _deliver_empty, _peer

    d = Directory()
    me = _peer(d, ME, staleness_threshold=NO_HEARTBEATS)
    people = [_peer(d, f"contact{i}@example.net") for i in range(contacts)]
    for c in people:
        me.decrypt(c.bare_jid, c.encrypt([ME], "hello")[O2])
        _deliver_empty(me, [c])
        me.decrypt(c.bare_jid, c.encrypt([ME], "again")[O2])
    archive = [
        (people[i].encrypt([ME], f"{MSG} #{n}")[O2], people[i].bare_jid) for n, i in enumerate(_order(count, contacts))
    ]
    template = copy.deepcopy(me.storage)

    def prepare() -> Op:
        clone = _peer(d, ME, storage=copy.deepcopy(template), staleness_threshold=NO_HEARTBEATS, auto_refresh=False)

        def op() -> object:
            for elem, jid in archive:
                if clone.decrypt(jid, elem).body is None:
                    raise RuntimeError("catch-up (peer): an archived message did not decrypt")
            return None

        return op

    return prepare
