"""Asking a room (XEP-0045): joining it, its disco#info features, whether it is fit for OMEMO,
its configuration, and its affiliation lists.

:class:`RoomAdmin` keeps no room state (only the joins under way): :class:`~e2ee.client.muc.Rooms`
keeps each room's :class:`~e2ee.client.muc_room.RoomState` and calls it.
"""

from __future__ import annotations

import asyncio
import logging

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout, PresenceError
from slixmpp.types import MucAffiliation

from e2ee.errors import UsageError

from .errors import RoomNotSuitable, RoomUnavailable
from .muc_room import MEMBER_AFFILIATIONS, MEMBERSONLY, NONANONYMOUS, account
from .pep import Pep

__all__ = ["AFFILIATIONS", "MODERATED", "MUC", "OMEMO_ROOM_CONFIG", "RoomAdmin", "condition", "room_jid"]

log = logging.getLogger("e2ee.client.muc")

MUC = "http://jabber.org/protocol/muc"
#: Affiliations :meth:`RoomAdmin.set_affiliation` accepts.
AFFILIATIONS: tuple[MucAffiliation, ...] = ("owner", "admin", "member", "none", "outcast")
#: disco#info feature of a moderated room
MODERATED = "muc_moderated"
#: How :meth:`~e2ee.client.muc.Rooms.create` configures a room.  Not moderated: in a members-only
#: room everyone admitted may speak anyway, and ejabberd 23.01 lets a removed member of a
#: moderated room back in.
OMEMO_ROOM_CONFIG: tuple[tuple[str, str | bool], ...] = (
    ("muc#roomconfig_membersonly", True),
    ("muc#roomconfig_whois", "anyone"),
    ("muc#roomconfig_persistentroom", True),
    ("muc#roomconfig_publicroom", False),
    ("muc#roomconfig_moderatedroom", False),
)
_ROOM_CONFIG = "http://jabber.org/protocol/muc#roomconfig"


def room_jid(room: str) -> str:
    """The room's bare JID, normalised; :class:`~e2ee.errors.UsageError` for anything else."""
    key = account(room) if isinstance(room, str) else None
    if key is None or "/" in room:
        raise UsageError(f"not a room address (room@service): {room!r}")
    return key


def condition(e: IqError | PresenceError) -> str:
    return str(e.condition or "error")


class RoomAdmin:
    """Room queries and changes through slixmpp's XEP-0045 and XEP-0030 plugins."""

    def __init__(self, xmpp: slixmpp.ClientXMPP, pep: Pep, timeout: float) -> None:
        self.xmpp = xmpp
        self.pep = pep
        self.timeout = timeout
        #: rooms being joined: resolved with the condition of an error presence from the room
        self._joining: dict[str, asyncio.Future[str | None]] = {}

    async def join(self, room: str, nick: str) -> str | None:
        """Join and wait for our own presence and the subject, or an error presence (Prosody's
        lacks the ``muc`` child slixmpp waits for, so it is watched for here too: :meth:`refused`).
        Returns None when joined, else the condition (``timeout`` when the room did not answer)."""
        refused: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._joining[room] = refused
        muc = self.xmpp.plugin["xep_0045"]

        async def joined() -> str | None:  # the condition of a refusal, or None
            try:
                await muc.join_muc_wait(slixmpp.JID(room), nick, maxstanzas=0, timeout=self.timeout)
            except PresenceError as e:
                return condition(e)
            except TimeoutError:
                return "timeout"
            return None

        join = asyncio.ensure_future(joined())
        try:
            done, _pending = await asyncio.wait(
                [join, refused], timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if refused in done:
                failure = refused.result()
            elif join in done:
                failure = join.result()
            else:
                failure = "timeout"
        finally:
            self._joining.pop(room, None)
            if not join.done():
                join.cancel()
        if failure is not None:
            muc.rooms[None].pop(slixmpp.JID(room), None)
        return failure

    def refused(self, room: str, why: str) -> None:
        """An error presence from ``room`` (its bare JID): a join under way fails with ``why``."""
        waiting = self._joining.get(room)
        if waiting is not None and not waiting.done():
            waiting.set_result(why)

    async def features(self, room: str) -> frozenset[str]:
        """The room's disco#info features; raises :class:`~e2ee.client.errors.RoomUnavailable`
        (``condition`` ``item-not-found`` when there is no such room)."""
        try:
            info = await self.xmpp.plugin["xep_0030"].get_info(jid=slixmpp.JID(room_jid(room)), timeout=self.timeout)
        except IqError as e:
            raise RoomUnavailable(f"room {room}: {condition(e)}", condition(e)) from None
        except IqTimeout:
            raise RoomUnavailable(f"room {room} did not answer", "timeout") from None
        return frozenset(info["disco_info"]["features"])

    async def check(self, room: str, require_members_only: bool) -> bool:
        """Refuse a room that is unfit for OMEMO (:class:`~e2ee.client.errors.RoomNotSuitable`
        naming the missing features).  Returns whether it is members-only (False only without
        ``require_members_only``, after a warning)."""
        room = room_jid(room)
        features = await self.features(room)
        missing = tuple(f for f in (MUC, NONANONYMOUS, MEMBERSONLY) if f not in features)
        if missing == (MEMBERSONLY,) and not require_members_only:
            log.warning("room %s is not members-only: whoever joins it reads later messages", room)
            return False
        if missing:
            raise RoomNotSuitable(room, missing)
        return True

    async def configure(self, room: str) -> None:
        """Submit :data:`OMEMO_ROOM_CONFIG` (we are the room's owner)."""
        form = self.pep.form(OMEMO_ROOM_CONFIG, _ROOM_CONFIG)
        try:
            await self.xmpp.plugin["xep_0045"].set_room_config(room, form, timeout=self.timeout)
        except (IqError, IqTimeout) as e:
            why = condition(e) if isinstance(e, IqError) else "timeout"
            raise RoomUnavailable(f"room {room} could not be configured: {why}", why) from None

    async def set_affiliation(self, room: str, jid: str, affiliation: str) -> str:
        """Change ``jid``'s affiliation in ``room``; returns the account it was set for.
        Removing someone from a moderated room logs a warning (see
        :meth:`~e2ee.client.muc.Rooms.set_affiliation`)."""
        wanted = next((a for a in AFFILIATIONS if a == affiliation), None)
        if wanted is None:
            raise UsageError(f"affiliation must be one of {', '.join(AFFILIATIONS)}, not {affiliation!r}")
        target = account(jid)
        if target is None:
            raise UsageError(f"not the JID of an account: {jid!r}")
        if affiliation in ("none", "outcast") and MODERATED in await self.features(room):
            log.warning(
                "room %s is moderated: some servers (ejabberd 23.01) let %s back in with the role they had; "
                "a room made by room-create is not moderated",
                room,
                target,
            )
        try:
            await self.xmpp.plugin["xep_0045"].set_affiliation(room, wanted, jid=target, timeout=self.timeout)
        except IqError as e:
            raise RoomUnavailable(f"room {room} refused the affiliation change: {condition(e)}", condition(e)) from None
        except IqTimeout:
            raise RoomUnavailable(f"room {room} did not answer", "timeout") from None
        return target

    async def affiliations(self, room: str) -> tuple[dict[str, str], dict[str, str]]:
        """The owner, admin and member lists: (account -> affiliation, affiliation -> the
        condition the room refused that list with)."""
        kinds = sorted(a for a in AFFILIATIONS if a in MEMBER_AFFILIATIONS)
        answers = await asyncio.gather(*(self._list(room, a) for a in kinds), return_exceptions=True)
        fetched: dict[str, str] = {}
        refused: dict[str, str] = {}
        for affiliation, answer in zip(kinds, answers, strict=True):
            if isinstance(answer, IqError):
                refused[affiliation] = condition(answer)
                continue
            if isinstance(answer, IqTimeout):
                raise RoomUnavailable(f"room {room} did not answer", "timeout")
            if isinstance(answer, BaseException):
                raise answer
            for jid in answer:
                key = account(jid)
                if key is not None:
                    fetched[key] = affiliation
        return fetched, refused

    async def _list(self, room: str, affiliation: MucAffiliation) -> list[str]:
        jids = await self.xmpp.plugin["xep_0045"].get_affiliation_list(room, affiliation, timeout=self.timeout)
        return [str(j) for j in jids]
