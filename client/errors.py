"""Errors of the client's layer: group chats (XEP-0045) and file transfers (XEP-0363/0454).

They subclass the engine's :class:`~e2ee.errors.PeerError`, so an application that catches
what peers and servers cause catches these too.
"""

from __future__ import annotations

from e2ee.errors import PeerError

__all__ = ["MediaTransferFailed", "PolicyViolation", "RoomNotSuitable", "RoomUnavailable", "UnknownSender"]


class PolicyViolation(PeerError):
    """What the other side offers falls short of the security policy (for example a group chat
    that hides its occupants' real JIDs): refused before anything is encrypted or decrypted."""


class RoomNotSuitable(PolicyViolation):
    """A group chat (XEP-0045) room is not fit for OMEMO: it hides real JIDs (semi- or fully
    anonymous), or it is not members-only.  ``missing`` names the room's missing disco#info
    features (``muc_nonanonymous``, ``muc_membersonly``)."""

    def __init__(self, room: str, missing: tuple[str, ...]) -> None:
        self.room = room
        self.missing = missing
        why = []
        if "muc_nonanonymous" in missing:
            why.append("it hides its occupants' real JIDs (not non-anonymous)")
        if "muc_membersonly" in missing:
            why.append("it is not members-only")
        why += [f"it lacks {f}" for f in missing if f not in ("muc_nonanonymous", "muc_membersonly")]
        super().__init__(f"room {room} cannot be used with OMEMO: {'; '.join(why) or 'unsuitable'}")


class UnknownSender(PeerError):
    """A group chat message comes from an occupant whose real JID is unknown (not announced,
    hidden, or ambiguous): it is attributed to nobody and not decrypted."""


class RoomUnavailable(PeerError):
    """The group chat service refused us or the request (not a member of a members-only room,
    nickname taken, no such room, not allowed) or did not answer; ``condition`` is the XMPP
    error condition when there was one."""

    def __init__(self, message: str, condition: str | None = None) -> None:
        super().__init__(message)
        self.condition = condition


class MediaTransferFailed(PeerError):
    """The upload service or the HTTP server refused or broke off a file transfer (no upload
    service, a refused slot, an HTTP error status, a connection closed early, a body larger than
    announced or allowed)."""
