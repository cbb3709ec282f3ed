"""The values the client hands to the application, and the shapes its parts share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from e2ee.errors import E2EEError
from e2ee.media import MediaLink, media_link_in
from e2ee.results import Decrypted, DecryptResult, Effect

__all__ = ["Effects", "FormValue", "OnReceived", "Received"]


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


#: What the application is handed every decrypted message (or refusal) through.
OnReceived = Callable[[Received], None]
#: The effects an engine call returns, carried out in order by :meth:`e2ee.client.pep.Pep.run`.
Effects = Sequence[Effect]
#: A field value of a data form (XEP-0004) we submit.
FormValue = str | bool
