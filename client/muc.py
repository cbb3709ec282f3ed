"""OMEMO in group chats (XEP-0045 rooms, XEP-0384 "Group chats") on top of the slixmpp session.

:class:`Rooms` is part of the :class:`~e2ee.client.plugin.e2ee_omemo` plugin (every
:class:`~e2ee.client.session.E2EESession` has one as ``session.rooms``).  It joins rooms, keeps each
room's :class:`~e2ee.client.muc_room.RoomState`, encrypts for the room's members and decrypts what
occupants send.  The engine stays room-agnostic: it gets the members' bare JIDs as recipients,
the room as the SCE ``<to>`` (``to=room``), and the occupant's real JID as the sender
(``require_to=True`` on receipt, so that a group message cannot pass as a private one or the
reverse).

What it does, as the deployed clients do (Conversations, Dino, Gajim):

* OMEMO only in rooms that show real JIDs to everyone and admit members only: the room's
  disco#info must list ``muc_nonanonymous`` and ``muc_membersonly``, else
  :class:`~e2ee.client.errors.RoomNotSuitable` (checked before joining and before every send; a room
  that announces a configuration change is checked again and a warning logged).
  ``require_members_only=False`` accepts a non-anonymous open room with a warning (its present
  occupants are then recipients as well).
* Recipients are the owners, admins and members from the room's affiliation lists, online or
  not, fetched at join and again before every send (Prosody and ejabberd let members read them
  in members-only non-anonymous rooms), plus our own account.  A room that refuses a member the
  lists (``forbidden``) is said once: its recipients are then the members it shows, in the
  occupants' presences and its notices.  Rooms we create are not moderated: in a moderated room
  ejabberd 23.01 remembers a former member's role and lets them back in whatever their new
  affiliation (``none`` or ``outcast``); removing someone from a moderated room logs that.  Their device lists are fetched again
  before each send unless we have a presence subscription (no PEP notifications otherwise).  A
  member whose affiliation is removed is no longer a recipient of the next message.
* Sent messages are ``type='groupchat'`` to the room with the same hints as 1:1 messages (EME,
  store hint, a clear-text notice).  The room's echo of one (same id, under our nickname)
  confirms delivery: :meth:`Rooms.reflected`.  What a room we left still sends is ignored
  quietly (our own echo often arrives just after we left).
* A received ``<encrypted/>`` of ``type='groupchat'`` is accepted only from a room we are in, and
  only from an occupant whose real JID the room announced; else it is refused with
  :class:`~e2ee.client.errors.UnknownSender` (logged once per nickname, reported to ``on_received``
  every time).  Our own message coming back is the engine's ``NotForThisDevice`` with
  ``reflection=True`` (the sending device never encrypts for itself).
* Key-exchange answers and heartbeats that decryption asks for go 1:1 to the member's real JID
  (the engine's ``SendMessage`` effects), as Conversations does.
* No room history is requested at join (``maxstanzas=0``): history would arrive under nicknames
  whose holders may have changed since.  Messages sent while we were not in the room are not
  read (no room-archive catch-up yet).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable

import slixmpp
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from e2ee.engine import NAMESPACES, Engine
from e2ee.errors import E2EEError, UsageError
from e2ee.jid import bare_jid_key
from e2ee.results import EncryptResult

from .errors import RoomNotSuitable, RoomUnavailable, UnknownSender
from .incoming import Incoming
from .muc_admin import AFFILIATIONS, MUC, RoomAdmin, room_jid
from .muc_room import MUC_USER, RoomState
from .outgoing import Outgoing
from .pep import Pep
from .types import Received

__all__ = ["AFFILIATIONS", "MUC", "Rooms"]

log = logging.getLogger(__name__)

_X = f"{{{MUC_USER}}}x"
#: Status codes of a room notice that announce a configuration change.
_CONFIG_CHANGE = frozenset({104, 170, 171, 172, 173, 174})
#: Sent room messages whose echo we wait for, per room.
_MAX_UNECHOED = 256

Spawn = Callable[[Coroutine[object, object, None]], None]


class Rooms:
    """The rooms of one session.  Built by the plugin before connecting (it needs slixmpp's
    XEP-0045 plugin, and registers its own stanza handlers); ``spawn`` runs background work."""

    def __init__(
        self,
        xmpp: slixmpp.ClientXMPP,
        engine: Engine,
        pep: Pep,
        incoming: Incoming,
        outgoing: Outgoing,
        spawn: Spawn,
        *,
        require_members_only: bool = True,
        timeout: float = 10.0,
    ) -> None:
        self.xmpp = xmpp
        self.engine = engine
        self.incoming = incoming
        self.outgoing = outgoing
        self._spawn = spawn
        self.admin = RoomAdmin(xmpp, pep, timeout)
        self.require_members_only = require_members_only
        self._rooms: dict[str, RoomState] = {}
        self._unknown_logged: set[tuple[str, str]] = set()
        #: rooms that refused us their affiliation lists (said once per room)
        self._lists_refused: set[str] = set()
        #: ids of the messages we sent to each room that it has not echoed back yet (bounded)
        self._sent: dict[str, dict[str, asyncio.Event]] = {}
        #: rooms we left in this session: what they still send is expected, and not logged
        self._left: set[str] = set()
        self._handlers = [
            Callback("e2ee muc presence", MatchXPath(f"{{jabber:client}}presence/{_X}"), self._presence),
            Callback(
                "e2ee muc join error", MatchXPath("{jabber:client}presence/{jabber:client}error"), self._presence_error
            ),
            Callback("e2ee muc notice", MatchXPath(f"{{jabber:client}}message/{_X}"), self._notice),
            *(
                Callback(f"e2ee muc {ns}", MatchXPath(f"{{jabber:client}}message/{{{ns}}}encrypted"), self._groupchat)
                for ns in NAMESPACES
            ),
        ]
        for handler in self._handlers:
            xmpp.register_handler(handler)
        incoming.known_room = self.known_room  # (own copies of room messages are shown under the room)

    def uninstall(self) -> None:
        for handler in self._handlers:
            self.xmpp.remove_handler(handler.name)
        self._handlers.clear()
        self.incoming.known_room = None

    @property
    def timeout(self) -> float:
        return self.admin.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.admin.timeout = seconds

    def get(self, room: str) -> RoomState | None:
        """What we know of ``room`` (None when we never joined it in this session)."""
        return self._rooms.get(room_jid(room))

    def known_room(self, address: str) -> str | None:
        """The bare JID of the room ``address`` names when we know it, else None (also for
        anything that is not a room address)."""
        try:
            state = self.get(address)
        except UsageError:
            return None
        return state.jid if state is not None else None

    def _joined(self, room: str) -> RoomState:
        state = self._rooms.get(room_jid(room))
        if state is None:
            raise UsageError(f"not in room {room}: join it first")
        if not state.joined:
            why = ", ".join(str(c) for c in sorted(state.removed)) or "left"
            raise RoomUnavailable(f"no longer in room {room} (status {why})", "not-in-room")
        return state

    # ------------------------------------------------------------------ room configuration

    async def features(self, room: str) -> frozenset[str]:
        """The room's disco#info features (:meth:`RoomAdmin.features`)."""
        return await self.admin.features(room)

    async def check(self, room: str) -> bool:
        """Refuse a room that is unfit for OMEMO (:class:`~e2ee.client.errors.RoomNotSuitable` naming the
        missing features).  Returns whether it is members-only (False only with
        ``require_members_only=False``, after a warning)."""
        return await self.admin.check(room, self.require_members_only)

    async def _recheck(self, room: str) -> None:
        try:
            members_only = await self.check(room)
            if room in self._rooms:
                self._rooms[room].members_only = members_only
        except RoomNotSuitable as e:
            log.warning("%s: nothing more is sent there", e)
        except RoomUnavailable as e:
            log.warning("room %s could not be checked after a configuration change: %s", room, e)

    # ------------------------------------------------------------------ joining and leaving

    async def join(self, room: str, nick: str | None = None) -> RoomState:
        """Check the room, join it as ``nick`` (default: our JID's localpart; devices of one
        account may share it) and fetch its affiliation lists.  Raises
        :class:`~e2ee.client.errors.RoomNotSuitable` or :class:`~e2ee.client.errors.RoomUnavailable` (e.g.
        ``registration-required``: we are not a member)."""
        room = room_jid(room)
        known = self._rooms.get(room)
        if known is not None and known.joined:
            return known
        members_only = await self.check(room)
        state = self._enter(room, nick, members_only)
        await self._join_presence(state)
        await self.refresh_members(room)
        return state

    def _enter(self, room: str, nick: str | None, members_only: bool) -> RoomState:
        own = self.engine.jid
        state = RoomState(room, nick or own.partition("@")[0], own, members_only)
        self._rooms[room] = state
        self._left.discard(room)
        return state

    async def _join_presence(self, state: RoomState) -> None:
        failure = await self.admin.join(state.jid, state.nick)
        if failure is not None:
            self._rooms.pop(state.jid, None)
            if failure == "timeout":
                raise RoomUnavailable(f"room {state.jid} did not answer the join", failure)
            raise RoomUnavailable(f"could not join {state.jid}: {failure}", failure)

    def leave(self, room: str) -> None:
        """Leave ``room`` (nothing happens when we are not in it)."""
        state = self._rooms.pop(room_jid(room), None)
        if state is not None:
            self._left.add(state.jid)
            self._sent.pop(state.jid, None)
        if state is not None and state.joined:
            try:
                self.xmpp.plugin["xep_0045"].leave_muc(slixmpp.JID(state.jid), state.nick)
            except KeyError:  # slixmpp already forgot it (we were removed)
                pass

    async def create(self, room: str, nick: str | None = None, members: Iterable[str] = ()) -> RoomState:
        """Create ``room`` (it must not exist yet) as its owner, configured for OMEMO: members-only,
        real JIDs shown to everyone, persistent, not listed publicly; then make each of
        ``members`` a member.  Raises :class:`~e2ee.errors.UsageError` when the room exists."""
        room = room_jid(room)
        try:
            await self.features(room)
        except RoomUnavailable as e:
            if e.condition != "item-not-found":
                raise
        else:
            raise UsageError(f"room {room} already exists")
        state = self._enter(room, nick, True)
        await self._join_presence(state)
        await self.admin.configure(room)
        await self.check(room)
        for jid in members:
            await self.set_affiliation(room, jid, "member")
        await self.refresh_members(room)
        return state

    async def set_affiliation(self, room: str, jid: str, affiliation: str) -> None:
        """Change ``jid``'s affiliation (owner, admin, member, none, outcast); we must be allowed
        to (owner or admin).  ``none`` or ``outcast`` removes a member: later messages are no
        longer encrypted for them.  In a moderated room, ejabberd 23.01 remembers the role a
        former member had and lets them back in whatever their new affiliation (outcast too):
        rooms made by :meth:`create` are not moderated, and removing someone from a moderated
        room logs a warning."""
        room = room_jid(room)
        target = await self.admin.set_affiliation(room, jid, affiliation)
        state = self._rooms.get(room)
        if state is not None:
            state.set_affiliation(target, affiliation)

    # ------------------------------------------------------------------ members

    async def refresh_members(self, room: str) -> list[str]:
        """Fetch the owner, admin and member lists of a joined room; returns the recipients
        (:meth:`~e2ee.client.muc_room.RoomState.recipients`).  A list the room does not let us read
        is logged, and what presences and notices told us is kept for it."""
        state = self._joined(room)
        fetched, refused = await self.admin.affiliations(state.jid)
        if not refused:
            state.set_members(fetched)
            return state.recipients()
        for jid, affiliation in fetched.items():
            state.set_affiliation(jid, affiliation)
        if state.jid not in self._lists_refused:
            self._lists_refused.add(state.jid)
            log.warning(
                "room %s does not let us read its affiliation lists (%s): its recipients are the members "
                "it shows us, in the occupants' presences and its notices (%d now); a member who has not "
                "been in the room since we joined is not one of them",
                state.jid,
                ", ".join(f"{a}: {c}" for a, c in sorted(refused.items())),
                len(state.recipients()) - 1,
            )
        return state.recipients()

    # ------------------------------------------------------------------ sending

    async def send_text(self, room: str, body: str) -> EncryptResult:
        """Encrypt ``body`` for every trusted device of every member of ``room`` and of our own
        account, and send it to the room (one message per namespace in use).  The room is
        checked again and its lists fetched first.  Nothing is sent when some member has no
        eligible device: the result says, per member and device, what happened."""
        state = self._joined(room)
        state.members_only = await self.check(state.jid)  # the configuration may have changed
        recipients = await self.refresh_members(state.jid)
        # one stanza to the room; what only our own devices read, to our bare JID
        sent = await self.outgoing.send(recipients, body, to=state.jid, room=state.jid, mtype="groupchat")
        if sent.id is not None:
            unechoed = self._sent.setdefault(state.jid, {})
            if len(unechoed) >= _MAX_UNECHOED:  # a room that never echoes: forget the oldest
                del unechoed[next(iter(unechoed))]
            unechoed[sent.id] = asyncio.Event()
        return sent.result

    async def reflected(self, room: str, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout``, default the session's) until the room has echoed back every
        message we sent to it in this session (the room's reflection, XEP-0045 §7.4, which keeps
        the message id; at most the last :data:`_MAX_UNECHOED` are tracked): whether it did,
        i.e. the room delivered them."""
        events = list(self._sent.get(room_jid(room), {}).values())
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout or self.timeout)
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------ receiving

    def _state_of(self, stanza: StanzaBase) -> RoomState | None:
        return self._rooms.get(bare_jid_key(stanza["from"].bare))

    def _presence(self, pres: StanzaBase) -> None:
        state = self._state_of(pres)
        nick = pres["from"].resource
        if state is None or not nick or pres["type"] == "error":
            return
        was_joined = state.joined
        state.on_presence(nick, pres["type"] == "unavailable", pres.xml.find(_X))
        if was_joined and not state.joined:
            log.warning("we are no longer in room %s (status %s)", state.jid, sorted(state.removed))

    def _presence_error(self, pres: StanzaBase) -> None:
        if pres["type"] == "error":
            self.admin.refused(bare_jid_key(pres["from"].bare), str(pres["error"]["condition"] or "error"))

    def _notice(self, msg: StanzaBase) -> None:
        state = self._state_of(msg)
        x = msg.xml.find(_X)
        if state is None or msg["from"].resource or msg["type"] == "error" or x is None:
            return  # only the room itself speaks for the room
        if state.on_notice(x) & _CONFIG_CHANGE:
            self._spawn(self._recheck(state.jid))

    def _groupchat(self, msg: StanzaBase) -> None:
        """Resolve the sender now (presences that follow must not change who sent it), then
        decrypt."""
        if msg["type"] != "groupchat":
            return
        frm = msg["from"]
        state = self._state_of(msg)
        if state is None or not state.joined:
            if bare_jid_key(frm.bare) in self._left:  # e.g. our own message's echo, after leaving
                log.debug("ignored a group message from %s: we left that room", frm)
            else:
                log.warning("dropped a group message from %s: not a room we are in", frm)
            return
        nick = frm.resource
        if nick == state.nick:
            echo = self._sent.get(state.jid, {}).pop(str(msg["id"]), None)
            if echo is not None:
                echo.set()
        if not nick:
            log.warning("dropped an encrypted message from room %s itself", state.jid)
            return
        try:
            sender = state.sender(nick)
        except UnknownSender as e:
            if (state.jid, nick) not in self._unknown_logged:
                self._unknown_logged.add((state.jid, nick))
                log.warning("%s", e)
            self._refused(e, str(frm), state.jid)
            return
        self._spawn(self.incoming.decrypt_stanza(msg.xml, sender, "", carbon=False, room=state.jid, occupant=str(frm)))

    def _refused(self, error: E2EEError, occupant: str, room: str) -> None:
        self.incoming.deliver(Received(None, error, False, occupant, room=room))
