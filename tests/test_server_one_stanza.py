"""One stanza per message for each addressee (issue 13 part 2), over a real server (Prosody and ejabberd).

A contact that speaks only legacy OMEMO (an independent client: slixmpp-omemo with its legacy
backend only, ``tests/peers/slixmpp_omemo_peer.py``) must receive exactly one stanza per message
we send, which it decrypts: no second stanza holding only an OMEMO 2 ``<encrypted/>`` for our
own devices and the fallback body (its client would show that body as a message).  Our own
OMEMO 2 device still gets every message: the copy for it goes to our own bare JID (no body),
live and from our archive, and is shown once.  The same in a room with a legacy-only member:
the room gets one stanza per message, the own copy goes to our bare JID, not to the room.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from e2ee.client.session import FALLBACK_BODY, E2EESession, Received
from e2ee.engine import NAMESPACES, Engine
from e2ee.results import Decrypted, Outcome
from e2ee.storage import MemoryStorage

from .peers.slixmpp_omemo_peer import LegacyOmemoPeer
from .xmpp_server import Accounts

pytestmark = pytest.mark.filterwarnings("ignore:Accessing plugins through the XMPP object:DeprecationWarning")

O2, LEGACY = NAMESPACES


#: registered on this module's share of each server (the ``server`` fixture, tests/conftest.py)
SERVER_USERS = ("alice", "bob", "max", "ned")


async def _until(done: Callable[[], bool], what: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what()}")
        await asyncio.sleep(0.01)


def _wire(client: object, sender_bare: str, into: list[ET.Element], mtype: str) -> None:
    """Record every ``<message type=mtype>`` from ``sender_bare`` reaching ``client``'s stream
    (observation only)."""

    def record(msg: object) -> None:
        stanza = msg.xml  # type: ignore[attr-defined]
        if stanza.get("type") == mtype and stanza.get("from", "").partition("/")[0] == sender_bare:
            into.append(stanza)

    client.register_handler(
        Callback(  # type: ignore[attr-defined]
            f"test: wire {mtype}", MatchXPath("{jabber:client}message"), record
        )
    )


def _decrypted(inbox: list[Received]) -> list[str | None]:
    return [r.result.body for r in inbox if isinstance(r.result, Decrypted)]


async def _session(
    server: Accounts, user: str, storage: MemoryStorage, inbox: list[Received], *, again: bool = False
) -> E2EESession:
    """A device of ``user`` (``again``: the same device, reconnecting with its stored state)."""
    engine = Engine(storage) if again else Engine.create(storage, server.jid(user))
    s = E2EESession(engine, f"{user}-pw", ca_file=server.cert, on_received=inbox.append)
    await s.start("127.0.0.1", server.port)
    return s


def test_a_legacy_only_contact_gets_one_stanza_and_own_devices_all_decrypt(server: Accounts) -> None:
    async def run() -> None:
        alice_jid, bob_jid = server.jid("alice"), server.jid("bob")
        bob = LegacyOmemoPeer(bob_jid, "bob-pw", ca_file=server.cert)
        at_bob: list[ET.Element] = []
        _wire(bob, alice_jid, at_bob, "chat")
        phone_store = MemoryStorage()
        phone_inbox: list[Received] = []
        phone = await _session(server, "alice", phone_store, phone_inbox)  # our own OMEMO 2 device
        laptop_inbox: list[Received] = []
        await bob.start("127.0.0.1", server.port)
        laptop = await _session(server, "alice", MemoryStorage(), laptop_inbox)
        try:
            bob_device = await bob.device_id()
            sent = [f"to a legacy-only contact #{i}" for i in range(3)]
            for body in sent:
                result = await laptop.send_text(bob_jid, body)
                assert result.ready, result.devices
                reached = {(d.jid, d.device_id, d.namespace) for d in result.devices if d.outcome is Outcome.ENCRYPTED}
                assert reached == {(bob_jid, bob_device, LEGACY), (alice_jid, phone.engine.device_id, O2)}
                assert set(result.elements) == {LEGACY} and set(result.own_copy) == {O2}
            await _until(
                lambda: len([m for m in bob.inbox if m.body]) >= 3 and len(_decrypted(phone_inbox)) >= 3,
                lambda: (bob.inbox, phone_inbox),
            )
            await asyncio.sleep(0.2)  # anything else on its way arrives (a second stanza, a duplicate)
            # the contact: one stanza per send, each decrypted; no OMEMO 2 element, no fallback text shown
            with_body = [s for s in at_bob if s.find("{jabber:client}body") is not None]
            assert len(with_body) == len(sent), [ET.tostring(s)[:200] for s in at_bob]
            assert not [s for s in at_bob if s.find(f"{{{O2}}}encrypted") is not None]
            assert [m.error for m in bob.inbox if m.error is not None] == []
            assert [m.body for m in bob.inbox if m.body is not None] == sent
            assert FALLBACK_BODY not in [m.body for m in bob.inbox]
            # our own OMEMO 2 device: each message exactly once, sent by the laptop, not as an error
            # (in any order: a key exchange is delivered after its prekey was replaced)
            assert sorted(_decrypted(phone_inbox)) == sent, [(type(r.result).__name__, r.error) for r in phone_inbox]
            assert [r.error for r in phone_inbox if r.error is not None] == []
            mine = [r.result for r in phone_inbox if isinstance(r.result, Decrypted)]
            assert {(m.jid, m.device_id, m.namespace) for m in mine} == {(alice_jid, laptop.engine.device_id, O2)}
            assert _decrypted(laptop_inbox) == []  # the sender shows nothing of its own copies

            # from the archive: the phone is offline while two more messages are sent
            phone.disconnect()
            await asyncio.sleep(0.2)
            later = ["while the phone was off #1", "while the phone was off #2"]
            for body in later:
                assert (await laptop.send_text(bob_jid, body)).ready
            await _until(lambda: len([m for m in bob.inbox if m.body]) >= 5, lambda: bob.inbox)
            back_inbox: list[Received] = []
            phone = await _session(server, "alice", phone_store, back_inbox, again=True)
            await _until(lambda: len(_decrypted(back_inbox)) >= 2, lambda: back_inbox)
            await asyncio.sleep(0.2)
            assert sorted(_decrypted(back_inbox)) == later  # once each (archive and offline copies collapse)
            assert all(r.archived for r in back_inbox if isinstance(r.result, Decrypted))
            assert [r.error for r in back_inbox if r.error is not None] == []
            with_body = [s for s in at_bob if s.find("{jabber:client}body") is not None]
            assert len(with_body) == len(sent) + len(later)
            assert [m.body for m in bob.inbox if m.body is not None] == sent + later
        finally:
            for c in (laptop, phone, bob):
                c.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())


def test_a_room_with_a_legacy_only_member_gets_one_stanza_per_message(server: Accounts) -> None:
    room = server.room("one-stanza")

    async def run() -> None:
        max_jid = server.jid("max")
        other_store = MemoryStorage()
        other_inbox: list[Received] = []
        other = await _session(server, "max", other_store, other_inbox)  # max's own second device
        inbox: list[Received] = []
        mx = await _session(server, "max", MemoryStorage(), inbox)
        ned_inbox: list[Received] = []
        ned = await _session(server, "ned", MemoryStorage(), ned_inbox)
        at_ned: list[ET.Element] = []
        _wire(ned, room, at_ned, "groupchat")
        try:
            # ned's account no longer announces an OMEMO 2 device list: his device is legacy-only
            await ned.plugin["xep_0060"].delete_node(ned.boundjid.bare, "urn:xmpp:omemo:2:devices")
            await mx.rooms.create(room, members=[ned.engine.jid])
            await ned.rooms.join(room)
            await other.rooms.join(room, "max-phone")  # max's second device, in the room too
            sent = ["room message #1", "room message #2"]
            for body in sent:
                result = await mx.rooms.send_text(room, body)
                assert result.ready, result.devices
                reached = {(d.jid, d.namespace) for d in result.devices if d.outcome is Outcome.ENCRYPTED}
                assert reached == {(ned.engine.jid, LEGACY), (max_jid, O2)}
                assert set(result.elements) == {LEGACY} and set(result.own_copy) == {O2}

            def ned_bodies() -> list[str | None]:
                return [r.result.body for r in ned_inbox if isinstance(r.result, Decrypted) and r.room == room]

            await _until(
                lambda: len(ned_bodies()) >= 2 and len(_decrypted(other_inbox)) >= 2, lambda: (ned_inbox, other_inbox)
            )
            await asyncio.sleep(0.2)
            from_max = [s for s in at_ned if s.find("{jabber:client}body") is not None]
            assert len(from_max) == len(sent), [ET.tostring(s)[:200] for s in at_ned]
            assert not [s for s in at_ned if s.find(f"{{{O2}}}encrypted") is not None]
            assert sorted(ned_bodies()) == sent  # (a key exchange is delivered after its effects ran)
            assert [r.error for r in ned_inbox if r.error is not None] == []
            # max's other device got each message once, through his bare JID (the room's
            # reflection holds no key for it), and shows it under the room
            assert sorted(_decrypted(other_inbox)) == sent
            assert {r.room for r in other_inbox if isinstance(r.result, Decrypted)} == {room}, [
                (r.stanza_from, r.carbon, r.result.to) for r in other_inbox if isinstance(r.result, Decrypted)
            ]
            assert [r.error for r in other_inbox if r.error is not None] == []

            # and from the archive
            other.disconnect()
            await asyncio.sleep(0.2)
            assert (await mx.rooms.send_text(room, "room message while off")).ready
            await _until(lambda: len(ned_bodies()) >= 3, lambda: ned_inbox)
            back: list[Received] = []
            other = await _session(server, "max", other_store, back, again=True)
            await _until(lambda: len(_decrypted(back)) >= 1, lambda: back)
            await asyncio.sleep(0.2)
            assert _decrypted(back) == ["room message while off"]
        finally:
            for x in (mx, ned, other):
                x.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())
