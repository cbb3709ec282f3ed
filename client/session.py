"""A minimal slixmpp session around the engine: the only code that does network I/O.

It carries out the engine's effects with PEP/pubsub (publish with publish-options; on
precondition-not-met it reconfigures the node and publishes again), announces ``+notify`` for
both device-list nodes, sends encrypted messages (XEP-0380 marker, store hint, a short clear-text
fallback body) and decrypts what arrives: a MAM (XEP-0313) catch-up of our own archive at
connect (results accepted only with our query id and from our own archive; the engine keeps
used prekeys during it), live and offline messages, and carbons of our own devices (accepted only
from our own bare JID).
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

from client.republish import drop_unchanged
from e2ee.engine import NAMESPACES, Engine
from e2ee.errors import DuplicateMessage, E2EEError, PeerError
from e2ee.results import (
    DecryptResult,
    Effect,
    EncryptResult,
    FetchBundle,
    FetchDeviceList,
    Publish,
    SendMessage,
)

__all__ = ["E2EESession", "Received", "FALLBACK_BODY"]

log = logging.getLogger(__name__)

O2, LEGACY = NAMESPACES
DEVICE_LIST_NODES = {O2: "urn:xmpp:omemo:2:devices", LEGACY: "eu.siacs.conversations.axolotl.devicelist"}
FALLBACK_BODY = "This message is end-to-end encrypted (OMEMO); your client cannot show it."
_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
#: Archived messages looked at on connect.
MAM_PAGE = 200


def _bundle_node(namespace: str, device_id: int) -> tuple[str, str | None]:
    if namespace == O2:
        return "urn:xmpp:omemo:2:bundles", str(device_id)
    return f"eu.siacs.conversations.axolotl.bundles:{device_id}", None


class Received:
    """What arrived: the engine's result plus where it came from."""

    def __init__(
        self, result: DecryptResult | None, error: E2EEError | None, carbon: bool, stanza_from: str, archived: bool = False
    ) -> None:
        self.result = result
        self.error = error
        self.carbon = carbon
        self.stanza_from = stanza_from
        self.archived = archived


class E2EEHandlers:
    """The session logic, attached to any slixmpp ``ClientXMPP``: it registers the plugins and
    handlers it needs (:meth:`install`), and reads everything else from the client it is attached
    to (attribute access falls through to it).  Used by :class:`E2EESession` and by the slixmpp
    plugin :class:`client.plugin.e2ee_omemo`."""

    def __init__(self, xmpp: slixmpp.ClientXMPP, engine: Engine, on_received: Callable[[Received], None] | None) -> None:
        self.xmpp = xmpp
        self.engine = engine
        self.on_received = on_received
        self.ready = asyncio.Event()
        self.failed: str | None = None

    def __getattr__(self, name: str) -> Any:  # plugin, boundjid, make_message, send_presence, ...
        return getattr(self.xmpp, name)

    def install(self) -> None:
        xmpp = self.xmpp
        for plugin in (
            "xep_0030", "xep_0004", "xep_0059", "xep_0060", "xep_0115", "xep_0163", "xep_0280", "xep_0297",
            "xep_0313", "xep_0334", "xep_0380",
        ):
            xmpp.register_plugin(plugin)
        xmpp.add_event_handler("session_start", self._session_start)
        # slixmpp's "message" event needs a <body>: key-exchange answers and heartbeats have none
        for ns in NAMESPACES:
            xmpp.register_handler(
                CoroutineCallback(f"e2ee {ns}", MatchXPath(f"{{jabber:client}}message/{{{ns}}}encrypted"), self._message)
            )
        for tag in ("received", "sent"):  # slixmpp drops foreign carbons silently: we log them
            xmpp.register_handler(
                CoroutineCallback(
                    f"e2ee carbon {tag}", MatchXPath(f"{{jabber:client}}message/{{urn:xmpp:carbons:2}}{tag}"),
                    self._carbon_origin,
                )
            )
        xmpp.add_event_handler("carbon_received", self._carbon)
        xmpp.add_event_handler("carbon_sent", self._carbon)
        xmpp.add_event_handler("failed_auth", lambda _e: self._fail("authentication failed"))
        xmpp.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed ({e})"))
        xmpp.add_event_handler("ssl_invalid_chain", lambda _e: self._fail("the server's certificate is not trusted"))
        for ns, node in DEVICE_LIST_NODES.items():
            xmpp.plugin["xep_0060"].map_node_event(node, f"devices_{'o2' if ns == O2 else 'legacy'}")
            xmpp.add_event_handler(f"devices_{'o2' if ns == O2 else 'legacy'}_publish", self._devices_event(ns))

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
            # carbons and our two device lists in one round trip (the server answers in order)
            _, *lists = await asyncio.gather(
                self.plugin["xep_0280"].enable(), *(self._fetch_device_list(own, ns) for ns in NAMESPACES)
            )
            for ns, elem in zip(NAMESPACES, lists):
                await self.run_effects(self.engine.on_device_list(own, ns, elem))
            await self.run_effects(await drop_unchanged(lambda node, item: self._first_item(own, node, item), self.engine.publish()))
            await self.catch_up()
            # presence last: offline messages then arrive after the archive was read, and are
            # recognised as duplicates of what the catch-up decrypted
            self.send_presence()
        except (IqError, IqTimeout, E2EEError) as e:
            self._fail(f"setting up the session failed: {e}")
            return
        except Exception as e:  # a bug must not leave start() waiting for its timeout
            log.exception("session set-up failed")
            self._fail(f"setting up the session failed: {type(e).__name__}: {e}")
            return
        self.ready.set()

    async def catch_up(self, max_messages: int = MAM_PAGE) -> int:
        """Decrypt the newest ``max_messages`` of our archive (duplicates of what we already
        decrypted are ignored by the engine).  Returns how many results were processed."""
        own = self.boundjid.bare
        self.engine.begin_catch_up()
        count = 0
        try:
            iq = await self.plugin["xep_0313"].retrieve(jid=None, rsm={"max": max_messages}, reverse=True)
            results = list(iq["mam"]["results"])
            for result in reversed(results):  # oldest first
                frm = result["from"].bare
                if frm and frm != own:  # only our own archive
                    continue
                inner = result.xml.find(
                    "{urn:xmpp:mam:2}result/{urn:xmpp:forward:0}forwarded/{jabber:client}message"
                )
                if inner is None:
                    continue
                sender = slixmpp.JID(inner.get("from", "")).bare
                to = slixmpp.JID(inner.get("to", "")).bare
                await self._decrypt_stanza(inner, sender, to, carbon=False, archived=True)
                count += 1
        finally:
            await self.run_effects(self.engine.end_catch_up())
        return count

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
                elem = await self._fetch_device_list(effect.jid, effect.namespace)
                await self.run_effects(self.engine.on_device_list(effect.jid, effect.namespace, elem))
            elif isinstance(effect, FetchBundle):
                elem = await self._fetch_bundle(effect.jid, effect.device_id, effect.namespace)
                if elem is not None:
                    try:
                        await self.run_effects(self.engine.on_bundle(effect.jid, effect.device_id, effect.namespace, elem))
                    except PeerError as e:
                        log.warning("unusable bundle of %s/%s: %s", effect.jid, effect.device_id, e)
            elif isinstance(effect, SendMessage):
                self._send_encrypted_element(effect.jid, effect.encrypted, effect.namespace, body=None)
        if publications:
            await self._publish_all(publications)

    async def _publish_all(self, publications: list[Publish]) -> None:
        """Consecutive publications go out together: the server handles them in the order sent,
        and we wait for the answers once instead of once each."""
        await asyncio.gather(*(self._publish(p) for p in publications))

    def _form(self, options: tuple[tuple[str, str], ...], form_type: str) -> Any:
        form = self.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
        for var, value in options:
            form.add_field(var=var, value=value)
        return form

    async def _publish(self, effect: Publish) -> None:
        own = self.boundjid.bare
        options = self._form(effect.options, "http://jabber.org/protocol/pubsub#publish-options")
        try:
            await self.plugin["xep_0060"].publish(own, effect.node, id=effect.item_id, payload=effect.payload, options=options)
        except IqError as e:
            if e.iq["error"]["condition"] != "conflict" and not _precondition(e):
                raise
            # the node exists with other settings: reconfigure it, then publish again
            config = self._form(effect.options, "http://jabber.org/protocol/pubsub#node_config")
            await self.plugin["xep_0060"].set_node_config(own, effect.node, config)
            await self.plugin["xep_0060"].publish(own, effect.node, id=effect.item_id, payload=effect.payload)

    async def _fetch_device_list(self, jid: str, namespace: str) -> ET.Element | None:
        return await self._first_item(jid, DEVICE_LIST_NODES[namespace], None)

    async def _fetch_bundle(self, jid: str, device_id: int, namespace: str) -> ET.Element | None:
        node, item = _bundle_node(namespace, device_id)
        return await self._first_item(jid, node, item)

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
            payload = item.xml.find("*")
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
            fetches = self.engine.prepare([to])
            if not fetches:
                break
            await self.run_effects(fetches)
        result = self.engine.encrypt([to], body)
        if result.ready:
            for ns, elem in result.elements.items():
                self._send_encrypted_element(to, elem, ns, body=FALLBACK_BODY)
        return result

    def _subscribed(self, jid: str) -> bool:
        bare = slixmpp.JID(jid).bare
        if bare == self.boundjid.bare:
            return True
        item = self.client_roster[bare] if bare in self.client_roster else None
        return item is not None and item["subscription"] in ("to", "both")

    def _send_encrypted_element(self, to: str, elem: ET.Element, namespace: str, body: str | None) -> None:
        msg = self.make_message(mto=to, mtype="chat", mbody=body)
        msg.xml.append(elem)
        eme = ET.SubElement(msg.xml, "{urn:xmpp:eme:0}encryption")
        eme.set("namespace", namespace)
        eme.set("name", "OMEMO")
        ET.SubElement(msg.xml, "{urn:xmpp:hints}store")
        msg.send()

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
        if msg["type"] not in ("chat", "normal") or msg.xml.find("{urn:xmpp:carbons:2}received") is not None:
            return
        if msg.xml.find("{urn:xmpp:carbons:2}sent") is not None:
            return
        await self._decrypt_stanza(msg.xml, msg["from"].bare, msg["to"].bare, carbon=False)

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
        self, stanza: ET.Element, sender: str, to: str, carbon: bool, archived: bool = False
    ) -> None:
        for ns in NAMESPACES:
            elem = stanza.find(f"{{{ns}}}encrypted")
            if elem is None:
                continue
            try:
                result = self.engine.decrypt(elem, sender, to=to or None)
            except DuplicateMessage:
                return
            except E2EEError as e:
                log.warning("message from %s refused: %s: %s", sender, type(e).__name__, e)
                self._deliver(Received(None, e, carbon, sender, archived))
                return
            await self.run_effects(result.effects)
            self._deliver(Received(result, None, carbon, sender, archived))
            return

    def _deliver(self, received: Received) -> None:
        if self.on_received is not None:
            self.on_received(received)


def _precondition(e: IqError) -> bool:
    return e.iq.xml.find(f".//{{{_PUBSUB_ERRORS}}}precondition-not-met") is not None


class E2EESession(slixmpp.ClientXMPP):  # type: ignore[misc]
    """A client of its own for one engine.  Connect with :meth:`start` (returns once the
    session is set up, published and caught up)."""

    def __init__(
        self,
        engine: Engine,
        password: str,
        *,
        ca_file: Path | None = None,
        on_received: Callable[[Received], None] | None = None,
    ) -> None:
        super().__init__(engine.jid, password)
        if ca_file is not None:
            self.ca_certs = Path(ca_file)
        self.enable_direct_tls = False
        self.e2ee = E2EEHandlers(self, engine, on_received)
        self.e2ee.install()

    @property
    def engine(self) -> Engine:
        return self.e2ee.engine

    async def send_text(self, to: str, body: str) -> EncryptResult:
        return await self.e2ee.send_text(to, body)

    async def run_effects(self, effects: list[Effect] | tuple[Effect, ...]) -> None:
        await self.e2ee.run_effects(effects)

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
        except (asyncio.TimeoutError, slixmpp.xmlstream.xmlstream.NotConnectedError):
            pass



async def cancel_pending_tasks() -> None:
    """Cancel what slixmpp leaves running after its streams closed (its send loops), so that a
    program ending with ``asyncio.run`` does not print "Task was destroyed but it is pending"."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
