"""Group scale (issue 16): one message to a room of ``members`` members with ``devices`` devices
each (10, 100 and 1,000 members with one device, 100 members with 3), by alice, the sender.

* ours: :meth:`Engine.encrypt` of a short body for every member's JID (what the client's group
  chat does: one ``<encrypted>`` element with one key per device), all sessions confirmed and the
  DH step taken, alice's store in memory or on a keystore (WAL, default settings: one commit for
  the whole fan-out, every session record written);
* peer: python-omemo 2.1.0's ``SessionManager`` (in-memory storage, :mod:`bench.peer_omemo`)
  encrypting for the same JIDs and devices, in the same steady state;
* floor: one payload encryption and one ratchet step per device on the fastest primitives
  (:func:`bench.engine_bench.fanout_floor`).

``cost per device`` is the op's time divided by the number of devices; flat means the room's
size does not change it (no part of the work grows faster than the number of recipients).
"""

from __future__ import annotations

from collections.abc import Callable

import twomemo.etree

from e2ee.results import SendMessage
from e2ee.rng import system_random
from tests.engine_support import O2, Net
from tests.peers.session_manager import Directory, SMPeer

from .engine_bench import ALICE, MSG, StorageFactory, _memory
from .peer_omemo import NS, _deliver_empty, _peer

__all__ = ["SIZES", "QUICK_SIZES", "ours", "peer", "label"]

Op = Callable[[], object]

#: (members, devices per member)
SIZES: tuple[tuple[int, int], ...] = ((10, 1), (100, 1), (1000, 1), (100, 3))
QUICK_SIZES: tuple[tuple[int, int], ...] = ((3, 1), (10, 1), (10, 3))


def label(members: int, devices: int) -> str:
    return f"room_{members}" + (f"x{devices}" if devices > 1 else "")


ROOM = "room@conference.example.org"


def _jids(members: int) -> list[str]:
    return [f"member{i}@example.net" for i in range(members)]


def ours(members: int, devices: int, storage: StorageFactory = _memory) -> Op:
    """Alice's engine with confirmed sessions to every device of the room; ``op()`` sends one
    message to the room."""
    net = Net()
    jids = _jids(members)
    room = {j: [net.device(j, f"m{i}d{k}", rng=system_random) for k in range(devices)] for i, j in enumerate(jids)}
    alice = net.device(ALICE, "a", rng=system_random, storage=storage("a"))
    first = net.encrypt(alice, jids, "start", to=ROOM)
    for jid, devs in room.items():
        for dev in devs:
            out = dev.decrypt(first.elements[O2], ALICE, to=ROOM)
            for e in out.effects:  # the empty answer: alice's session is confirmed
                if isinstance(e, SendMessage):
                    alice.decrypt(e.encrypted, jid, to=ALICE)
    again = alice.encrypt_omemo(jids, "again", to=ROOM)  # the DH step on every session
    keys = sum(1 for _ in again.elements[O2].iter("{urn:xmpp:omemo:2}key"))
    if keys != members * devices:
        raise RuntimeError(f"room: {keys} keys for {members * devices} devices")
    return lambda: alice.encrypt_omemo(jids, MSG, to=ROOM)


def _member_devices(d: Directory, jid: str, n: int) -> list[SMPeer]:
    """``n`` devices of ``jid`` on ``d``, each created apart (as :func:`bench.peer_omemo._bob_devices`)."""
    if n == 1:
        return [_peer(d, jid)]
    devs = []
    for _ in range(n):
        scratch = Directory()
        dev = _peer(scratch, jid)
        type(dev.sm)._directory = d  # type: ignore[attr-defined]
        dev.directory = d
        bundle = scratch.bundle(jid, NS, dev.device_id)
        assert bundle is not None
        d.publish_bundle(jid, NS, dev.device_id, bundle)
        devs.append(dev)
    d.publish_device_list(jid, NS, twomemo.etree.serialize_device_list({x.device_id: None for x in devs}))
    return devs


def peer(members: int, devices: int) -> Op:
    """python-omemo's alice in the same steady state; ``op()`` sends one message to the room."""
    d = Directory()
    alice = _peer(d, ALICE)
    jids = _jids(members)
    everyone = [dev for jid in jids for dev in _member_devices(d, jid, devices)]
    first = alice.encrypt(jids, "hello")[NS]
    for dev in everyone:
        dev.decrypt(ALICE, first)
        _deliver_empty(dev, [alice])
    again = alice.encrypt(jids, "warm-up")[NS]  # the DH step on every session
    keys = list(again.iter(f"{{{NS}}}key"))
    if len(keys) != members * devices or any(k.get("kex") for k in keys):
        raise RuntimeError(f"room (peer): {len(keys)} keys for {members * devices} devices")
    return lambda: alice.encrypt(jids, MSG)
