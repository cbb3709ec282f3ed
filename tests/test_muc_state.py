"""Group-chat bookkeeping without a server: the occupant nickname -> real JID map, membership
from presences and notices (``e2ee.client.muc_room.RoomState``), and how ``e2ee.client.muc.Rooms``
treats group messages it cannot attribute (catalogue D8: unknown real JID, message not from a
room we are in)."""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET

import pytest

from e2ee.client.errors import PolicyViolation, RoomNotSuitable, UnknownSender
from e2ee.client.muc_room import MUC_USER, RoomState, status_codes
from e2ee.client.session import E2EESession, Received
from e2ee.engine import Engine
from e2ee.errors import PeerError
from e2ee.storage import MemoryStorage

ROOM, ME, BOB, CAROL, EVE = (
    "room@rooms.example.org",
    "me@example.org",
    "bob@example.org",
    "carol@example.org",
    "eve@example.org",
)


def x(*items: dict[str, str], codes: tuple[int, ...] = ()) -> ET.Element:
    elem = ET.Element(f"{{{MUC_USER}}}x")
    for attrs in items:
        ET.SubElement(elem, f"{{{MUC_USER}}}item", attrs)
    for code in codes:
        ET.SubElement(elem, f"{{{MUC_USER}}}status", {"code": str(code)})
    return elem


def joined_state() -> RoomState:
    s = RoomState(ROOM, "me", ME)
    s.on_presence("bob", False, x({"jid": f"{BOB}/phone", "affiliation": "member", "role": "participant"}))
    s.on_presence("me", False, x({"jid": f"{ME}/laptop", "affiliation": "owner"}, codes=(110,)))
    return s


def test_occupants_are_mapped_to_real_bare_jids_from_their_presence() -> None:
    s = joined_state()
    assert s.joined and s.sender("bob") == BOB and s.sender("me") == ME
    assert s.members == {BOB: "member", ME: "owner"}
    # two devices of one account behind one nickname (Prosody multi-session)
    s.on_presence("carol", False, x({"jid": f"{CAROL}/a", "affiliation": "member"}, {"jid": f"{CAROL.upper()}/b"}))
    assert s.sender("carol") == CAROL
    s.on_presence("carol", True, x({"jid": f"{CAROL}/a", "affiliation": "member"}))
    with pytest.raises(UnknownSender, match="carol"):
        s.sender("carol")
    assert CAROL in s.members  # left the room, still a member: still a recipient


@pytest.mark.parametrize(
    "items",
    [
        (),  # a presence without <item jid>: the room hides it
        ({"affiliation": "member"},),
        ({"jid": f"{BOB}/a"}, {"jid": f"{EVE}/b"}),  # one nickname, two accounts
        ({"jid": "rooms.example.org"},),  # not an account
        ({"jid": "@@"},),
    ],
)
def test_a_nickname_without_one_clear_real_jid_is_unknown(items: tuple[dict[str, str], ...]) -> None:
    s = joined_state()
    s.on_presence("bob", False, x(*items))  # the mapping is replaced, never kept stale
    with pytest.raises(UnknownSender):
        s.sender("bob")


def test_nickname_change_moves_the_mapping_and_a_reused_nickname_gets_the_new_person() -> None:
    s = joined_state()
    s.on_presence("bob", True, x({"jid": f"{BOB}/phone", "nick": "robert"}, codes=(303,)))
    assert s.sender("robert") == BOB
    with pytest.raises(UnknownSender):
        s.sender("bob")
    s.on_presence("bob", False, x({"jid": f"{CAROL}/x", "affiliation": "member"}))
    assert s.sender("bob") == CAROL and s.sender("robert") == BOB
    s.on_presence("me", True, x({"jid": f"{ME}/laptop", "nick": "myself"}, codes=(110, 303)))
    assert s.nick == "myself" and s.joined and s.sender("myself") == ME


def test_affiliation_changes_from_presences_and_notices_update_the_recipients() -> None:
    s = joined_state()
    assert s.recipients() == [BOB, ME]
    assert s.on_notice(x({"jid": CAROL, "affiliation": "member"})) == frozenset()
    assert s.recipients() == [BOB, CAROL, ME]
    s.on_notice(x({"jid": CAROL, "affiliation": "outcast"}))
    s.on_presence("bob", True, x({"jid": f"{BOB}/phone", "affiliation": "none", "role": "none"}, codes=(321,)))
    assert s.recipients() == [ME] and s.joined
    s.set_members({BOB: "admin", CAROL: "none", EVE: "owner"})  # fetched lists replace what was known
    assert s.members == {BOB: "admin", EVE: "owner"}
    assert s.on_notice(x(codes=(104, 173))) == {104, 173}


def test_our_own_removal_is_recorded_with_its_status_codes() -> None:
    s = joined_state()
    s.on_presence("me", True, x({"jid": f"{ME}/laptop", "affiliation": "none", "role": "none"}, codes=(321, 110)))
    assert not s.joined and s.removed == {321}
    s2 = joined_state()
    s2.on_presence("me", True, x({"jid": f"{ME}/laptop"}, codes=(110,)))
    assert not s2.joined and s2.removed == {0}


def test_open_rooms_add_present_occupants_to_the_recipients() -> None:
    s = joined_state()
    s.members_only = False
    s.on_presence("visitor", False, x({"jid": f"{EVE}/r", "affiliation": "none"}))
    assert s.recipients() == [BOB, EVE, ME]


def test_status_codes_ignore_malformed_values() -> None:
    elem = x(codes=(110,))
    for bad in ("abc", "1100", "", "-11"):
        ET.SubElement(elem, f"{{{MUC_USER}}}status", {"code": bad})
    assert status_codes(elem) == {110} and status_codes(None) == frozenset()


def test_room_errors_are_typed_and_say_what_is_missing() -> None:
    e = RoomNotSuitable(ROOM, ("muc_nonanonymous", "muc_membersonly"))
    assert isinstance(e, PolicyViolation) and isinstance(e, PeerError)
    assert str(e) == (
        f"room {ROOM} cannot be used with OMEMO: it hides its occupants' real JIDs "
        "(not non-anonymous); it is not members-only"
    )
    assert "lacks http://jabber.org/protocol/muc" in str(RoomNotSuitable(ROOM, ("http://jabber.org/protocol/muc",)))
    assert issubclass(UnknownSender, PeerError)


def test_group_messages_that_cannot_be_attributed_are_refused_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Through the session's own handler (no server): a message from an unknown nickname gives
    UnknownSender with the room, every time, logged once; messages from a room we are not in, or
    from the room's own JID, are dropped; 1:1 messages are not the room handler's."""

    async def run() -> list[Received]:
        inbox: list[Received] = []
        session = E2EESession(Engine.create(MemoryStorage(), ME), "pw", on_received=inbox.append)
        session.rooms._rooms[ROOM] = joined_state()

        def stanza(frm: str, mtype: str = "groupchat") -> object:
            msg = session.make_message(mto=f"{ME}/laptop", mfrom=frm, mtype=mtype)
            ET.SubElement(msg.xml, "{urn:xmpp:omemo:2}encrypted")
            return msg

        with caplog.at_level(logging.WARNING, logger="e2ee.client.muc"):
            for frm in (f"{ROOM}/mallory", f"{ROOM}/mallory", "other@rooms.example.org/bob", ROOM):
                session.rooms._groupchat(stanza(frm))
            session.rooms._groupchat(stanza(f"{ROOM}/mallory", "chat"))
        return inbox

    inbox = asyncio.run(run())
    assert [(type(r.error), r.room, r.stanza_from, r.result) for r in inbox] == [
        (UnknownSender, ROOM, f"{ROOM}/mallory", None)
    ] * 2
    messages = [r.getMessage() for r in caplog.records]
    assert sum("mallory" in m for m in messages) == 1
    assert any("other@rooms.example.org/bob: not a room we are in" in m for m in messages)
    assert any(f"from room {ROOM} itself" in m for m in messages)
