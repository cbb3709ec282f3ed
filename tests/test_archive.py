"""The archive position and the choice of stanza-id, without a server."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from e2ee.client.archive import MAX_ID_LENGTH, ArchivePosition, own_stanza_id
from e2ee.storage import MemoryStorage


def _message(*ids: tuple[str, str]) -> ET.Element:
    msg = ET.Element("{jabber:client}message")
    for by, value in ids:
        ET.SubElement(msg, "{urn:xmpp:sid:0}stanza-id", {"by": by, "id": value})
    return msg


def test_only_one_stanza_id_by_our_own_account_counts() -> None:
    me = "alice@example.org"
    assert own_stanza_id(_message((me, "A")), me) == "A"
    assert own_stanza_id(_message(("Alice@Example.org", "A")), me) == "A"
    assert own_stanza_id(_message(("room@muc.example.org", "R"), (me, "A")), me) == "A"
    assert own_stanza_id(_message(("bob@example.org", "B")), me) is None
    assert own_stanza_id(_message((me, "A"), (me, "forged")), me) is None  # which one is real?
    assert own_stanza_id(_message((me, "")), me) is None
    assert own_stanza_id(_message(), me) is None


def test_the_position_survives_in_storage_and_refuses_odd_ids() -> None:
    storage = MemoryStorage()
    position = ArchivePosition(storage)
    assert (position.archive_id, position.time) == (None, None)
    position.advance(None, 5.0)
    assert (ArchivePosition(storage).archive_id, ArchivePosition(storage).time) == (None, 5.0)
    position.advance("abc", 6.0)
    position.advance("x" * (MAX_ID_LENGTH + 1), 7.0)
    position.advance("", 8.0)
    again = ArchivePosition(storage)
    assert (again.archive_id, again.time) == ("abc", 6.0)


def test_only_results_from_our_own_archive_are_decrypted() -> None:
    """A MAM result that reaches the archive reader from another account (not from our bare
    JID, nor from our server on our behalf) is skipped, even when its inner message is genuine."""
    import asyncio

    import slixmpp

    from e2ee.client.session import E2EESession, Received
    from e2ee.results import Decrypted, SendMessage

    from .engine_support import O2, Net

    net = Net()
    alice = net.device("alice@example.org", "a")
    bob = net.device("bob@example.net", "b")
    inbox: list[Received] = []
    session = E2EESession(alice, "pw", on_received=inbox.append)

    def result(frm: str | None, body: str) -> slixmpp.Message:
        inner = net.encrypt(bob, [alice.jid], body).elements[O2]
        xml = ET.Element("{jabber:client}message", {"to": alice.jid} | ({"from": frm} if frm else {}))
        res = ET.SubElement(xml, "{urn:xmpp:mam:2}result", {"queryid": "q", "id": body})
        fwd = ET.SubElement(
            ET.SubElement(res, "{urn:xmpp:forward:0}forwarded"),
            "{jabber:client}message",
            {"from": f"{bob.jid}/x", "to": alice.jid, "type": "chat"},
        )
        fwd.append(inner)
        return slixmpp.Message(xml=xml)

    # a session both ways first, so that the archived messages are not key exchanges (whose
    # answers and republished bundles would need a connection)
    hello = alice.decrypt(net.encrypt(bob, [alice.jid], "hello").elements[O2], bob.jid, to=alice.jid)
    for effect in hello.effects:
        if isinstance(effect, SendMessage):
            bob.decrypt(effect.encrypted, alice.jid, to=bob.jid)
    results = [result("mallory@example.com", "forged"), result(alice.jid, "own archive"), result(None, "server")]
    asyncio.run(session.e2ee.archive.decrypt_archived(results))
    assert [r.result.body for r in inbox if isinstance(r.result, Decrypted)] == ["own archive", "server"]
    assert all(r.archived for r in inbox) and len(inbox) == 2
