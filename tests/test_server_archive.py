"""The archive catch-up through a real server (each kind): reading forward from the remembered
position (more than one page), the position advanced by live messages' stanza-ids, and a
sender's forged stanza-id (catalogue I5) neither hiding a message nor moving the position.

Archive pages differ between servers: Prosody caps a page at 50 results whatever we ask for and
leaves ``complete`` out until the last page; ejabberd writes ``complete='false'``.  The
catch-up follows RSM and ``<fin complete='true'/>`` only."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

from e2ee.client.archive import ArchivePosition
from e2ee.client.session import MAM_PAGE, E2EESession, Received
from e2ee.engine import Engine
from e2ee.results import Decrypted
from e2ee.storage import MemoryStorage

from .xmpp_server import Accounts

#: registered on this module's share of each server (the ``server`` fixture, tests/conftest.py)
SERVER_USERS = ("alice", "bob", "carol")


async def _connect(server: Accounts, engine: Engine, user: str, inbox: list[Received] | None = None) -> E2EESession:
    session = E2EESession(
        engine, f"{user}-pw", ca_file=server.cert, on_received=None if inbox is None else inbox.append
    )
    await session.start("127.0.0.1", server.port)
    return session


async def _delivered(session: E2EESession) -> None:
    """Wait until the server has taken every stanza ``session`` queued: a send returns once its
    message is queued, and the server handles a stream's stanzas in order, so the answer to an
    IQ sent after them comes after they were archived."""
    await session.plugin["xep_0030"].get_info(jid=session.boundjid.bare)


def _bodies(inbox: list[Received], archived: bool | None = None) -> list[str]:
    return [
        r.result.body for r in inbox if isinstance(r.result, Decrypted) and (archived is None or r.archived == archived)
    ]


async def _until(inbox: list[Received], count: int) -> None:
    for _ in range(500):
        if len(_bodies(inbox)) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(_bodies(inbox))} of {count} arrived")


def test_catch_up_reads_forward_from_where_it_stopped(server: Accounts) -> None:
    async def run() -> None:
        alice_engine = Engine.create(MemoryStorage(), server.jid("alice"))
        bob = await _connect(server, Engine.create(MemoryStorage(), server.jid("bob")), "bob")
        alice = await _connect(server, alice_engine, "alice")  # publishes; reads an empty archive
        first = ArchivePosition(alice_engine.storage)
        assert first.archive_id is None and first.time is not None
        await alice.close()

        offline = MAM_PAGE + 50  # more than the newest page read at a first connect
        for i in range(offline):
            assert (await bob.send_text(server.jid("alice"), f"offline {i}")).ready
        await _delivered(bob)
        inbox: list[Received] = []
        alice = await _connect(server, alice_engine, "alice", inbox)
        assert _bodies(inbox, archived=True) == [f"offline {i}" for i in range(offline)]
        # plus the heartbeat alice sent to bob during the catch-up (it is archived too)
        reflections = [r for r in inbox if getattr(r.result, "reflection", False)]
        assert alice.e2ee.caught_up == offline + len(reflections) == len([r for r in inbox if r.archived])
        assert alice.e2ee.stanza_ids  # both servers stamp stanza-ids and say so

        # live messages move the position on; the next catch-up reads only what came after
        await _delivered(alice)  # (alice's presence reached the server: she is online for bob)
        for i in range(3):
            assert (await bob.send_text(server.jid("alice"), f"live {i}")).ready
        await _until(inbox, offline + 3)
        position = ArchivePosition(alice_engine.storage).archive_id
        await alice.close()
        for i in range(2):
            assert (await bob.send_text(server.jid("alice"), f"later {i}")).ready
        await _delivered(bob)
        inbox.clear()
        alice = await _connect(server, alice_engine, "alice", inbox)
        assert len(inbox) == 2 and _bodies(inbox, archived=True) == ["later 0", "later 1"]
        assert alice.e2ee.caught_up == 2  # not the live ones again
        assert ArchivePosition(alice_engine.storage).archive_id != position

        # I5: bob adds a stanza-id "by alice" to his message
        await _delivered(alice)  # (online for bob)

        def forge(stanza: Any) -> Any:
            if stanza.xml.tag == "{jabber:client}message":
                ET.SubElement(stanza.xml, "{urn:xmpp:sid:0}stanza-id", {"by": server.jid("alice"), "id": "poison"})
            return stanza

        bob.add_filter("out", forge)
        inbox.clear()
        assert (await bob.send_text(server.jid("alice"), "with a forged stanza-id")).ready
        await _until(inbox, 1)
        assert _bodies(inbox) == ["with a forged stanza-id"]
        assert ArchivePosition(alice_engine.storage).archive_id not in (None, "poison")

        # a position the archive does not know: the newest page is read instead.  Not on
        # ejabberd 23.01: its archive ids are timestamps, and an id it does not know is not
        # refused (item-not-found) but answered with an empty, complete page (or taken as a
        # time), so a client cannot tell it from "nothing new"; nothing is lost either way
        if server.kind != "ejabberd":
            ArchivePosition(alice_engine.storage).advance("not-an-archive-id", 0.0)
            await alice.close()
            inbox.clear()
            alice = await _connect(server, alice_engine, "alice", inbox)
            assert ArchivePosition(alice_engine.storage).archive_id != "not-an-archive-id"
            assert not [r for r in inbox if r.error is not None]
        for client in (alice, bob):
            await client.close()

    asyncio.run(run())


def test_a_first_catch_up_reads_the_newest_messages_over_capped_pages(server: Accounts) -> None:
    """Without a remembered position the catch-up reads the newest messages, paging backwards
    (``<before/>``) until it has them: more than one server-capped page, oldest first."""

    async def run() -> None:
        engine = Engine.create(MemoryStorage(), server.jid("carol"))
        bob = await _connect(server, Engine.create(MemoryStorage(), server.jid("bob")), "bob")
        carol = await _connect(server, engine, "carol")
        await carol.close()
        engine.storage.put("own", "mam", b"")  # as if never read: no position
        count = 70  # more than Prosody's page of 50
        for i in range(count):
            assert (await bob.send_text(server.jid("carol"), f"newest {i}")).ready
        await _delivered(bob)
        inbox: list[Received] = []
        carol = await _connect(server, engine, "carol", inbox)
        assert _bodies(inbox, archived=True) == [f"newest {i}" for i in range(count)]
        for client in (carol, bob):
            await client.close()

    asyncio.run(run())
