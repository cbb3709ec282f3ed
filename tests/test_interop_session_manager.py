"""Interoperability over XML with an independent implementation: python-omemo 2.1.0's
``SessionManager`` (twomemo for OMEMO 2, oldmemo for legacy OMEMO), driven by
``tests/peers/session_manager.py``.

alice has two devices (ours, python-omemo) and so has bob.  Every device publishes its device
list and bundle to one shared directory (the "PEP service").  Sessions are started from both
sides (our devices initiate with python-omemo devices and the other way round), then 200
messages go each way from randomly chosen devices, delivered in shuffled batches together with
every empty message (key-exchange answers, heartbeats).  Every copy must decrypt on every
intended device: the recipient's two devices and the sender's other device (own-device copy).
Run once per namespace, with every device speaking only that namespace.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest

from e2ee.engine import Engine, parse_device_list
from e2ee.results import Decrypted, Effect, EmptyMessage, FetchBundle, FetchDeviceList, Publish, SendMessage
from e2ee.storage import MemoryStorage

from .engine_support import DEVICE_LIST_NODE, LEGACY, O2
from .peers.session_manager import Directory, SMPeer
from .support import seeded_rng

ALICE, BOB = "alice@example.org", "bob@example.net"


@dataclass
class World:
    """Our engines and the python-omemo peers around one directory."""

    ns: str
    directory: Directory = field(default_factory=Directory)
    ours: list[Engine] = field(default_factory=list)
    #: (sender jid, sender device id, element, recipients' bare jid) waiting for delivery
    pending: list[tuple[str, int, ET.Element]] = field(default_factory=list)
    seen_revisions: dict[tuple[int, str], int] = field(default_factory=dict)

    def run(self, engine: Engine, effects: list[Effect] | tuple[Effect, ...]) -> None:
        for e in effects:
            if isinstance(e, Publish):
                if e.node == DEVICE_LIST_NODE[self.ns]:
                    self.directory.publish_device_list(engine.jid, self.ns, e.payload)
                elif self.ns == O2 and e.node == "urn:xmpp:omemo:2:bundles":
                    self.directory.publish_bundle(engine.jid, self.ns, int(e.item_id), e.payload)
                elif self.ns == LEGACY and e.node.startswith("eu.siacs.conversations.axolotl.bundles:"):
                    self.directory.publish_bundle(engine.jid, self.ns, engine.device_id, e.payload)
                # publications in the other namespace are dropped: this run speaks one namespace
            elif isinstance(e, FetchDeviceList):
                if e.namespace == self.ns:
                    self.run(
                        engine, engine.on_device_list(e.jid, e.namespace, self.directory.device_list(e.jid, self.ns))
                    )
            elif isinstance(e, FetchBundle):
                elem = self.directory.bundle(e.jid, e.namespace, e.device_id)
                if elem is not None:
                    self.run(engine, engine.on_bundle(e.jid, e.device_id, e.namespace, elem))
            elif isinstance(e, SendMessage):
                self.pending.append((engine.jid, engine.device_id, e.encrypted))

    def push(self) -> None:
        """PEP +notify: our engines learn every device-list change."""
        for engine in self.ours:
            for jid in (ALICE, BOB):
                rev = self.directory.revision(jid, self.ns)
                if self.seen_revisions.get((id(engine), jid)) != rev:
                    self.seen_revisions[(id(engine), jid)] = rev
                    elem = self.directory.device_list(jid, self.ns)
                    self.run(engine, engine.on_device_list(jid, self.ns, elem))

    def our_device(self, jid: str, seed: str) -> Engine:
        existing = self.directory.device_list(jid, self.ns)
        lists = [parse_device_list(self.ns, existing)] if existing is not None else []
        engine = Engine.create(MemoryStorage(), jid, lists, rng=seeded_rng(seed))
        self.ours.append(engine)
        self.run(engine, engine.publish())
        self.push()
        return engine

    def peer_device(self, jid: str) -> SMPeer:
        peer = SMPeer.create(self.directory, jid, namespaces=(self.ns,))
        self.push()
        return peer


Device = Engine | SMPeer


def _jid(device: Device, devices: dict[str, list[Device]]) -> str:
    return next(j for j, ds in devices.items() if device in ds)


def _device_id(device: Device) -> int:
    return device.device_id


@pytest.mark.parametrize("ns", [O2, LEGACY], ids=["omemo2", "legacy"])
def test_two_plus_two_devices_200_messages_each_way_shuffled(ns: str) -> None:
    w = World(ns)
    a1 = w.our_device(ALICE, "interop-a1")
    a2 = w.peer_device(ALICE)
    b1 = w.our_device(BOB, "interop-b1")
    b2 = w.peer_device(BOB)
    devices: dict[str, list[Device]] = {ALICE: [a1, a2], BOB: [b1, b2]}
    everyone = [a1, a2, b1, b2]
    rnd = random.Random(2026)
    expected: dict[tuple[str, int], int] = {}  # (body, receiver id) -> count
    received: dict[tuple[str, int], int] = {}

    def send(sender: Device, body: str) -> None:
        jid = _jid(sender, devices)
        other = BOB if jid == ALICE else ALICE
        if isinstance(sender, Engine):
            w.push()
            for _ in range(3):
                fetches = sender.prepare([other])
                if not fetches:
                    break
                w.run(sender, fetches)
            result = sender.encrypt_omemo([other], body)
            assert result.ready, result.devices
            reached = {d.device_id for d in result.devices if d.outcome.value == "encrypted"}
            (elem,) = result.elements.values()
        else:
            (elem,) = sender.encrypt([other], body).values()
            reached = {_device_id(d) for d in everyone if d is not sender}
        assert reached == {_device_id(d) for d in everyone if d is not sender}, (body, reached)
        for d in everyone:
            if d is not sender:
                expected[(body, _device_id(d))] = 1
        w.pending.append((jid, _device_id(sender), elem))

    def deliver_some(fraction: float) -> None:
        rnd.shuffle(w.pending)
        k = int(len(w.pending) * fraction) if fraction < 1 else len(w.pending)
        batch, w.pending = w.pending[:k], w.pending[k:]
        for sender_jid, sender_id, elem in batch:
            for d in everyone:
                if _device_id(d) == sender_id:
                    continue
                if isinstance(d, Engine):
                    out = d.decrypt(elem, sender_jid, to=BOB if sender_jid == ALICE else ALICE)
                    if isinstance(out, Decrypted):
                        received[(out.body or "", d.device_id)] = received.get((out.body or "", d.device_id), 0) + 1
                    else:
                        assert isinstance(out, EmptyMessage) or out.__class__.__name__ == "NotForThisDevice", out
                    w.run(d, [e for e in out.effects if isinstance(e, (SendMessage, Publish))])
                else:
                    if not _addressed_to(elem, d.device_id):
                        continue
                    got = d.decrypt(sender_jid, elem)
                    if got.body is not None:
                        received[(got.body, d.device_id)] = received.get((got.body, d.device_id), 0) + 1
                    for _to, empty in d.take_sent_empty():
                        w.pending.append((_jid(d, devices), d.device_id, empty))
        w.push()

    # sessions from both sides, one initiator at a time (no simultaneous initiation)
    for i, d in enumerate(everyone):
        send(d, f"hello {i}")
        deliver_some(1)
        deliver_some(1)
    # 200 messages each way, shuffled
    for i in range(200):
        send(rnd.choice(devices[ALICE]), f"a->b {i}")
        send(rnd.choice(devices[BOB]), f"b->a {i}")
        if rnd.random() < 0.3:
            deliver_some(rnd.random())
    while w.pending:
        deliver_some(1)

    missing = {k for k in expected if k not in received}
    assert not missing, sorted(missing)[:10]
    assert all(v == 1 for v in received.values())
    assert len(expected) == 3 * (4 + 400)


def _addressed_to(elem: ET.Element, device_id: int) -> bool:
    return any(k.get("rid") == str(device_id) for k in elem.iter() if k.tag.endswith("}key"))
