"""The archive position and the choice of stanza-id, without a server."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from client.archive import MAX_ID_LENGTH, ArchivePosition, own_stanza_id
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
