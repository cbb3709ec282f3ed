"""The slixmpp plugin for other applications: OMEMO 2 and legacy OMEMO through the e2ee engine.

Register it on any ``slixmpp.ClientXMPP`` with an engine (on the encrypted keystore or any other
storage)::

    xmpp.register_plugin("e2ee_omemo", module="e2ee.client.plugin",
                         pconfig={"engine": engine, "on_received": handle})

At ``session_start`` it publishes the device lists and bundles, catches up from the archive and
sends presence; ``await xmpp.plugin["e2ee_omemo"].send_text(jid, text)`` encrypts and sends;
every decrypted message (or refusal) is passed to ``on_received`` as a
:class:`e2ee.client.session.Received`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import slixmpp
from slixmpp.plugins.base import BasePlugin

from e2ee.fallback import SendResult
from e2ee.results import EncryptResult

from . import media
from .muc import Rooms
from .session import E2EEHandlers

__all__ = ["e2ee_omemo"]


class e2ee_omemo(BasePlugin):  # slixmpp finds a plugin class by its name
    name = "e2ee_omemo"
    description = "End-to-end encryption with OMEMO 2 and legacy OMEMO (e2ee engine)"
    dependencies: ClassVar[set[str]] = set()
    default_config: ClassVar[dict[str, Any]] = {"engine": None, "on_received": None}

    def plugin_init(self) -> None:
        if self.engine is None:
            raise ValueError("register e2ee_omemo with pconfig={'engine': ...}")
        if not isinstance(self.xmpp, slixmpp.ClientXMPP):
            raise TypeError("e2ee_omemo works on a ClientXMPP")
        self.handlers = E2EEHandlers(self.xmpp, self.engine, self.on_received)
        self.handlers.install()
        self.rooms = Rooms(self.handlers)  #: group chats (XEP-0045): join, send_text, ...

    @property
    def ready(self) -> Any:
        """An ``asyncio.Event`` set once the session is published and caught up."""
        return self.handlers.ready

    async def send_text(self, to: str, body: str) -> EncryptResult:
        """Encrypt for every trusted device of ``to`` and of our account, and send."""
        return await self.handlers.send_text(to, body)

    async def send_file(self, to: str, path: Path, progress: media.Progress | None = None) -> media.SentFile:
        """Encrypt and upload a file (XEP-0363) and send its ``aesgcm://`` link (XEP-0454).
        Fetch received ones with :func:`e2ee.client.media.download` (``Received.media`` holds the
        link)."""
        return await media.send_file(self.handlers, to, path, progress=progress)

    async def send_chat(self, to: str, body: str, *, allow_plaintext: bool = False) -> SendResult:
        """Send by the engine's policy: OMEMO, else OpenPGP (with an engine created with
        ``openpgp=e2ee.client.gpg.GnuPG()``), else refused (:class:`~e2ee.errors.NoEligibleDevices`)
        unless ``allow_plaintext``."""
        return await self.handlers.send_chat(to, body, allow_plaintext=allow_plaintext)
