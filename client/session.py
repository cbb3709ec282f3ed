"""A slixmpp client of its own around one engine: the ``e2ee_omemo`` plugin on a ``ClientXMPP``.

The plugin (client/plugin.py) does the work, split by job: it carries out the engine's effects
with PEP/pubsub (publish with publish-options; where the server refuses them it configures the
node instead: client/publish.py), announces ``+notify`` for both device-list nodes, sends
encrypted messages (XEP-0380 marker, store hint, a short clear-text fallback body) and decrypts
what arrives: a MAM (XEP-0313) catch-up of our own archive at connect (results accepted only
with our query id and from our own archive; the engine keeps used prekeys during it), live and
offline messages, and carbons of our own devices (accepted only from our own bare JID).

With an engine that has an OpenPGP backend (``Engine(..., openpgp=GnuPG())``) it also speaks
OpenPGP for XMPP (XEP-0373/0374): it publishes our key (data node, then metadata, with
publish-options), follows ``urn:xmpp:openpgp:0:public-keys`` (+notify), fetches contacts' keys,
sends ``<openpgp/>`` messages through :meth:`E2EESession.send_chat` (the OMEMO-then-OpenPGP
policy of :mod:`e2ee.fallback`) and decrypts received ones (re-fetching the sender's keys once
when a signature is by a key we have not seen announced).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import slixmpp
from slixmpp.xmlstream.xmlstream import NotConnectedError

from e2ee.engine import Engine
from e2ee.fallback import SendResult
from e2ee.media import MediaLink
from e2ee.results import EncryptResult

from . import media
from .catchup import MAM_PAGE
from .muc import Rooms
from .plugin import MAINTENANCE_INTERVAL, e2ee_omemo
from .stanzas import FALLBACK_BODY, OX_FALLBACK_BODY
from .types import Effects, OnReceived, Received

__all__ = [
    "FALLBACK_BODY",
    "MAINTENANCE_INTERVAL",
    "MAM_PAGE",
    "OX_FALLBACK_BODY",
    "E2EESession",
    "Received",
    "cancel_pending_tasks",
]


class E2EESession(slixmpp.ClientXMPP):
    """A client of its own for one engine.  Connect with :meth:`start` (returns once the
    session is set up, published and caught up).  ``session.e2ee`` is its plugin."""

    def __init__(
        self,
        engine: Engine,
        password: str,
        *,
        ca_file: Path | None = None,
        on_received: OnReceived | None = None,
        omemo: bool = True,
        openpgp_generate: bool = True,
    ) -> None:
        super().__init__(engine.jid, password)
        if ca_file is not None:
            self.ca_certs = Path(ca_file)
        self.enable_direct_tls = False
        config = {"engine": engine, "on_received": on_received, "omemo": omemo, "openpgp_generate": openpgp_generate}
        self.register_plugin("e2ee_omemo", config, module="e2ee.client.plugin")
        plugin = self.plugin.get("e2ee_omemo", None)
        if not isinstance(plugin, e2ee_omemo):  # another plugin registered under that name
            raise TypeError(f"plugin e2ee_omemo is a {type(plugin).__name__}")
        self.e2ee: e2ee_omemo = plugin

    @property
    def engine(self) -> Engine:
        return self.e2ee.engine

    @property
    def rooms(self) -> Rooms:
        """Group chats (XEP-0045)."""
        return self.e2ee.rooms

    async def send_text(self, to: str, body: str) -> EncryptResult:
        """Encrypt for every trusted device of ``to`` and of our account, and send (see
        :meth:`e2ee.client.outgoing.Outgoing.send_text`)."""
        return await self.e2ee.send_text(to, body)

    async def send_chat(self, to: str, body: str, *, allow_plaintext: bool = False) -> SendResult:
        """See :meth:`e2ee.client.outgoing.Outgoing.send_chat` (OMEMO, else OpenPGP, else refused)."""
        return await self.e2ee.send_chat(to, body, allow_plaintext=allow_plaintext)

    async def run_effects(self, effects: Effects) -> None:
        await self.e2ee.run_effects(effects)

    async def send_file(self, to: str, path: Path, progress: media.Progress | None = None) -> media.SentFile:
        """Encrypt ``path``, upload it (XEP-0363) and send its ``aesgcm://`` link (XEP-0454) to
        ``to`` (see :func:`e2ee.client.media.send_file`).  ``progress(done, total)`` is optional."""
        return await self.e2ee.send_file(to, path, progress=progress)

    async def download(self, link: MediaLink | str, dest_path: Path, progress: media.Progress | None = None) -> Path:
        """Download, decrypt and verify a shared file into ``dest_path`` (a file, or a directory
        to save it in under its own name), trusting the session's ``ca_file`` too (see
        :func:`e2ee.client.media.download`)."""
        return await self.e2ee.download(link, dest_path, progress=progress)

    async def start(self, host: str, port: int, timeout: float = 20) -> None:
        self.connect(host, port)
        await asyncio.wait_for(self.e2ee.ready.wait(), timeout)
        if self.e2ee.failed:
            raise ConnectionError(self.e2ee.failed)

    async def close(self, wait: float = 2.0) -> None:
        """Send what is queued, close the stream and wait until it is closed."""
        if self.transport is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.disconnect(wait=wait)), wait + 1)
        except (TimeoutError, NotConnectedError):
            pass


async def cancel_pending_tasks() -> None:
    """Cancel what slixmpp leaves running after its streams closed (its send loops), so that a
    program ending with ``asyncio.run`` does not print "Task was destroyed but it is pending"."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
