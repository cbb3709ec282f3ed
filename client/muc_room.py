"""What we know of one joined group chat (XEP-0045) room, kept without any I/O.

:class:`RoomState` is fed the room's presences and notices (by :mod:`e2ee.client.muc`, which checks
first that they come from the room) and answers two questions: who is the real JID behind an
occupant's nickname (:meth:`RoomState.sender`), and who must be able to read a message
(:meth:`RoomState.recipients`).

Decisions:

* An occupant's real JID is taken only from the ``<item jid>`` of its presence in the room
  (non-anonymous rooms show it to everyone).  A presence without one (hidden) or with items
  naming several accounts (one nickname for two people) leaves the nickname unmapped: its
  messages raise :class:`~e2ee.client.errors.UnknownSender`.  Several items of one account (Prosody's
  multi-session nicknames: two devices behind one nickname) are fine.
* A mapping changes only with a presence for that nickname; sessions are keyed by real JID in the
  engine, so a nickname that changes hands never moves a session.
* Recipients are the owners, admins and members (the affiliation lists, fetched at join and
  before each send, and kept current from affiliation-change presences and notices), whether
  online or not.  Only in a room that is not members-only (allowed with
  ``require_members_only=False``) are the real JIDs of present occupants added.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from slixmpp.jid import JID, InvalidJID

from e2ee.jid import bare_jid_key

from .errors import UnknownSender

__all__ = [
    "MUC_USER",
    "MEMBER_AFFILIATIONS",
    "NONANONYMOUS",
    "MEMBERSONLY",
    "REMOVED_STATUS",
    "RoomState",
    "account",
    "status_codes",
]

MUC_USER = "http://jabber.org/protocol/muc#user"
_X = f"{{{MUC_USER}}}x"
_ITEM = f"{{{MUC_USER}}}item"
_STATUS = f"{{{MUC_USER}}}status"

#: Affiliations whose holders receive a room's messages.
MEMBER_AFFILIATIONS = frozenset({"owner", "admin", "member"})
#: disco#info features an OMEMO room must have.
NONANONYMOUS, MEMBERSONLY = "muc_nonanonymous", "muc_membersonly"
#: Status codes of a self-presence that mean we are no longer in the room (banned, kicked,
#: removed by an affiliation change or because the room became members-only, shutdown).
REMOVED_STATUS = frozenset({301, 307, 321, 322, 332, 333})
_NICK_CHANGE = 303
_SELF = 110


def status_codes(x: ET.Element | None) -> frozenset[int]:
    """The ``<status code>`` values of a ``muc#user`` ``<x>`` (malformed codes ignored)."""
    if x is None:
        return frozenset()
    codes = set()
    for s in x.findall(_STATUS):
        code = s.get("code", "")
        if code.isdigit() and len(code) == 3:
            codes.add(int(code))
    return frozenset(codes)


@dataclass
class RoomState:
    """One room we joined (or are joining) as ``nick``, on the account ``own_jid``."""

    jid: str  #: the room's bare JID
    nick: str  #: our nickname (the room may change it)
    own_jid: str  #: our bare JID
    members_only: bool = True
    joined: bool = False  #: our own presence came back (status 110)
    #: once we are out of the room: the status codes that said why (0: none given)
    removed: frozenset[int] = frozenset()
    #: nickname -> real bare JID of each present occupant whose real JID is known
    occupants: dict[str, str] = field(default_factory=dict)
    #: real bare JID -> affiliation (owner, admin, member) of everyone who receives messages
    members: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ answers

    def sender(self, nick: str) -> str:
        """The real bare JID behind ``nick``; raises :class:`~e2ee.client.errors.UnknownSender`."""
        jid = self.occupants.get(nick)
        if jid is None:
            raise UnknownSender(f"the real JID of {self.jid}/{nick} is unknown: message not attributed")
        return jid

    def recipients(self) -> list[str]:
        """Everyone a message to the room is encrypted for (sorted; our own account included)."""
        jids = set(self.members)
        if not self.members_only:
            jids |= set(self.occupants.values())
        jids.add(self.own_jid)
        return sorted(jids)

    # ------------------------------------------------------------------ inputs

    def set_members(self, affiliations: dict[str, str]) -> None:
        """The affiliation lists as fetched (bare JID -> owner/admin/member): they replace what
        was known."""
        self.members = {j: a for j, a in affiliations.items() if a in MEMBER_AFFILIATIONS}

    def set_affiliation(self, jid: str, affiliation: str) -> None:
        """An affiliation change: ``jid`` gains or loses a receiving affiliation."""
        key = account(jid)
        if key is None:
            return
        if affiliation in MEMBER_AFFILIATIONS:
            self.members[key] = affiliation
        else:  # none, outcast
            self.members.pop(key, None)

    def on_presence(self, nick: str, unavailable: bool, x: ET.Element | None) -> None:
        """A presence from ``room/nick`` (the caller checked the room) with its ``muc#user``
        ``<x>``."""
        codes = status_codes(x)
        items = x.findall(_ITEM) if x is not None else []
        for item in items:  # the affiliation shown in a presence is current
            jid, affiliation = item.get("jid"), item.get("affiliation")
            if jid and affiliation:
                self.set_affiliation(jid, affiliation)
        is_self = _SELF in codes
        if unavailable:
            self.occupants.pop(nick, None)
            new_nick = next((i.get("nick") for i in items if i.get("nick")), None)
            if _NICK_CHANGE in codes and new_nick:
                real = _one_account(items)
                if real is not None:
                    self.occupants[new_nick] = real
                if is_self:
                    self.nick = new_nick
            elif is_self:
                self.joined = False
                self.removed = codes & REMOVED_STATUS or frozenset({0})
            return
        real = _one_account(items)
        if real is None:
            self.occupants.pop(nick, None)
        else:
            self.occupants[nick] = real
        if is_self:
            self.nick = nick
            self.joined = True
            self.removed = frozenset()
            self.occupants[nick] = self.own_jid  # our own messages come back under our nick

    def on_notice(self, x: ET.Element) -> frozenset[int]:
        """A notice from the room itself (a ``<message>`` with ``muc#user`` ``<x>``): affiliation
        changes of people not in the room are applied.  Returns its status codes (configuration
        changes: 104, 170-174)."""
        for item in x.findall(_ITEM):
            jid, affiliation = item.get("jid"), item.get("affiliation")
            if jid and affiliation:
                self.set_affiliation(jid, affiliation)
        return status_codes(x)


def account(jid: str) -> str | None:
    """The bare JID of an account (``local@domain``, resource dropped, compared case-insensitively
    as the engine does), or None when ``jid`` is not a valid JID of an account."""
    try:
        parsed = JID(jid)
    except InvalidJID:
        return None
    if not parsed.user or not parsed.domain:
        return None
    return bare_jid_key(parsed.bare) or None


def _one_account(items: list[ET.Element]) -> str | None:
    """The one account the items name, or None (none named, an invalid JID, or several)."""
    jids = set()
    for item in items:
        jid = item.get("jid")
        if jid is None:
            continue
        key = account(jid)
        if key is None:
            return None
        jids.add(key)
    return jids.pop() if len(jids) == 1 else None
