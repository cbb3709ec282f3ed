"""A minimal slixmpp session around the engine: the only code that does network I/O.

It carries out the engine's effects with PEP/pubsub (publish with publish-options; where the
server refuses them it configures the node instead: client/publish.py), announces ``+notify`` for
both device-list nodes, sends encrypted messages (XEP-0380 marker, store hint, a short clear-text
fallback body) and decrypts what arrives: a MAM (XEP-0313) catch-up of our own archive at
connect (results accepted only with our query id and from our own archive; the engine keeps
used prekeys during it), live and offline messages, and carbons of our own devices (accepted only
from our own bare JID).

With an engine that has an OpenPGP backend (``Engine(..., openpgp=GnuPG())``) it also speaks
OpenPGP for XMPP (XEP-0373/0374): it publishes our key (data node, then metadata, with
publish-options), follows ``urn:xmpp:openpgp:0:public-keys`` (+notify), fetches contacts' keys,
sends ``<openpgp/>`` messages through :meth:`E2EEHandlers.send_chat` (the OMEMO-then-OpenPGP
policy of :mod:`e2ee.fallback`) and decrypts received ones (re-fetching the sender's keys once
when a signature is by a key we have not seen announced).
"""

from __future__ import annotations

import asyncio
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp.xmlstream.xmlstream import NotConnectedError

from e2ee.client.publish import Publisher
from e2ee.client.republish import drop_unchanged
from e2ee.engine import NAMESPACES, Engine
from e2ee.errors import DuplicateMessage, E2EEError, NoSession, PeerError, SignatureNotFromSender, UsageError
from e2ee.fallback import Route, SendResult
from e2ee.media import MediaLink
from e2ee.nodes import DEVICE_LIST_NODES
from e2ee.openpgp.xml import IM_FEATURE, PUBLIC_KEYS_NODE, public_key_node
from e2ee.openpgp.xml import NS as OX
from e2ee.results import (
    Decrypted,
    Duplicate,
    Effect,
    EncryptResult,
    FetchBundle,
    FetchDeviceList,
    FetchPublicKey,
    FetchPublicKeys,
    NotForThisDevice,
    Publish,
    SendMessage,
)
from e2ee.xmpptime import parse_timestamp

from . import media
from .archive import SID_NS, ArchivePosition, archive_complete, own_stanza_id
from .guard import install_depth_guard
from .muc import Rooms
from .stanza_errors import describe
from .types import Received

__all__ = ["FALLBACK_BODY", "E2EESession", "Received"]

log = logging.getLogger(__name__)

O2, LEGACY = NAMESPACES
FALLBACK_BODY = "This message is end-to-end encrypted (OMEMO); your client cannot show it."
#: The clear-text hint of an OpenPGP for XMPP message (XEP-0374).
OX_FALLBACK_BODY = "This message is encrypted using OpenPGP for XMPP."
#: Seconds between two runs of the engine's maintenance (signed-prekey rotation, prekey refill)
#: in a long-lived session; it also runs at every connect.
MAINTENANCE_INTERVAL = 6 * 3600
_MAINTENANCE = "e2ee maintenance"
#: Archived messages read at the first connect (newest first).
MAM_PAGE = 200
#: Page size when reading the archive forward from the remembered position.
MAM_FORWARD_PAGE = 100
#: At most this many archived messages are read at one connect.
MAM_MAX = 10_000
#: Reading forward by time (when the archive was empty last time) starts this much earlier.
CLOCK_SKEW = 300.0


class E2EEHandlers:
    """The session logic, attached to any slixmpp ``ClientXMPP``: it registers the plugins and
    handlers it needs (:meth:`install`), and reads everything else from the client it is attached
    to (attribute access falls through to it).  Used by :class:`E2EESession` and by the slixmpp
    plugin :class:`e2ee.client.plugin.e2ee_omemo`."""

    def __init__(
        self,
        xmpp: slixmpp.ClientXMPP,
        engine: Engine,
        on_received: Callable[[Received], None] | None,
        *,
        omemo: bool = True,
        openpgp_generate: bool = True,
    ) -> None:
        self.xmpp = xmpp
        self.engine = engine
        self.on_received = on_received
        self.ready = asyncio.Event()
        self.failed: str | None = None
        self._sid = False  # our account stamps stanza-ids (XEP-0359) on what it archives
        self._position: ArchivePosition | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._healed: set[tuple[str, str, int]] = set()
        self._publisher: Publisher | None = None
        #: Archived messages processed by the catch-up at the last connect.
        self.caught_up = 0
        #: publish our OMEMO device at start (False: an OpenPGP-only client)
        self.omemo = omemo
        #: with an OpenPGP backend: create our OpenPGP key at start when there is none (an
        #: existing key is always re-announced)
        self.openpgp_generate = openpgp_generate
        self.rooms_of_session: Rooms | None = None  #: set by :class:`~e2ee.client.muc.Rooms` when attached

    def __getattr__(self, name: str) -> Any:  # plugin, boundjid, make_message, send_presence, ...
        return getattr(self.xmpp, name)

    def install(self) -> None:
        xmpp = self.xmpp
        install_depth_guard(xmpp)
        for plugin in (
            "xep_0030",
            "xep_0004",
            "xep_0059",
            "xep_0060",
            "xep_0115",
            "xep_0163",
            "xep_0280",
            "xep_0297",
            "xep_0313",
            "xep_0334",
            "xep_0380",
        ):
            xmpp.register_plugin(plugin)
        xmpp.add_event_handler("session_start", self._session_start)
        # slixmpp's "message" event needs a <body>: key-exchange answers and heartbeats have none
        for ns in NAMESPACES:
            xmpp.register_handler(
                CoroutineCallback(
                    f"e2ee {ns}", MatchXPath(f"{{jabber:client}}message/{{{ns}}}encrypted"), self._message
                )
            )
        for tag in ("received", "sent"):  # slixmpp drops foreign carbons silently: we log them
            xmpp.register_handler(
                CoroutineCallback(
                    f"e2ee carbon {tag}",
                    MatchXPath(f"{{jabber:client}}message/{{urn:xmpp:carbons:2}}{tag}"),
                    self._carbon_origin,
                )
            )
        xmpp.add_event_handler("carbon_received", self._carbon)
        xmpp.add_event_handler("carbon_sent", self._carbon)
        xmpp.add_event_handler("disconnected", lambda _e: xmpp.cancel_schedule(_MAINTENANCE))
        xmpp.add_event_handler("failed_auth", lambda _e: self._fail("authentication failed"))
        xmpp.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed ({e})"))
        xmpp.add_event_handler("ssl_invalid_chain", lambda _e: self._fail("the server's certificate is not trusted"))
        for ns, node in DEVICE_LIST_NODES.items():
            xmpp.plugin["xep_0060"].map_node_event(
                node,  # type: ignore[no-untyped-call]
                f"devices_{'o2' if ns == O2 else 'legacy'}",
            )
            xmpp.add_event_handler(f"devices_{'o2' if ns == O2 else 'legacy'}_publish", self._devices_event(ns))
        if self.engine.has_openpgp:
            self._install_openpgp()

    def _install_openpgp(self) -> None:
        xmpp = self.xmpp
        xmpp.register_handler(
            CoroutineCallback(
                "e2ee openpgp", MatchXPath(f"{{jabber:client}}message/{{{OX}}}openpgp"), self._message_openpgp
            )
        )
        xmpp.plugin["xep_0060"].map_node_event(PUBLIC_KEYS_NODE, "openpgp_keys")  # type: ignore[no-untyped-call]
        xmpp.add_event_handler("openpgp_keys_publish", self._openpgp_keys_event)

    def _fail(self, why: str) -> None:
        if self.ready.is_set():
            return
        self.failed = why
        self.ready.set()
        self.disconnect()

    # ------------------------------------------------------------------ start-up

    async def _session_start(self, _event: object) -> None:
        try:
            for node in DEVICE_LIST_NODES.values():
                self.plugin["xep_0163"].add_interest(node)
            own = self.boundjid.bare
            if self.omemo:
                # carbons and our two device lists in one round trip (the server answers in order)
                _, *lists = await asyncio.gather(
                    self.plugin["xep_0280"].enable(), *(self._fetch_device_list(own, ns) for ns in NAMESPACES)
                )
                for ns, elem in zip(NAMESPACES, lists, strict=True):
                    await self.run_effects(self.engine.on_device_list(own, ns, elem))
                self.engine.maintenance()  # rotate the signed prekey when due; publish() below carries it
                await self.run_effects(
                    await drop_unchanged(lambda node, item: self._first_item(own, node, item), self.engine.publish())
                )
                self.xmpp.cancel_schedule(_MAINTENANCE)
                self.xmpp.schedule(_MAINTENANCE, MAINTENANCE_INTERVAL, self._maintenance, repeat=True)
            else:
                await self.plugin["xep_0280"].enable()
            if self.engine.has_openpgp:
                await self._openpgp_start()
            self._sid = await self._announces_stanza_ids()
            self.caught_up = await self.catch_up()
            # presence last: offline messages then arrive after the archive was read, and are
            # recognised as duplicates of what the catch-up decrypted
            self.send_presence()
        except (IqError, IqTimeout, E2EEError) as e:
            self._fail(f"setting up the session failed: {describe(e)}")
            return
        except Exception as e:  # a bug must not leave start() waiting for its timeout
            log.exception("session set-up failed")
            self._fail(f"setting up the session failed: {type(e).__name__}: {e}")
            return
        self.ready.set()

    async def catch_up(self, max_messages: int = MAM_PAGE) -> int:
        """Decrypt what our archive holds since we last read it: forward from the remembered
        position, page by page (at most :data:`MAM_MAX` messages per connect; the next connect
        goes on from there), or the newest ``max_messages`` when there is no position yet or the
        archive no longer knows it.  Messages already decrypted are recognised by the engine.
        Returns how many archived messages were processed."""
        self.engine.begin_catch_up()
        try:
            position = self._position = ArchivePosition(self.engine.storage)
            if position.archive_id is not None or position.time is not None:
                try:
                    return await self._read_forward(position)
                except IqError as e:
                    if e.condition != "item-not-found":
                        raise
                    log.warning("the archive no longer has message %s: reading its newest page", position.archive_id)
            return await self._read_newest(position, max_messages)
        finally:
            await self.run_effects(self.engine.end_catch_up())

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _maintenance(self) -> None:
        async def run() -> None:
            try:
                await self.run_effects(self.engine.maintenance())
            except (IqError, IqTimeout, E2EEError, NotConnectedError) as e:
                log.warning("periodic maintenance failed: %s", describe(e))

        self.spawn(run())

    async def _announces_stanza_ids(self) -> bool:
        try:
            info = await self.plugin["xep_0030"].get_info(jid=self.boundjid.bare)
        except (IqError, IqTimeout):
            return False
        return SID_NS in info["disco_info"]["features"]

    async def _read_newest(self, position: ArchivePosition, max_messages: int) -> int:
        """The newest ``max_messages``: RSM pages backwards from the end (``<before/>``), as
        many as it takes; a server may cap a page below what we ask (Prosody: 50)."""
        now = time.time()
        results: list[Any] = []
        pages = self.plugin["xep_0313"].retrieve(jid=None, rsm={"max": max_messages}, reverse=True, iterator=True)
        async for iq in pages:
            page = list(iq["mam"]["results"])  # oldest first within a page
            results[:0] = page
            if not page or len(results) >= max_messages or archive_complete(iq):
                break
        results = results[-max_messages:]
        await self._decrypt_archived(results)
        position.advance(results[-1]["mam_result"]["id"] if results else None, now)
        return len(results)

    async def _read_forward(self, position: ArchivePosition) -> int:
        count = 0
        after = position.archive_id
        while count < MAM_MAX:
            now = time.time()
            if after is not None:
                iq = await self.plugin["xep_0313"].retrieve(jid=None, rsm={"max": MAM_FORWARD_PAGE, "after": after})
            else:  # we read the archive when it was empty: everything since then
                since = datetime.fromtimestamp((position.time or now) - CLOCK_SKEW, UTC)
                iq = await self.plugin["xep_0313"].retrieve(jid=None, start=since, rsm={"max": MAM_FORWARD_PAGE})
            results = list(iq["mam"]["results"])
            await self._decrypt_archived(results)
            count += len(results)
            if results:  # the page may be shorter than asked: go on from its RSM <last/>
                after = str(iq["mam_fin"]["rsm"]["last"] or "") or results[-1]["mam_result"]["id"]
            position.advance(after, now)
            if not results or archive_complete(iq):
                return count
        log.warning("more than %d archived messages since the last connect: the rest is read at the next one", MAM_MAX)
        return count

    async def _decrypt_archived(self, results: list[Any]) -> None:
        own = self.boundjid.bare
        for result in results:
            frm = result["from"].bare
            if frm and frm != own:  # only our own archive
                continue
            inner = result.xml.find("{urn:xmpp:mam:2}result/{urn:xmpp:forward:0}forwarded/{jabber:client}message")
            if inner is None:
                continue
            sender = slixmpp.JID(inner.get("from", "")).bare
            to = slixmpp.JID(inner.get("to", "")).bare
            await self._decrypt_stanza(inner, sender, to, carbon=False, archived=True)

    # ------------------------------------------------------------------ effects

    async def run_effects(self, effects: list[Effect] | tuple[Effect, ...]) -> None:
        publications: list[Publish] = []
        for effect in effects:
            if isinstance(effect, Publish):
                publications.append(effect)
                continue
            if publications:
                await self._publish_all(publications)
                publications = []
            if isinstance(effect, FetchDeviceList):
                elem = await self._first_item(effect.jid, effect.node, None)
                await self.run_effects(self.engine.on_device_list(effect.jid, effect.namespace, elem))
            elif isinstance(effect, FetchBundle):
                elem = await self._first_item(effect.jid, effect.node, effect.item_id)
                if elem is not None:
                    try:
                        await self.run_effects(
                            self.engine.on_bundle(effect.jid, effect.device_id, effect.namespace, elem)
                        )
                    except PeerError as e:
                        log.warning("unusable bundle of %s/%s: %s", effect.jid, effect.device_id, e)
            elif isinstance(effect, SendMessage):
                self._send_encrypted_element(effect.jid, effect.encrypted, effect.namespace, body=None)
            elif isinstance(effect, (FetchPublicKeys, FetchPublicKey)):
                await self._fetch_openpgp(effect)
        if publications:
            await self._publish_all(publications)

    async def _publish_all(self, publications: list[Publish]) -> None:
        """Consecutive publications go out together: the server handles them in the order sent,
        and we wait for the answers once instead of once each."""
        await asyncio.gather(*(self._publish(p) for p in publications))

    def _form(self, options: tuple[tuple[str, Any], ...], form_type: str) -> Any:
        form = self.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
        for var, value in options:
            form.add_field(var=var, value=value)
        return form

    async def _publish(self, effect: Publish) -> None:
        """With publish-options; degrades to configuring the node where the server refuses them,
        and retries ejabberd's first-creation race (client/publish.py)."""
        if self._publisher is None:
            self._publisher = Publisher(self.plugin["xep_0060"], lambda: str(self.boundjid.bare), self._form)
        await self._publisher.publish(effect)

    async def _fetch_device_list(self, jid: str, namespace: str) -> ET.Element | None:
        return await self._first_item(jid, DEVICE_LIST_NODES[namespace], None)

    async def fetch_bundle(self, jid: str, device_id: int, namespace: str) -> ET.Element | None:
        """The bundle ``jid`` publishes for ``device_id`` in ``namespace`` as the server holds
        it (None when there is none); nothing is passed to the engine."""
        where = FetchBundle(jid, device_id, namespace)
        return await self._first_item(jid, where.node, where.item_id)

    async def _first_item(self, jid: str, node: str, item_id: str | None) -> ET.Element | None:
        try:
            if item_id is None:
                iq = await self.plugin["xep_0060"].get_items(jid, node, max_items=1)
            else:
                iq = await self.plugin["xep_0060"].get_item(jid, node, item_id)
        except IqError as e:
            if e.iq["error"]["condition"] in ("item-not-found", "forbidden", "not-authorized"):
                return None
            raise
        for item in iq["pubsub"]["items"]:
            payload: ET.Element | None = item.xml.find("*")
            if payload is not None:
                return payload
        return None

    # ------------------------------------------------------------------ sending

    async def send_text(self, to: str, body: str) -> EncryptResult:
        """Encrypt ``body`` for every trusted device of ``to`` and of our account, fetching what
        is missing first, and send one message per namespace.  Nothing is sent when ``to`` has
        no eligible device (the result says why).  Without a presence subscription to ``to`` no
        device-list notification reaches us, so its lists are fetched again first."""
        if not self._subscribed(to):
            for ns in NAMESPACES:
                await self.run_effects([FetchDeviceList(slixmpp.JID(to).bare, ns)])
        for _ in range(4):
            fetches = self.engine.prepare([to], use_openpgp=False)
            if not fetches:
                break
            await self.run_effects(fetches)
        result = self.engine.encrypt_omemo([to], body)
        if result.ready:
            self._send_result(to, result)
        return result

    async def send_chat(self, to: str, body: str, *, allow_plaintext: bool = False) -> SendResult:
        """Send ``body`` to ``to`` by the engine's policy (:mod:`e2ee.fallback`): OMEMO when ``to``
        has a trusted OMEMO device, else OpenPGP when it has a trusted OpenPGP key, else clear
        text only with ``allow_plaintext``.  Raises :class:`~e2ee.errors.NoEligibleDevices`
        (nothing is sent) otherwise.  What is missing is fetched first."""
        bare = slixmpp.JID(to).bare
        if not self._subscribed(to):
            fetches: list[Effect] = [FetchDeviceList(bare, ns) for ns in NAMESPACES] if self.omemo else []
            if self.engine.has_openpgp:
                fetches.append(FetchPublicKeys(bare))
            await self.run_effects(fetches)
        for _ in range(6):  # device lists, bundles, OpenPGP metadata, keys
            effects = self.engine.prepare([bare], use_omemo=self.omemo)
            if not effects:
                break
            await self.run_effects(effects)
        result = self.engine.encrypt([bare], body, allow_plaintext=allow_plaintext, use_omemo=self.omemo)
        for r in result.recipients:
            if r.route is Route.OMEMO and r.omemo is not None and r.omemo.ready:
                self._send_result(to, r.omemo)
            elif r.route is Route.OPENPGP and r.openpgp is not None:
                self._send_openpgp(to, r.openpgp)
            elif r.route is Route.PLAINTEXT:
                self.make_message(mto=to, mtype="chat", mbody=body).send()
        return result

    def _send_openpgp(self, to: str, elem: ET.Element) -> None:
        msg = self.make_message(mto=to, mtype="chat", mbody=OX_FALLBACK_BODY)
        msg.xml.append(elem)
        ET.SubElement(msg.xml, "{urn:xmpp:hints}store")
        eme = ET.SubElement(msg.xml, "{urn:xmpp:eme:0}encryption")
        eme.set("namespace", OX)
        eme.set("name", "OpenPGP for XMPP")
        msg.send()

    def _subscribed(self, jid: str) -> bool:
        bare = slixmpp.JID(jid).bare
        if bare == self.boundjid.bare:
            return True
        item = self.client_roster[bare] if bare in self.client_roster else None
        return item is not None and item["subscription"] in ("to", "both")

    def _send_result(self, to: str, result: EncryptResult, mtype: str = "chat") -> str:
        """Send what :meth:`~e2ee.engine.Engine.encrypt` made as it says: its ``elements`` in one
        stanza to ``to`` (with the fallback body), its ``own_copy`` in one stanza without a
        body to our own bare JID.  Returns the id of the stanza to ``to``."""
        msg_id = self._send_encrypted(to, result.elements, body=FALLBACK_BODY, mtype=mtype)
        if result.own_copy:
            self._send_encrypted(self.boundjid.bare, result.own_copy, body=None)
        return msg_id

    def _send_encrypted_element(
        self, to: str, elem: ET.Element, namespace: str, body: str | None, mtype: str = "chat"
    ) -> str:
        """Send ``elem`` in a message to ``to``; returns the message's id."""
        return self._send_encrypted(to, {namespace: elem}, body=body, mtype=mtype)

    def _send_encrypted(self, to: str, elements: dict[str, ET.Element], body: str | None, mtype: str = "chat") -> str:
        """One ``<message>`` holding every element (one per namespace) and an EME per namespace;
        returns the message's id."""
        msg = self.make_message(mto=to, mtype=mtype, mbody=body)
        if not msg["id"]:
            msg["id"] = self.new_id()
        for elem in elements.values():
            msg.xml.append(elem)
        for namespace in elements:
            eme = ET.SubElement(msg.xml, "{urn:xmpp:eme:0}encryption")
            eme.set("namespace", namespace)
            eme.set("name", "OMEMO")
        ET.SubElement(msg.xml, "{urn:xmpp:hints}store")
        msg.send()
        return str(msg["id"])

    # ------------------------------------------------------------------ receiving

    def _devices_event(self, namespace: str) -> Callable[[Any], Any]:
        async def handler(msg: Any) -> None:
            sender = msg["from"].bare or self.boundjid.bare  # no from: our own account
            for item in msg["pubsub_event"]["items"]:
                payload = item.xml.find("*")
                if payload is None:
                    continue
                try:
                    await self.run_effects(self.engine.on_device_list(sender, namespace, payload))
                except E2EEError as e:
                    log.warning("device list of %s refused: %s", sender, e)

        return handler

    async def _message(self, msg: Any) -> None:
        """A live or offline 1:1 message with OMEMO or OpenPGP content (carbons have their own
        handler); advances the archive position by our server's stanza-id."""
        if msg["type"] not in ("chat", "normal") or msg.xml.find("{urn:xmpp:carbons:2}received") is not None:
            return
        if msg.xml.find("{urn:xmpp:carbons:2}sent") is not None:
            return
        await self._decrypt_stanza(msg.xml, msg["from"].bare, msg["to"].bare, carbon=False)
        if self._sid and self._position is not None:
            archive_id = own_stanza_id(msg.xml, self.boundjid.bare)
            if archive_id is not None:
                self._position.advance(archive_id, time.time())

    async def _carbon_origin(self, msg: Any) -> None:
        if msg["from"].bare != self.boundjid.bare:
            log.warning("dropped a forged carbon from %s", msg["from"])

    async def _carbon(self, msg: Any) -> None:
        if msg["from"].bare != self.boundjid.bare:  # carbons come only from our own account
            return
        for tag in ("{urn:xmpp:carbons:2}received", "{urn:xmpp:carbons:2}sent"):
            wrapper = msg.xml.find(f"{tag}/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message")
            if wrapper is not None:
                inner_from = slixmpp.JID(wrapper.get("from", "")).bare
                inner_to = slixmpp.JID(wrapper.get("to", "")).bare
                await self._decrypt_stanza(wrapper, inner_from, inner_to, carbon=True)

    async def _decrypt_stanza(
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
                self._deliver(Received(None, e, carbon, shown, archived, room=room))
                if isinstance(e, NoSession) and not archived and room is None:
                    await self._heal(e)
                return
            if isinstance(result, Duplicate):
                return
            if isinstance(result, NotForThisDevice) and index + 1 < len(elements):
                continue
            await self.run_effects(result.effects)
            if room is None and isinstance(result, Decrypted):
                room = self._own_copy_room(result, sender, to)
            self._deliver(Received(result, None, carbon, shown, archived, room=room))
            return
        ox = stanza.find(f"{{{OX}}}openpgp")
        if ox is not None and room is None and self.engine.has_openpgp:
            await self._decrypt_openpgp(ox, stanza, sender, to, carbon, archived)

    def _own_copy_room(self, result: Decrypted, sender: str, to: str) -> str | None:
        """The room our own copy of a room message belongs to (a message from our account to our
        bare JID whose SCE ``<to>`` is a room this session knows), else None."""
        own = self.boundjid.bare
        if sender != own or (to or own) != own or not result.to:  # no 'to': our account itself
            return None
        rooms = self.rooms_of_session
        if rooms is None:
            return None
        try:
            state = rooms.get(result.to)
        except UsageError:  # not a room address
            return None
        return state.jid if state is not None else None

    # ------------------------------------------------------------------ OpenPGP for XMPP

    async def _openpgp_start(self) -> None:
        """Follow our own metadata, then announce our key (created first when allowed)."""
        op = self.engine.openpgp
        own = self.boundjid.bare
        self.plugin["xep_0030"].add_feature(IM_FEATURE)  # after binding: for our full JID
        self.plugin["xep_0163"].add_interest(PUBLIC_KEYS_NODE)
        await self.run_effects(op.on_public_keys(own, await self._first_item(own, PUBLIC_KEYS_NODE, None)))
        if op.fingerprint is not None or self.openpgp_generate:
            await self.run_effects(op.publish())

    async def _fetch_openpgp(self, effect: FetchPublicKeys | FetchPublicKey) -> None:
        op = self.engine.openpgp
        node = PUBLIC_KEYS_NODE if isinstance(effect, FetchPublicKeys) else public_key_node(effect.fingerprint)
        try:
            elem = await self._first_item(effect.jid, node, None)
        except IqError as e:  # e.g. service-unavailable: no PEP there; asked again next time
            log.warning("fetching %s of %s failed: %s", node, effect.jid, e.iq["error"]["condition"])
            return
        try:
            if isinstance(effect, FetchPublicKeys):
                await self.run_effects(op.on_public_keys(effect.jid, elem))
            else:
                await self.run_effects(op.on_public_key(effect.jid, effect.fingerprint, elem))
        except PeerError as e:
            log.warning("OpenPGP key data of %s refused: %s: %s", effect.jid, type(e).__name__, e)

    async def _openpgp_keys_event(self, msg: Any) -> None:
        sender = msg["from"].bare or self.boundjid.bare  # no from: our own account
        for item in msg["pubsub_event"]["items"]:
            payload = item.xml.find("*")
            try:
                if payload is None:  # notification without payload: fetch
                    await self.run_effects([FetchPublicKeys(sender)])
                else:
                    await self.run_effects(self.engine.openpgp.on_public_keys(sender, payload))
            except E2EEError as e:
                log.warning("OpenPGP key metadata of %s refused: %s", sender, e)

    async def _message_openpgp(self, msg: Any) -> None:
        if any(msg.xml.find(f"{{{ns}}}encrypted") is not None for ns in NAMESPACES):
            return  # the OMEMO handler takes it
        await self._message(msg)

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
        await self.run_effects(op.prepare([sender]))
        for attempt in (1, 2):
            try:
                result = op.decrypt(elem, sender, to=to or None, timestamp=stamp)
            except SignatureNotFromSender as e:
                if attempt == 1:  # maybe a key announced since we last looked
                    await self.run_effects([FetchPublicKeys(sender)])
                    continue
                error: E2EEError = e
            except DuplicateMessage:
                return
            except E2EEError as e:
                error = e
            else:
                self._deliver(Received(result, None, carbon, sender, archived))
                return
            log.warning("OpenPGP message from %s refused: %s: %s", sender, type(error).__name__, error)
            self._deliver(Received(None, error, carbon, sender, archived))
            return

    async def _heal(self, e: NoSession) -> None:
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
                await self.run_effects(effects)
                effects = self.engine.empty_message(e.jid, e.device_id, e.namespace)
            await self.run_effects(effects)
        except (IqError, IqTimeout, E2EEError) as err:
            log.warning("could not build a session with device %d of %s: %s", e.device_id, e.jid, describe(err))
            return
        log.info("built a new session with device %d of %s", e.device_id, e.jid)

    def _deliver(self, received: Received) -> None:
        if self.on_received is not None:
            self.on_received(received)


class E2EESession(slixmpp.ClientXMPP):
    """A client of its own for one engine.  Connect with :meth:`start` (returns once the
    session is set up, published and caught up)."""

    def __init__(
        self,
        engine: Engine,
        password: str,
        *,
        ca_file: Path | None = None,
        on_received: Callable[[Received], None] | None = None,
        omemo: bool = True,
        openpgp_generate: bool = True,
    ) -> None:
        super().__init__(engine.jid, password)
        if ca_file is not None:
            self.ca_certs = Path(ca_file)
        self.enable_direct_tls = False
        self.e2ee = E2EEHandlers(self, engine, on_received, omemo=omemo, openpgp_generate=openpgp_generate)
        self.e2ee.install()
        self.rooms = Rooms(self.e2ee)  #: group chats (XEP-0045)

    @property
    def engine(self) -> Engine:
        return self.e2ee.engine

    async def send_text(self, to: str, body: str) -> EncryptResult:
        return await self.e2ee.send_text(to, body)

    async def send_chat(self, to: str, body: str, *, allow_plaintext: bool = False) -> SendResult:
        """See :meth:`E2EEHandlers.send_chat` (OMEMO, else OpenPGP, else refused)."""
        return await self.e2ee.send_chat(to, body, allow_plaintext=allow_plaintext)

    async def run_effects(self, effects: list[Effect] | tuple[Effect, ...]) -> None:
        await self.e2ee.run_effects(effects)

    async def send_file(self, to: str, path: Path, progress: media.Progress | None = None) -> media.SentFile:
        """Encrypt ``path``, upload it (XEP-0363) and send its ``aesgcm://`` link (XEP-0454) to
        ``to`` (see :func:`e2ee.client.media.send_file`).  ``progress(done, total)`` is optional."""
        return await media.send_file(self.e2ee, to, path, progress=progress)

    async def download(self, link: MediaLink | str, dest_path: Path, progress: media.Progress | None = None) -> Path:
        """Download, decrypt and verify a shared file into ``dest_path`` (a file, or a directory
        to save it in under its own name), trusting the session's ``ca_file`` too (see
        :func:`e2ee.client.media.download`)."""
        return await media.download(link, dest_path, progress=progress, ca_file=media.session_ca(self))

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
        except (TimeoutError, slixmpp.xmlstream.xmlstream.NotConnectedError):
            pass


async def cancel_pending_tasks() -> None:
    """Cancel what slixmpp leaves running after its streams closed (its send loops), so that a
    program ending with ``asyncio.run`` does not print "Task was destroyed but it is pending"."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
