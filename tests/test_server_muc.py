"""OMEMO in group chats (XEP-0045) over a real server (Prosody and ejabberd) on 127.0.0.1 with its MUC component
(``rooms.localhost``): members-only non-anonymous rooms, recipients from the affiliation lists,
members added and removed, rooms that hide real JIDs refused, and forged group messages."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import slixmpp

from e2ee.client.errors import RoomNotSuitable, RoomUnavailable
from e2ee.client.muc_room import MEMBERSONLY, NONANONYMOUS
from e2ee.client.session import E2EESession, Received
from e2ee.engine import NAMESPACES, Engine
from e2ee.errors import AffixMismatch
from e2ee.results import Decrypted, NotForThisDevice, Outcome
from e2ee.storage import MemoryStorage

from .support import cli_command, cli_env, run_cli
from .xmpp_server import Accounts

O2 = NAMESPACES[0]
ROOT = Path(__file__).resolve().parent.parent
Inbox = list[tuple[str, Received]]


#: registered on this module's share of each server (the ``server`` fixture, tests/conftest.py)
SERVER_USERS = ("alice", "bob", "carol", "dave", "erin", "frank")


async def _session(server: Accounts, user: str, inbox: Inbox, name: str) -> E2EESession:
    engine = Engine.create(MemoryStorage(), server.jid(user))
    s = E2EESession(engine, f"{user}-pw", ca_file=server.cert, on_received=lambda r: inbox.append((name, r)))
    await s.start("127.0.0.1", server.port)
    return s


async def _until(what: Callable[[], bool], why: Callable[[], object], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not what():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(why())
        await asyncio.sleep(0.02)


def _room_bodies(inbox: Inbox, name: str, room: str) -> list[str]:
    """What ``name`` decrypted from ``room``, sorted (messages from different senders may be
    delivered in either order: one waiting for its key-exchange answer to go out)."""
    return sorted(
        r.result.body or "" for n, r in inbox if n == name and r.room == room and isinstance(r.result, Decrypted)
    )


def _encrypted_for(result: object) -> set[tuple[str, int]]:
    return {(d.jid, d.device_id) for d in result.devices if d.outcome is Outcome.ENCRYPTED}  # type: ignore[attr-defined]


def test_room_of_three_accounts_with_a_member_added_later_and_one_removed(server: Accounts) -> None:
    """Must-show 1 of issue 8 (group chats): alice (two devices), bob and carol in a members-only
    non-anonymous room; every message decrypts on every other member device (alice's other
    device included) and comes back to its sender as a reflection; dave, made a member later,
    gets later messages; carol, whose affiliation is removed, does not: her devices are not in the
    key list, her inbox stays empty, and the element itself holds no key for her."""
    alice, bob, carol, dave = (server.jid(u) for u in ("alice", "bob", "carol", "dave"))
    room = server.room("omemo")

    async def run() -> None:
        inbox: Inbox = []
        s = {
            "alice1": await _session(server, "alice", inbox, "alice1"),
            "alice2": await _session(server, "alice", inbox, "alice2"),
            "bob": await _session(server, "bob", inbox, "bob"),
            "carol": await _session(server, "carol", inbox, "carol"),
        }
        dev = {n: (x.engine.jid, x.engine.device_id) for n, x in s.items()}
        try:
            state = await s["alice1"].rooms.create(room, members=[bob, carol])
            assert state.members == {alice: "owner", bob: "member", carol: "member"}
            for n in ("alice2", "bob", "carol"):
                joined = await s[n].rooms.join(room)  # alice2 shares alice1's nickname
                assert joined.joined and joined.recipients() == sorted([alice, bob, carol])
            assert s["bob"].rooms.get(room).occupants == {
                server.user(u): server.jid(u) for u in ("alice", "bob", "carol")
            }  # type: ignore[union-attr]

            expected: dict[str, list[str]] = {n: [] for n in s}
            for sender in ("alice1", "bob", "alice2", "carol"):
                body = f"hello room from {sender}"
                result = await s[sender].rooms.send_text(room, body)
                assert result.ready, result.devices
                assert _encrypted_for(result) == {dev[n] for n in s if n != sender}
                for n in s:
                    if n != sender:
                        expected[n].append(body)
                await _until(
                    lambda: all(_room_bodies(inbox, n, room) == sorted(expected[n]) for n in s),
                    lambda: {n: _room_bodies(inbox, n, room) for n in s},
                )
            got = [
                (n, r.result.jid)
                for n, r in inbox
                if isinstance(r.result, Decrypted) and r.result.body == "hello room from bob"
            ]
            assert sorted(got) == [("alice1", bob), ("alice2", bob), ("carol", bob)]  # the real JID, not the nickname

            def reflections() -> list[str]:
                return sorted(
                    n
                    for n, r in inbox
                    if r.room == room and isinstance(r.result, NotForThisDevice) and r.result.reflection
                )

            # each sender sees its own message come back, and knows it for its own
            await _until(lambda: reflections() == ["alice1", "alice2", "bob", "carol"], reflections)
            assert not [r.error for _n, r in inbox if r.error is not None]

            # dave becomes a member later and gets the messages sent after that
            await s["alice1"].rooms.set_affiliation(room, dave, "member")
            s["dave"] = await _session(server, "dave", inbox, "dave")
            dev["dave"] = (dave, s["dave"].engine.device_id)
            expected["dave"] = []
            await s["dave"].rooms.join(room)
            await _until(
                lambda: server.user("dave") in s["bob"].rooms.get(room).occupants,  # type: ignore[union-attr]
                lambda: s["bob"].rooms.get(room),
            )
            for sender in ("bob", "dave"):
                body = f"with dave, from {sender}"
                result = await s[sender].rooms.send_text(room, body)
                assert result.ready and _encrypted_for(result) == {dev[n] for n in s if n != sender}, result.devices
                for n in s:
                    if n != sender:
                        expected[n].append(body)
            await _until(
                lambda: all(_room_bodies(inbox, n, room) == sorted(expected[n]) for n in s),
                lambda: {n: _room_bodies(inbox, n, room) for n in s},
            )

            # carol is removed: later messages are not encrypted for her devices
            await s["alice1"].rooms.set_affiliation(room, carol, "none")
            await _until(
                lambda: not s["carol"].rooms.get(room).joined,  # type: ignore[union-attr]
                lambda: s["carol"].rooms.get(room),
            )
            assert 321 in s["carol"].rooms.get(room).removed  # type: ignore[union-attr]
            await _until(
                lambda: carol not in s["bob"].rooms.get(room).members,  # type: ignore[union-attr]
                lambda: s["bob"].rooms.get(room),
            )  # from the presence that removed her
            carol_before = list(_room_bodies(inbox, "carol", room))
            for sender in ("bob", "alice2"):
                body = f"without carol, from {sender}"
                result = await s[sender].rooms.send_text(room, body)
                assert result.ready, result.devices
                assert carol not in {d.jid for d in result.devices}  # not even listed
                assert _encrypted_for(result) == {dev[n] for n in s if n not in (sender, "carol")}
                for n in s:
                    if n not in (sender, "carol"):
                        expected[n].append(body)
                # the element itself: carol's device finds no key for itself in it
                out = s["carol"].engine.decrypt(result.elements[O2], s[sender].engine.jid, to=room, require_to=True)
                assert isinstance(out, NotForThisDevice) and not out.reflection
            await _until(
                lambda: all(_room_bodies(inbox, n, room) == sorted(expected[n]) for n in s if n != "carol"),
                lambda: {n: _room_bodies(inbox, n, room) for n in s},
            )
            await asyncio.sleep(0.2)
            assert _room_bodies(inbox, "carol", room) == carol_before
            with pytest.raises(RoomUnavailable, match="no longer in room"):
                await s["carol"].rooms.send_text(room, "am I still here?")
            s["carol"].rooms.leave(room)
            # members-only: she cannot come back, on either server (ejabberd 23.01 would let her
            # back into a moderated room, with the role it remembers: ours is not moderated)
            with pytest.raises(RoomUnavailable) as refused:
                await s["carol"].rooms.join(room)
            assert refused.value.condition == "registration-required"
        finally:
            for x in s.values():
                x.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())


async def _plain_room(session: E2EESession, room: str, fields: tuple[tuple[str, object], ...]) -> None:
    """Create the persistent ``room`` with Prosody's defaults changed by ``fields``
    (semi-anonymous and open when empty), without any OMEMO check, and leave it."""
    muc = session.plugin["xep_0045"]
    await muc.join_muc_wait(slixmpp.JID(room), "owner", maxstanzas=0, timeout=10)
    form = session.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
    for var, value in (("muc#roomconfig_persistentroom", True), *fields):
        form.add_field(var=var, value=value)
    await muc.set_room_config(room, form)
    muc.leave_muc(slixmpp.JID(room), "owner")


def test_rooms_that_hide_real_jids_or_are_open_are_refused(server: Accounts, caplog: pytest.LogCaptureFixture) -> None:
    """A semi-anonymous room (Prosody's default) is refused with RoomNotSuitable naming what is
    missing, before joining; so is a non-anonymous room that is not members-only, unless the
    client accepts open rooms: then it warns, and the present occupants are recipients too."""
    anonymous, open_room = server.room("anon"), server.room("open")

    async def run() -> None:
        inbox: Inbox = []
        erin = await _session(server, "erin", inbox, "erin")
        frank = await _session(server, "frank", inbox, "frank")
        try:
            await _plain_room(erin, anonymous, ())
            await _plain_room(erin, open_room, (("muc#roomconfig_whois", "anyone"),))
            with pytest.raises(RoomNotSuitable) as e:
                await frank.rooms.join(anonymous)
            assert e.value.missing == (NONANONYMOUS, MEMBERSONLY)
            assert "hides its occupants' real JIDs" in str(e.value) and anonymous in str(e.value)
            assert frank.rooms.get(anonymous) is None
            assert slixmpp.JID(anonymous) not in frank.plugin["xep_0045"].get_joined_rooms()
            with pytest.raises(RoomNotSuitable) as e:
                await frank.rooms.join(open_room)
            assert e.value.missing == (MEMBERSONLY,) and "not members-only" in str(e.value)

            # a room that starts hiding real JIDs after we joined: nothing more is sent there
            turns = server.room("turns")
            await erin.rooms.create(turns, members=[frank.engine.jid])
            await frank.rooms.join(turns)
            assert (await frank.rooms.send_text(turns, "still fine")).ready
            form = erin.plugin["xep_0004"].make_form(ftype="submit")
            form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
            form.add_field(var="muc#roomconfig_whois", value="moderators")
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="e2ee.client.muc"):
                await erin.plugin["xep_0045"].set_room_config(turns, form)
                await _until(
                    lambda: any("cannot be used with OMEMO" in r.getMessage() for r in caplog.records),
                    lambda: caplog.records,
                )  # the configuration-change notice was checked
            with pytest.raises(RoomNotSuitable) as e:
                await frank.rooms.send_text(turns, "no longer")
            assert e.value.missing == (NONANONYMOUS,)
            await _until(lambda: _room_bodies(inbox, "erin", turns) == ["still fine"], lambda: inbox)

            for x in (erin, frank):
                x.rooms.require_members_only = False
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="e2ee.client.muc"):
                await erin.rooms.join(open_room)
                await frank.rooms.join(open_room)
                result = await frank.rooms.send_text(open_room, "in an open room")
            assert any("not members-only" in r.getMessage() for r in caplog.records)
            assert result.ready and _encrypted_for(result) == {(erin.engine.jid, erin.engine.device_id)}
            await _until(lambda: _room_bodies(inbox, "erin", open_room) == ["in an open room"], lambda: inbox)
        finally:
            for x in (erin, frank):
                x.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())


def test_forged_and_misdirected_group_messages_are_refused(server: Accounts, caplog: pytest.LogCaptureFixture) -> None:
    """Catalogue D8 through the server: a ``type='groupchat'`` message that does not come from a
    room we are in is dropped (logged); a 1:1 element replayed into the room and a room element
    sent as a private message are refused with AffixMismatch (the SCE ``<to>``), reported with
    the room; the room goes on working."""
    for user in ("gus", "hal", "ivo"):
        server.register(user, f"{user}-pw")
    room = server.room("hostile")

    async def run() -> None:
        inbox: Inbox = []
        gus = await _session(server, "gus", inbox, "gus")
        hal = await _session(server, "hal", inbox, "hal")
        ivo = await _session(server, "ivo", inbox, "ivo")  # not a member
        try:
            await gus.rooms.create(room, members=[hal.engine.jid])
            await hal.rooms.join(room)
            first = await gus.rooms.send_text(room, "a real room message")
            assert first.ready
            await _until(lambda: _room_bodies(inbox, "hal", room) == ["a real room message"], lambda: inbox)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="e2ee.client.muc"):
                # ivo sends hal a "group message" straight from his account
                msg = ivo.make_message(mto=hal.boundjid.full, mtype="groupchat", mbody="x")  # to a bare JID: bounced
                msg.xml.append(first.elements[O2])
                msg.send()
                await _until(
                    lambda: any("not a room we are in" in r.getMessage() for r in caplog.records),
                    lambda: caplog.records,
                )
            # gus puts an element encrypted for hal alone (<to> = hal) into the room
            assert (await gus.send_text(hal.engine.jid, "private, for hal")).ready
            private = gus.engine.encrypt_omemo([hal.engine.jid], "replayed into the room")
            gus.e2ee.stanzas.send_element(room, private.elements[O2], O2, mtype="groupchat")
            # and a room element (<to> = the room) as a private message
            group = gus.engine.encrypt_omemo([hal.engine.jid], "a room message sent privately", to=room)
            gus.e2ee.stanzas.send_element(hal.engine.jid, group.elements[O2], O2)
            assert (await gus.rooms.send_text(room, "second room message")).ready
            await _until(lambda: sum(isinstance(r.error, AffixMismatch) for _n, r in inbox) == 2, lambda: inbox)
            refused = [(r.room, r.stanza_from) for n, r in inbox if isinstance(r.error, AffixMismatch)]
            assert sorted(refused, key=str) == sorted(
                [(room, f"{room}/{server.user('gus')}"), (None, gus.engine.jid)], key=str
            )
            await _until(
                lambda: _room_bodies(inbox, "hal", room) == ["a real room message", "second room message"],
                lambda: inbox,
            )
            assert not [
                r
                for n, r in inbox
                if n == "hal"
                and r.room is None
                and isinstance(r.result, Decrypted)
                and r.result.body != "private, for hal"
            ]
        finally:
            for x in (gus, hal, ivo):
                x.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())


def test_cli_room_create_members_send_and_recv(server: Accounts, tmp_path: Path) -> None:
    """The command line: ``room-create`` with a member, ``room-members``, ``recv --room`` printing
    the room message with its ``room`` field, ``room-send`` with per-device JSON; a room that
    hides real JIDs is one clear line and exit status 1, a malformed room address exit 2."""
    for user in ("kim", "lou"):
        server.register(user, f"{user}-pw")
    room = server.room("cli")
    kim, lou = server.jid("kim"), server.jid("lou")

    def command(user: str, *args: str) -> list[str]:
        return cli_command(server, tmp_path / user, *args)

    def env(user: str) -> dict[str, str]:
        return cli_env(f"{user}-pw")

    def e2ee(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(server, tmp_path / user, f"{user}-pw", *args)

    for user in ("kim", "lou"):
        assert e2ee(user, "init", "--jid", server.jid(user)).returncode == 0
        assert e2ee(user, "publish").returncode == 0
    made = e2ee("kim", "room-create", room, "--member", lou)
    assert made.returncode == 0, made.stderr
    listed = e2ee("lou", "room-members", room, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {
        "room": room,
        "members": [
            {"jid": kim, "affiliation": "owner", "present": False},
            {"jid": lou, "affiliation": "member", "present": True},
        ],
    }

    recv = subprocess.Popen(
        command("lou", "recv", "--room", room, "--count", "1", "--timeout", "30", "--json"),
        cwd=ROOT,
        env=env("lou"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert recv.stderr is not None
        lines = []
        while not any(line.startswith("joined ") for line in lines):
            line = recv.stderr.readline()
            assert line, lines
            lines.append(line)
        sent = e2ee("kim", "room-send", room, "hello room from the command line", "--json")
        assert sent.returncode == 0, sent.stderr
        data = json.loads(sent.stdout)
        assert data["room"] == room and {(r["jid"], r["status"]) for r in data["recipients"]} == {(lou, "encrypted")}
        # the room's echo of our message counts as delivered, and is not "a room we are not in"
        assert data["reflected"] is True and "not a room we are in" not in sent.stderr, sent.stderr
        assert "did not echo" not in sent.stderr, sent.stderr
        out, err = recv.communicate(timeout=60)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()
    assert recv.returncode == 0, err
    (line,) = out.strip().splitlines()
    msg = json.loads(line)
    assert (msg["room"], msg["from"], msg["body"], msg["carbon"]) == (
        room,
        kim,
        "hello room from the command line",
        False,
    )

    async def anonymous_room() -> None:
        s = await _session(server, "kim", [], "kim-raw")
        try:
            await _plain_room(s, server.room("cli-anon"), ())
        finally:
            s.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(anonymous_room())
    refused = e2ee("kim", "room-send", server.room("cli-anon"), "x")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"e2ee: error: room {server.room('cli-anon')} cannot be used with OMEMO: it hides its occupants' real JIDs "
        "(not non-anonymous); it is not members-only"
    )
    bad = e2ee("kim", "room-send", "not a room", "x")
    assert bad.returncode == 2 and "not a room address" in bad.stderr and "Traceback" not in bad.stderr


def test_readme_group_chat_example_runs(server: Accounts) -> None:
    from .test_embedding import _example

    readme = Accounts.unprefixed(server.server, ("ann", "ben"))  # the example's own names
    namespace: dict[str, object] = {
        "SERVER": ("127.0.0.1", server.port),
        "CA_FILE": server.cert,
        "DOMAIN": server.domain,
        "MUC": server.muc,
    }
    exec(compile(_example("group chat"), "README.md (group chat example)", "exec"), namespace)
    assert namespace["got"] == [(readme.room("team"), readme.jid("ann"), "Hello, team")]


def test_a_member_with_a_legacy_only_device_gets_the_legacy_element(server: Accounts) -> None:
    """A member whose device is only on the legacy OMEMO list gets the room message in legacy
    OMEMO (no SCE envelope, so no ``<to>`` to check) and decrypts it with the sender's real JID;
    his answer reaches the sender's device, which is on both lists, in OMEMO 2."""
    for user in ("max", "ned"):
        server.register(user, f"{user}-pw")
    room = server.room("mixed")
    legacy = NAMESPACES[1]

    async def run() -> None:
        inbox: Inbox = []
        mx = await _session(server, "max", inbox, "max")
        ned = await _session(server, "ned", inbox, "ned")
        try:
            # ned's account no longer announces an OMEMO 2 device list: his device is legacy-only
            await ned.plugin["xep_0060"].delete_node(ned.boundjid.bare, "urn:xmpp:omemo:2:devices")
            await mx.rooms.create(room, members=[ned.engine.jid])
            await ned.rooms.join(room)
            result = await mx.rooms.send_text(room, "in legacy OMEMO")
            assert result.ready and set(result.elements) == {legacy}, result.devices
            assert {(d.jid, d.namespace) for d in result.devices if d.outcome is Outcome.ENCRYPTED} == {
                (ned.engine.jid, legacy)
            }
            await _until(lambda: _room_bodies(inbox, "ned", room) == ["in legacy OMEMO"], lambda: inbox)
            (got,) = [r.result for n, r in inbox if n == "ned" and isinstance(r.result, Decrypted)]
            assert got.namespace == legacy and got.jid == mx.engine.jid
            reply = await ned.rooms.send_text(room, "a legacy-only answer")
            assert reply.ready and set(reply.elements) == {O2}  # max's device is on both lists
            await _until(lambda: _room_bodies(inbox, "max", room) == ["a legacy-only answer"], lambda: inbox)
        finally:
            for x in (mx, ned):
                x.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())


def test_a_member_refused_the_affiliation_lists_encrypts_for_the_members_it_sees(
    server: Accounts, caplog: pytest.LogCaptureFixture
) -> None:
    """A room that refuses a member its affiliation lists (``forbidden``): the member's
    recipients are what the room does show it (the real JIDs and affiliations in the occupants'
    presences, in a non-anonymous room), and it is told once per room, in one line, not at every
    send.  Prosody refuses the lists to members of a room that is not members-only (an open
    non-anonymous room, which a session accepts with ``require_members_only=False``);
    ejabberd 23.01 lets members of a non-anonymous room read them (members-only or not), so
    there the lists are read and nothing is said.  (A removed member who rejoins is shown in
    the test of the three-account room above.)"""
    for user in ("ola", "pia", "quin"):
        server.register(user, f"{user}-pw")
    room = server.room("lists")
    ola, pia, quin = (server.jid(u) for u in ("ola", "pia", "quin"))

    def told() -> list[str]:
        return [r.getMessage() for r in caplog.records if "affiliation lists" in r.getMessage()]

    async def run() -> None:
        inbox: Inbox = []
        s = {u: await _session(server, u, inbox, u) for u in ("ola", "pia", "quin")}
        try:
            await _plain_room(s["ola"], room, (("muc#roomconfig_whois", "anyone"),))
            for x in s.values():
                x.rooms.require_members_only = False
            await s["ola"].rooms.join(room)
            await s["ola"].rooms.set_affiliation(room, pia, "member")
            await s["ola"].rooms.set_affiliation(room, quin, "member")
            with caplog.at_level(logging.WARNING, logger="e2ee.client.muc"):
                await s["pia"].rooms.join(room)
                if server.kind == "prosody":
                    # quin has not been in the room: pia cannot know of him
                    assert s["pia"].rooms.get(room).recipients() == sorted([ola, pia])  # type: ignore[union-attr]
                    (line,) = told()
                    assert room in line and "forbidden" in line and "members it shows us" in line
                else:
                    assert s["pia"].rooms.get(room).recipients() == sorted([ola, pia, quin])  # type: ignore[union-attr]
                    assert told() == []
                await s["quin"].rooms.join(room)  # (quin's session is told too, on Prosody)
                await _until(
                    lambda: s["pia"].rooms.get(room).recipients() == sorted([ola, pia, quin]),  # type: ignore[union-attr]
                    lambda: s["pia"].rooms.get(room),
                )
                said = len(told())
                result = await s["pia"].rooms.send_text(room, "to everyone I can see")
                assert result.ready and {j for j, _d in _encrypted_for(result)} == {ola, quin}, result.devices
                await _until(
                    lambda: all(_room_bodies(inbox, u, room) == ["to everyone I can see"] for u in ("ola", "quin")),
                    lambda: inbox,
                )
                assert len(told()) == said  # once per room, not at every send
        finally:
            for x in s.values():
                x.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())


def test_removing_a_member_of_a_moderated_room_warns(server: Accounts, caplog: pytest.LogCaptureFixture) -> None:
    """A moderated members-only room (not one of ours: ``room-create`` turns moderation off):
    ejabberd 23.01 remembers the role a former member had and lets them back in, with their
    affiliation ``none`` or even ``outcast``; Prosody keeps them out.  Removing someone from
    such a room says so."""
    for user in ("rex", "sue"):
        server.register(user, f"{user}-pw")
    room = server.room("moderated")
    sue = server.jid("sue")

    async def run() -> None:
        inbox: Inbox = []
        rex = await _session(server, "rex", inbox, "rex")
        s = await _session(server, "sue", inbox, "sue")
        try:
            await _plain_room(
                rex,
                room,
                (
                    ("muc#roomconfig_membersonly", True),
                    ("muc#roomconfig_whois", "anyone"),
                    ("muc#roomconfig_moderatedroom", True),
                ),
            )
            await rex.rooms.join(room)
            await rex.rooms.set_affiliation(room, sue, "member")
            await s.rooms.join(room)
            with caplog.at_level(logging.WARNING, logger="e2ee.client.muc"):
                await rex.rooms.set_affiliation(room, sue, "outcast")
            assert any("is moderated" in r.getMessage() and sue in r.getMessage() for r in caplog.records)
            await _until(lambda: not s.rooms.get(room).joined, lambda: s.rooms.get(room))  # type: ignore[union-attr]
            s.rooms.leave(room)
            if server.kind == "ejabberd":
                assert (await s.rooms.join(room)).joined  # the server difference the warning is about
            else:
                with pytest.raises(RoomUnavailable):
                    await s.rooms.join(room)
        finally:
            for x in (rex, s):
                x.disconnect()
            await asyncio.sleep(0.1)

    asyncio.run(run())
