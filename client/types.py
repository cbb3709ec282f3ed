"""The values the client hands to the application."""

from __future__ import annotations

from dataclasses import dataclass

from e2ee.errors import E2EEError
from e2ee.media import MediaLink, media_link_in
from e2ee.results import Decrypted, DecryptResult

__all__ = ["Received"]


@dataclass(frozen=True, slots=True)
class Received:
    """What arrived: the engine's result (or the error that refused it) plus where it came from."""

    result: DecryptResult | None
    error: E2EEError | None
    carbon: bool
    stanza_from: str
    archived: bool = False
    #: the room's bare JID for a group message (then ``stanza_from`` is room/nick)
    room: str | None = None

    @property
    def media(self) -> MediaLink | None:
        """The shared file (XEP-0454) when the decrypted body is exactly one ``aesgcm://`` link;
        fetch it with :func:`e2ee.client.media.download`.  Never hand the link to a browser."""
        return media_link_in(self.result.body) if isinstance(self.result, Decrypted) else None
