"""Receiving: live and offline messages, carbons of our own devices, and healing.

Every OMEMO (or OpenPGP for XMPP) message, whatever brought it (a live stanza, a carbon, the
archive catch-up, a room), is decrypted by :meth:`Incoming.decrypt_stanza` and its result or the
refusal handed to the application as a :class:`~e2ee.client.types.Received`.  Carbons are
accepted only from our own bare JID.  A message on a session we do not have is answered by
building one from the sender's bundle and sending it an empty message (:meth:`Incoming.heal`).
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import StanzaBase
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

from e2ee.engine import NAMESPACES, Engine
from e2ee.errors import DuplicateMessage, E2EEError, NoSession, SignatureNotFromSender
from e2ee.openpgp.xml import NS as OX
from e2ee.results import Decrypted, Duplicate, FetchBundle, FetchPublicKeys, NotForThisDevice
from e2ee.xmpptime import parse_timestamp

from .archive import ArchivePosition, own_stanza_id
from .pep import Pep
from .stanza_errors import describe
from .types import OnReceived, Received

__all__ = ["Incoming"]

log = logging.getLogger("e2ee.client.session")

_CARBONS = "urn:xmpp:carbons:2"


class Incoming:
    """The receiving side of one session: its stanza handlers (:meth:`install`) and the one
    decryption path every received message takes."""

    def __init__(self, xmpp: slixmpp.ClientXMPP, engine: Engine, pep: Pep, on_received: OnReceived | None) -> None:
        self.xmpp = xmpp
        self.engine = engine
        self.pep = pep
        self.on_received = on_received
        #: where live messages advance the archive position (set by the catch-up)
        self.position: ArchivePosition | None = None
        #: our account stamps stanza-ids (XEP-0359) on what it archives
        self.stanza_ids = False
        #: the bare JID of a room this session is in, for an address (None: not one); set by
        #: :class:`~e2ee.client.muc.Rooms` so that our own copies of room messages show the room
        self.known_room: Callable[[str], str | None] | None = None
        self._healed: set[tuple[str, str, int]] = set()
        self._handlers: list[str] = []

    def install(self) -> None:
        xmpp = self.xmpp
        # slixmpp's "message" event needs a <body>: key-exchange answers and heartbeats have none
        for ns in NAMESPACES:
            self._register(f"e2ee {ns}", f"{{jabber:client}}message/{{{ns}}}encrypted", self._message)
        for tag in ("received", "sent"):  # slixmpp drops foreign carbons silently: we log them
            self._register(f"e2ee carbon {tag}", f"{{jabber:client}}message/{{{_CARBONS}}}{tag}", self._carbon_origin)
        if self.engine.has_openpgp:
            self._register("e2ee openpgp", f"{{jabber:client}}message/{{{OX}}}openpgp", self._message_openpgp)
        xmpp.add_event_handler("carbon_received", self._carbon)
        xmpp.add_event_handler("carbon_sent", self._carbon)

    def _register(self, name: str, xpath: str, handler: Callable[[StanzaBase], Awaitable[None]]) -> None:
        self.xmpp.register_handler(CoroutineCallback(name, MatchXPath(xpath), handler))
        self._handlers.append(name)

    def uninstall(self) -> None:
        for name in self._handlers:
            self.xmpp.remove_handler(name)
        self._handlers.clear()
        self.xmpp.del_event_handler("carbon_received", self._carbon)
        self.xmpp.del_event_handler("carbon_sent", self._carbon)

    def deliver(self, received: Received) -> None:
        if self.on_received is not None:
            self.on_received(received)

    # ------------------------------------------------------------------ handlers

    async def _message(self, msg: StanzaBase) -> None:
        """A live or offline 1:1 message with OMEMO or OpenPGP content (carbons have their own
        handler); advances the archive position by our server's stanza-id."""
        if msg["type"] not in ("chat", "normal") or msg.xml.find(f"{{{_CARBONS}}}received") is not None:
            return
        if msg.xml.find(f"{{{_CARBONS}}}sent") is not None:
            return
        await self.decrypt_stanza(msg.xml, msg["from"].bare, msg["to"].bare, carbon=False)
        if self.stanza_ids and self.position is not None:
            archive_id = own_stanza_id(msg.xml, self.xmpp.boundjid.bare)
            if archive_id is not None:
                self.position.advance(archive_id, time.time())

    async def _message_openpgp(self, msg: StanzaBase) -> None:
        if any(msg.xml.find(f"{{{ns}}}encrypted") is not None for ns in NAMESPACES):
            return  # the OMEMO handler takes it
        await self._message(msg)

    async def _carbon_origin(self, msg: StanzaBase) -> None:
        if msg["from"].bare != self.xmpp.boundjid.bare:
            log.warning("dropped a forged carbon from %s", msg["from"])

    async def _carbon(self, msg: slixmpp.Message) -> None:
        if msg["from"].bare != self.xmpp.boundjid.bare:  # carbons come only from our own account
            return
        for tag in ("received", "sent"):
            wrapper = msg.xml.find(f"{{{_CARBONS}}}{tag}/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message")
            if wrapper is not None:
                inner_from = slixmpp.JID(wrapper.get("from", "")).bare
                inner_to = slixmpp.JID(wrapper.get("to", "")).bare
                await self.decrypt_stanza(wrapper, inner_from, inner_to, carbon=True)

    # ------------------------------------------------------------------ decrypting

    async def decrypt_stanza(
        self,
        stanza: ET.Element,
        sender: str,
        to: str,
        carbon: bool,
        archived: bool = False,
        room: str | None = None,
        occupant: str | None = None,
    ) -> None:
        """Decrypt the OMEMO (or OpenPGP) content of ``stanza`` from ``sender`` (a bare JID) and
        deliver the result or the refusal; a message already decrypted is dropped silently.  A
        group message names its ``room`` (then the SCE ``<to>`` must be the room) and the
        ``occupant`` (room/nick) it came from."""
        shown = occupant or sender
        # a stanza may hold one element per namespace (EncryptResult.elements): the one with a
        # key for this device counts; "not for this device" only when none has one
        elements = [e for e in (stanza.find(f"{{{ns}}}encrypted") for ns in NAMESPACES) if e is not None]
        for index, elem in enumerate(elements):
            try:
                result = self.engine.decrypt(elem, sender, to=room or to or None, require_to=room is not None)
            except E2EEError as e:
                who = f"{occupant} ({sender})" if occupant else sender
                log.warning("message from %s refused: %s: %s", who, type(e).__name__, e)
                self.deliver(Received(None, e, carbon, shown, archived, room=room))
                if isinstance(e, NoSession) and not archived and room is None:
                    await self.heal(e)
                return
            if isinstance(result, Duplicate):
                return
            if isinstance(result, NotForThisDevice) and index + 1 < len(elements):
                continue
            await self.pep.run(result.effects)
            if room is None and isinstance(result, Decrypted):
                room = self._own_copy_room(result, sender, to)
            self.deliver(Received(result, None, carbon, shown, archived, room=room))
            return
        ox = stanza.find(f"{{{OX}}}openpgp")
        if ox is not None and room is None and self.engine.has_openpgp:
            await self._decrypt_openpgp(ox, stanza, sender, to, carbon, archived)

    def _own_copy_room(self, result: Decrypted, sender: str, to: str) -> str | None:
        """The room our own copy of a room message belongs to (a message from our account to our
        bare JID whose SCE ``<to>`` is a room this session knows), else None."""
        own = self.xmpp.boundjid.bare
        if sender != own or (to or own) != own or not result.to:  # no 'to': our account itself
            return None
        return self.known_room(result.to) if self.known_room is not None else None

    async def _decrypt_openpgp(
        self, elem: ET.Element, stanza: ET.Element, sender: str, to: str, carbon: bool, archived: bool
    ) -> None:
        op = self.engine.openpgp
        delay = stanza.find("{urn:xmpp:delay}delay")
        stamp = None
        if delay is not None:
            try:
                stamp = parse_timestamp(delay.get("stamp") or "")
            except E2EEError:
                stamp = None
        if stamp is None and not archived:
            stamp = datetime.now(UTC)  # a live message: compare with the receive time
        await self.pep.run(op.prepare([sender]))
        for attempt in (1, 2):
            try:
                result = op.decrypt(elem, sender, to=to or None, timestamp=stamp)
            except SignatureNotFromSender as e:
                if attempt == 1:  # maybe a key announced since we last looked
                    await self.pep.run([FetchPublicKeys(sender)])
                    continue
                error: E2EEError = e
            except DuplicateMessage:
                return
            except E2EEError as e:
                error = e
            else:
                self.deliver(Received(result, None, carbon, sender, archived))
                return
            log.warning("OpenPGP message from %s refused: %s: %s", sender, type(error).__name__, error)
            self.deliver(Received(None, error, carbon, sender, archived))
            return

    async def heal(self, e: NoSession) -> None:
        """A device writes to us on a session we do not have (we lost it, or it never reached
        us): build one from its bundle and send it an empty message, so that its next messages
        use the new session (XEP-0384).  Once per device per connection; never for archived
        messages (they are old, the device has moved on)."""
        device = (e.namespace, e.jid, e.device_id)
        if not e.jid or device in self._healed:
            return
        self._healed.add(device)
        try:
            effects = self.engine.empty_message(e.jid, e.device_id, e.namespace)
            if any(isinstance(x, FetchBundle) for x in effects):
                await self.pep.run(effects)
                effects = self.engine.empty_message(e.jid, e.device_id, e.namespace)
            await self.pep.run(effects)
        except (IqError, IqTimeout, E2EEError) as err:
            log.warning("could not build a session with device %d of %s: %s", e.device_id, e.jid, describe(err))
            return
        log.info("built a new session with device %d of %s", e.device_id, e.jid)
