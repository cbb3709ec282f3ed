"""What a person waits for (issue 16, point 4): the IQs a session sends at connect and for a
send, counted on the wire of a real server (slixmpp's stanza filters, each server kind).

IQs are noted as the session hands them to slixmpp's send queue.  An IQ's *round* is one more than the highest round among the IQs whose answers had arrived
when it was sent (1 for an IQ sent before any answer to one of the IQs considered): IQs sent
together, without waiting for one another, share a round, and the highest round is the number of
round trips waited for.  Nothing here is timed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from e2ee.client.gpg import GnuPG
from e2ee.client.session import E2EESession
from e2ee.engine import Engine
from e2ee.storage import MemoryStorage

from .xmpp_server import Accounts

SERVER_USERS = ("alice", "bob", "carol", "dave")  # registered on this module's share of each server (tests/conftest.py)

O2_DEVICES = "urn:xmpp:omemo:2:devices"
LEGACY_DEVICES = "eu.siacs.conversations.axolotl.devicelist"
PUBLIC_KEYS = "urn:xmpp:openpgp:0:public-keys"
DISCO_INFO = "{http://jabber.org/protocol/disco#info}query"
MAM = "{urn:xmpp:mam:2}query"


@dataclass(frozen=True)
class SentIq:
    type: str
    child: str  # the first child's qualified tag
    op: str | None  # items, publish, ... (the element with the PEP node)
    node: str | None
    to: str
    id: str
    sent_at: int  # position in the sequence of events (sends and answers)


@dataclass
class Wire:
    """The IQs a session sent (with their round), and the answers it received."""

    sent: list[SentIq] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=dict)  # IQ id -> when its answer arrived
    events: int = 0

    def install(self, session: E2EESession) -> None:
        real_send = session.send

        def send(stanza: Any, use_filters: bool = True) -> None:
            out(stanza)  # noted when the session hands it over (queued), not when written
            real_send(stanza, use_filters)

        def out(stanza: object) -> None:
            xml = getattr(stanza, "xml", None)
            if xml is not None and xml.tag == "{jabber:client}iq" and xml.get("type") in ("get", "set"):
                child = next(iter(xml), None)
                op = node = None
                if child is not None:
                    for sub in child.iter():
                        if sub.get("node") is not None:
                            op, node = sub.tag.rpartition("}")[2], sub.get("node")
                            break
                self.sent.append(
                    SentIq(
                        str(xml.get("type")),
                        child.tag if child is not None else "",
                        op,
                        node,
                        str(xml.get("to") or ""),
                        str(xml.get("id") or ""),
                        self.events,
                    )
                )
                self.events += 1

        def incoming(stanza: object) -> object:
            xml = getattr(stanza, "xml", None)
            if xml is not None and xml.tag == "{jabber:client}iq" and xml.get("type") in ("result", "error"):
                self.answered.setdefault(str(xml.get("id") or ""), self.events)
                self.events += 1
            return stanza

        session.send = send  # type: ignore[method-assign]
        session.add_filter("in", incoming)

    def reads(self, node: str) -> list[SentIq]:
        return [i for i in self.sent if i.op == "items" and i.node is not None and i.node.startswith(node)]

    def publishes(self) -> list[SentIq]:
        return [i for i in self.sent if i.op == "publish"]

    def rounds(self, iqs: list[SentIq]) -> dict[str, int]:
        """The round of each IQ of ``iqs`` (by id), counted among ``iqs`` only."""
        out: dict[str, int] = {}
        for iq in iqs:  # in the order sent
            before = [out[o.id] for o in iqs if o.id in out and self.answered.get(o.id, 1 << 60) < iq.sent_at]
            out[iq.id] = 1 + max(before, default=0)
        return out


async def _connect(server: Accounts, engine: Engine, user: str) -> tuple[E2EESession, Wire]:
    session = E2EESession(engine, f"{user}-pw", ca_file=server.cert)
    wire = Wire()
    wire.install(session)
    await session.start("127.0.0.1", server.port)
    return session, wire


def test_a_reconnect_reads_each_own_node_once_and_republishes_nothing(server: Accounts) -> None:
    """Over a real server (each kind), with OMEMO and OpenPGP: at a reconnect our device lists
    are read once each (their answers serve the publication check too), nothing is published
    (the OpenPGP key and metadata included: the server holds them unchanged), and the reads
    all go out together, in one round trip: carbons, both device lists, both bundles, the
    OpenPGP metadata and key data and the archive's first page."""
    runner = GnuPG()
    engine = Engine.create(MemoryStorage(), server.jid("alice"), openpgp=runner)

    async def run() -> None:
        first, wire1 = await _connect(server, engine, "alice")
        await first.close()
        # the first connect created and published everything, OpenPGP key included
        assert {i.node for i in wire1.publishes()} >= {O2_DEVICES, PUBLIC_KEYS}
        assert any(i.node is not None and i.node.startswith(PUBLIC_KEYS + ":") for i in wire1.publishes())

        again, wire = await _connect(server, engine, "alice")
        await again.close()
        assert len(wire.reads(O2_DEVICES)) == 1 and len(wire.reads(LEGACY_DEVICES)) == 1
        assert wire.publishes() == []
        assert [i.node for i in wire.reads(PUBLIC_KEYS)] == [PUBLIC_KEYS, f"{PUBLIC_KEYS}:{runner_fpr()}"]
        # the whole set-up (slixmpp's bind and own entity-caps query aside): one round trip
        ours = [i for i in wire.sent if not i.child.endswith("}bind") and not (i.child == DISCO_INFO and i.node)]
        rounds = wire.rounds(ours)
        assert max(rounds.values()) == 1, [(i.child, i.node, rounds[i.id]) for i in ours]
        together = {i.node or i.child for i in ours if rounds[i.id] == 1}
        assert {
            "{urn:xmpp:carbons:2}enable",
            O2_DEVICES,
            LEGACY_DEVICES,
            PUBLIC_KEYS,
            f"{PUBLIC_KEYS}:{runner_fpr()}",
            MAM,
            "urn:xmpp:omemo:2:bundles",
            f"eu.siacs.conversations.axolotl.bundles:{engine.device_id}",
        } <= together
        assert [i.child for i in wire.sent].count(MAM) == 1

    def runner_fpr() -> str:
        fpr = engine.openpgp.fingerprint
        assert fpr is not None
        return fpr

    try:
        asyncio.run(run())
    finally:
        runner.close()


def test_own_account_features_are_asked_once_per_server_caps_hash(server: Accounts) -> None:
    """Our account's disco#info (does it stamp stanza-ids?) is asked at the first connect and
    kept in the storage with the server's caps hash; a reconnect under the same hash does not
    ask again and knows the answer; a changed hash asks again."""
    storage = MemoryStorage()
    engine = Engine.create(storage, server.jid("bob"))
    own = server.jid("bob")

    def disco_of_own(wire: Wire) -> list[SentIq]:
        return [i for i in wire.sent if i.child == DISCO_INFO and i.to == own]

    async def run() -> None:
        s, wire = await _connect(server, engine, "bob")
        stamps = s.e2ee.stanza_ids
        caps = s.e2ee.archive.server_caps
        await s.close()
        assert caps, "the server announces a caps hash in its stream features"
        assert len(disco_of_own(wire)) == 1

        s, wire = await _connect(server, engine, "bob")
        await s.close()
        assert disco_of_own(wire) == [] and s.e2ee.stanza_ids == stamps

        # the server's configuration changed (another hash): asked again
        from e2ee.client.archive import AccountFeatures

        AccountFeatures.save(storage, server.server.domain, "another-hash", not stamps)
        s, wire = await _connect(server, engine, "bob")
        await s.close()
        assert len(disco_of_own(wire)) == 1 and s.e2ee.stanza_ids == stamps
        assert AccountFeatures.load(storage, server.server.domain, caps) == stamps

    asyncio.run(run())


def test_a_contacts_lists_are_fetched_once_while_fresh_and_a_new_device_is_still_picked_up(
    server: Accounts,
) -> None:
    """Over a real server (each kind), without a presence subscription: the first send to a
    contact fetches its device lists and subscribes to them, in one round trip; a second send,
    and a send from the next session on the same storage, fetch nothing; the contact adds a
    device and the next send (still nothing fetched) encrypts for it too, from the PEP
    notification; once the fetch is older than the freshness window the lists are fetched again."""
    from e2ee.client.followed import FRESH_WINDOW

    carol_engine = Engine.create(MemoryStorage(), server.jid("carol"))
    dave_storage = MemoryStorage()
    dave_engine = Engine.create(dave_storage, server.jid("dave"))
    carol = server.jid("carol")

    def fetched(wire: Wire, start: int) -> list[SentIq]:
        lists = (O2_DEVICES, LEGACY_DEVICES)
        return [i for i in wire.sent[start:] if i.op == "items" and i.to == carol and i.node in lists]

    async def run() -> None:
        c1, _ = await _connect(server, carol_engine, "carol")
        dave, wire = await _connect(server, dave_engine, "dave")
        try:
            start = len(wire.sent)
            first = await dave.send_text(carol, "first")
            assert first.ready and carol_engine.device_id in {d.device_id for d in first.devices}
            asked = fetched(wire, start)
            assert sorted(i.node or "" for i in asked) == sorted([O2_DEVICES, LEGACY_DEVICES])
            subscribes = [i for i in wire.sent[start:] if i.op == "subscribe" and i.to == carol]
            assert sorted(i.node or "" for i in subscribes) == sorted([O2_DEVICES, LEGACY_DEVICES])
            rounds = wire.rounds([*asked, *subscribes])
            assert set(rounds.values()) == {1}  # sent together

            start = len(wire.sent)
            assert (await dave.send_text(carol, "second")).ready
            assert fetched(wire, start) == []

            # carol adds a device: its publication is notified to dave's session
            c2_engine = Engine.create(MemoryStorage(), carol)
            c2, _ = await _connect(server, c2_engine, "carol")
            try:
                deadline = asyncio.get_running_loop().time() + 10
                while c2_engine.device_id not in {d.device_id for d in dave_engine.devices(carol)}:
                    assert asyncio.get_running_loop().time() < deadline, "no notification of carol's new device"
                    await asyncio.sleep(0.02)
            finally:
                await c2.close()
            start = len(wire.sent)
            third = await dave.send_text(carol, "third")
            assert fetched(wire, start) == []
            assert {carol_engine.device_id, c2_engine.device_id} <= {
                d.device_id for d in third.devices if d.outcome.value == "encrypted"
            }
        finally:
            await dave.close()

        # the next process on the same storage: nothing fetched while fresh
        dave, wire = await _connect(server, dave_engine, "dave")
        try:
            start = len(wire.sent)
            assert (await dave.send_text(carol, "from the next session")).ready
            assert fetched(wire, start) == []
            # older than the window: fetched again
            dave.e2ee.outgoing.followed.fetched(carol, [O2_DEVICES, LEGACY_DEVICES], time.time() - FRESH_WINDOW - 1)
            start = len(wire.sent)
            assert (await dave.send_text(carol, "a while later")).ready
            assert sorted(i.node or "" for i in fetched(wire, start)) == sorted([O2_DEVICES, LEGACY_DEVICES])
        finally:
            await dave.close()
            await c1.close()

    asyncio.run(run())
