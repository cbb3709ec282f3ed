"""In-band registration (XEP-0077) of a new account, for ``e2ee demo --server`` on a server
that allows it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from .session import cancel_pending_tasks

__all__ = ["register_account"]


class _Registrar(slixmpp.ClientXMPP):
    def __init__(self, jid: str, password: str, ca_file: Path | None) -> None:
        super().__init__(jid, password)
        if ca_file is not None:
            self.ca_certs = Path(ca_file)
        self.enable_direct_tls = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0077")
        self.plugin["xep_0077"].force_registration = True
        self.done: asyncio.Future[str | None] = asyncio.get_event_loop().create_future()
        self.add_event_handler("register", self._register)
        self.add_event_handler("session_start", lambda _e: self._finish(None))
        self.add_event_handler("failed_auth", lambda _e: self._finish("registration was not accepted"))
        self.add_event_handler("connection_failed", lambda e: self._finish(f"connection failed ({e})"))
        self.add_event_handler("ssl_invalid_chain", lambda _e: self._finish("the server's certificate is not trusted"))

    def _finish(self, error: str | None) -> None:
        if not self.done.done():
            self.done.set_result(error)

    async def _register(self, _form: object) -> None:
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send()  # type: ignore[no-untyped-call]
        except IqError as e:
            self._finish(f"the server refused in-band registration ({e.iq['error']['condition']})")
        except IqTimeout:
            self._finish("the server did not answer the registration")


async def register_account(host: str, port: int, jid: str, password: str, ca_file: Path | None) -> None:
    """Create ``jid`` with ``password``; raises ``ConnectionError`` with one clear reason.
    Cancels the event loop's other pending tasks when done: call it before starting sessions."""
    client = _Registrar(jid, password, ca_file)
    client.connect(host, port)
    try:
        error = await asyncio.wait_for(client.done, 20)
    except TimeoutError:
        error = "registration timed out"
    try:
        await asyncio.wait_for(asyncio.shield(client.disconnect()), 3)
    except (TimeoutError, slixmpp.xmlstream.xmlstream.NotConnectedError):
        pass
    # its send loop would otherwise be destroyed pending when the client object goes away;
    # the demo registers before it connects anything else
    await cancel_pending_tasks()
    if error:
        raise ConnectionError(error)
