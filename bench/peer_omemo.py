"""Peer-side benchmark scenarios: python-omemo 2.1.0 ``SessionManager`` (twomemo, OMEMO 2 only) over
in-memory storage, driven through :mod:`tests.peers.session_manager` (run from the repository root).

``SCENARIOS[name](count)`` does all preparation and returns ``op``; calling ``op()`` performs ONE
operation of the scenario, synchronously (the coroutine runs on the driver's persistent event loop).
``op`` may be called ``count`` times (``encrypt`` and ``fanout_100`` any number of times; the
scenarios with a prepared supply raise ``RuntimeError`` once it is used up).  One device per side unless noted; every account has exactly one
device, so no encryption fans out to own devices.

What one op includes (all of it is python-omemo's ``encrypt``/``decrypt`` plus the XML layer):

* ``encrypt``: build the SCE envelope (random ``<rpad>``, time stamp), ``SessionManager.encrypt``
  for one recipient device on a confirmed session (device information and session loaded from and
  stored back to storage, payload AES-CBC+HMAC, one symmetric ratchet step), serialisation to an
  ``<encrypted>`` element.  Steady state: alice's key exchange was answered (bob's completion
  message delivered, one more message each way), so no key exchange header and no DH step.
* ``decrypt``: ``twomemo.etree.parse_message`` (xmlschema validation), ``SessionManager.decrypt``
  of the next in-order message of a pre-made supply on the same chain (no DH step), SCE envelope
  parse.  Bob's heartbeats are switched off (``staleness_threshold`` = 10**9): with the library
  default (53) a receive-only stream makes *every* decrypt past the 53rd also encrypt, serialise and
  queue an empty heartbeat message, which is protocol upkeep, not decryption.
* ``session_init``: a never-used alice device encrypts her first message to bob: bob's device list
  is already known (as from PEP), the op downloads and parses bob's bundle (xmlschema), makes the
  trust decision (blind trust), runs X3DH (signature check, DHs), initialises the ratchet, encrypts
  and serialises with the key exchange.  The ``count`` alice devices are clones of one freshly
  created device (deep copies of its storage, loaded by ``SessionManager.create``): they share a
  device id and identity key, which does not matter since bob never decrypts these messages, and it
  spares ~20 ms of pre key generation per prepared op.
* ``session_accept``: bob decrypts the first message (key exchange) of a fresh alice device (``count``
  distinct devices of distinct accounts, ~20 ms each to prepare).  Alice's device list and identity
  key are already known to bob (as from PEP and an earlier bundle fetch), so the op is parsing, the
  passive X3DH, ratchet initialisation, decryption, and what python-omemo does after every key
  exchange: delete the used pre key, generate a replacement, re-serialise and re-upload the bundle
  (100 pre keys), and encrypt + serialise the empty completion message to alice.  Each alice was given
  a bundle view holding a single pre key not used by any other prepared alice, so no two key
  exchanges collide on a pre key; one bob serves up to 100 ops, more ops use further bob accounts.
* ``fanout_100``: alice encrypts one message for bob's 100 devices (all sessions confirmed, DH step
  already taken): 100 device records and 100 sessions loaded/stored, 100 key material encryptions.
  (Bob's devices are created apart from each other, see :func:`_bob_devices`.)
* ``reverse_1000``: bob decrypts 1000 messages of one chain delivered last-first (the first one skips
  999 message keys, the default ``max_num_per_message_skipped_keys`` being 1000); heartbeats switched
  off as for ``decrypt``.  Each op has its own prepared batch of 1000 (1000 alice encryptions per
  ``count`` in setup, ~1-2 s each).
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator

import twomemo.etree

from tests.peers.session_manager import NS_OMEMO2, Directory, SMPeer

__all__ = ["SCENARIOS"]

NS = NS_OMEMO2
ALICE, BOB = "alice@example.org", "bob@example.net"
MSG = "Hello Bob, this is a short message."
NO_HEARTBEATS = 10**9
#: messages per ``reverse_1000`` op (``python -m bench --quick`` lowers it to 100)
REVERSE_LENGTH = 1000

Op = Callable[[], object]


def _peer(d: Directory, jid: str, **kw: object) -> SMPeer:
    return SMPeer.create(d, jid, namespaces=(NS,), **kw)  # type: ignore[arg-type]


def _deliver_empty(src: SMPeer, peers: list[SMPeer]) -> None:
    """Deliver ``src``'s queued empty messages to the peers of the addressed JID."""
    by_id = {(p.bare_jid, p.device_id): p for p in peers}
    for jid, elem in src.take_sent_empty():
        for key in elem.iter(f"{{{NS}}}key"):
            peer = by_id.get((jid, int(key.get("rid", "0"))))
            if peer is not None:
                peer.decrypt(src.bare_jid, elem)


def _steady_pair(bob_staleness: int | None = None) -> tuple[SMPeer, SMPeer]:
    """alice and bob after: key exchange, bob's completion, bob -> alice, alice -> bob."""
    d = Directory()
    alice = _peer(d, ALICE)
    bob = _peer(d, BOB, staleness_threshold=bob_staleness)
    bob.decrypt(ALICE, alice.encrypt([BOB], "hello")[NS])
    _deliver_empty(bob, [alice])
    alice.decrypt(BOB, bob.encrypt([ALICE], "hi")[NS])
    bob.decrypt(ALICE, alice.encrypt([BOB], "warm-up")[NS])  # alice's DH step, taken by bob
    assert not alice.sent_empty and not bob.sent_empty
    return alice, bob


def _supply(items: list[ET.Element], what: str) -> Callable[[], ET.Element]:
    it: Iterator[ET.Element] = iter(items)

    def take() -> ET.Element:
        try:
            return next(it)
        except StopIteration:
            raise RuntimeError(f"{what}: all {len(items)} prepared ops used") from None

    return take


def encrypt(count: int) -> Op:
    alice, _ = _steady_pair()

    def op() -> object:
        return alice.encrypt([BOB], MSG)

    return op


def decrypt(count: int) -> Op:
    alice, bob = _steady_pair(NO_HEARTBEATS)
    take = _supply([alice.encrypt([BOB], MSG)[NS] for _ in range(count)], "decrypt")

    def op() -> object:
        return bob.decrypt(ALICE, take())

    return op


def session_init(count: int) -> Op:
    d = Directory()
    _peer(d, BOB)
    template = _peer(d, ALICE)
    template.refresh_device_lists(BOB)  # bob's device list known, his bundle not fetched yet
    clones = [_peer(d, ALICE, storage=copy.deepcopy(template.storage), auto_refresh=False) for _ in range(count)]
    it = iter(clones)

    def op() -> object:
        try:
            alice = next(it)
        except StopIteration:
            raise RuntimeError(f"session_init: all {count} prepared ops used") from None
        return alice.encrypt([BOB], MSG)

    return op


def session_accept(count: int) -> Op:
    d = Directory()
    jobs: list[tuple[SMPeer, str, ET.Element]] = []
    per_bob = 100
    for b_index in range((count + per_bob - 1) // per_bob):
        bob_jid = BOB if b_index == 0 else f"bob{b_index}@example.net"
        bob = _peer(d, bob_jid)
        full = d.bundle(bob_jid, NS, bob.device_id)
        assert full is not None
        prekeys = full.find(f"{{{NS}}}prekeys")
        assert prekeys is not None
        pks = list(prekeys)
        for i in range(min(per_bob, count - b_index * per_bob, len(pks))):
            view = copy.deepcopy(full)
            view_pks = view.find(f"{{{NS}}}prekeys")
            assert view_pks is not None
            for pk in list(view_pks):
                if pk.get("id") != pks[i].get("id"):
                    view_pks.remove(pk)
            d.publish_bundle(bob_jid, NS, bob.device_id, view)
            alice_jid = f"alice{len(jobs)}@example.org"
            alice = _peer(d, alice_jid)
            kex = alice.encrypt([bob_jid], MSG)[NS]
            bob.refresh_device_lists(alice_jid)
            bob.devices(alice_jid)  # fetches alice's bundle once: her identity key is known
            jobs.append((bob, alice_jid, kex))
        d.publish_bundle(bob_jid, NS, bob.device_id, full)
    if len(jobs) != count:
        raise RuntimeError(f"session_accept: prepared {len(jobs)} of {count} ops")
    it = iter(jobs)

    def op() -> object:
        try:
            bob, alice_jid, kex = next(it)
        except StopIteration:
            raise RuntimeError(f"session_accept: all {count} prepared ops used") from None
        return bob.decrypt(alice_jid, kex)

    return op


def _bob_devices(d: Directory, n: int) -> list[SMPeer]:
    """``n`` devices of BOB published on ``d``, each created on a scratch directory and then moved.

    ``SessionManager.create`` of a new device downloads the bundles of all devices already in its
    own device list (identity keys, label checks), so creating 100 devices of one account on one
    directory costs ~5000 bundle parses (~13 s).  Created apart, no device knows the others, which
    changes nothing for alice's encryption; the merged list is published on ``d`` afterwards.
    """
    bobs = []
    for _ in range(n):
        scratch = Directory()
        bob = _peer(scratch, BOB)
        type(bob.sm)._directory = d  # the driver's per-peer SessionManager subclass holds its directory
        bob.directory = d
        bundle = scratch.bundle(BOB, NS, bob.device_id)
        assert bundle is not None
        d.publish_bundle(BOB, NS, bob.device_id, bundle)
        bobs.append(bob)
    d.publish_device_list(BOB, NS, twomemo.etree.serialize_device_list({b.device_id: None for b in bobs}))
    return bobs


def fanout_100(count: int) -> Op:
    d = Directory()
    alice = _peer(d, ALICE)
    bobs = _bob_devices(d, 100)
    first = alice.encrypt([BOB], "hello")[NS]
    for bob in bobs:
        bob.decrypt(ALICE, first)
        _deliver_empty(bob, [alice])
    second = alice.encrypt([BOB], "warm-up")[NS]  # alice's DH step on every session
    assert sum(1 for _ in second.iter(f"{{{NS}}}key")) == 100
    assert all(k.get("kex") is None for k in second.iter(f"{{{NS}}}key"))

    def op() -> object:
        return alice.encrypt([BOB], MSG)

    return op


def reverse_1000(count: int) -> Op:
    alice, bob = _steady_pair(NO_HEARTBEATS)
    batches = [[alice.encrypt([BOB], MSG)[NS] for _ in range(REVERSE_LENGTH)][::-1] for _ in range(count)]
    it = iter(batches)

    def op() -> object:
        try:
            batch = next(it)
        except StopIteration:
            raise RuntimeError(f"reverse_1000: all {count} prepared ops used") from None
        for elem in batch:
            bob.decrypt(ALICE, elem)
        return batch

    return op


SCENARIOS: dict[str, Callable[[int], Op]] = {
    "encrypt": encrypt,
    "decrypt": decrypt,
    "session_init": session_init,
    "session_accept": session_accept,
    "fanout_100": fanout_100,
    "reverse_1000": reverse_1000,
}
