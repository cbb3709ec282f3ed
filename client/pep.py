"""PEP (XEP-0163 over XEP-0060): the engine's effects carried out, our items published, other
accounts' items fetched, and their notifications followed.

:class:`Pep` runs the effects the engine returns, in order (:meth:`Pep.run`): publications go out
with publish-options (where the server refuses them it configures the node instead:
client/publish.py), device lists and bundles are fetched and handed back to the engine, the
key-exchange answers and heartbeats it asks for are sent, and with an OpenPGP backend the
``urn:xmpp:openpgp:0`` key metadata and keys are fetched.  It announces ``+notify`` for both
device-list nodes (and the OpenPGP key metadata) and passes what they announce to the engine.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form

from e2ee.client.publish import Publisher
from e2ee.engine import NAMESPACES, Engine
from e2ee.errors import E2EEError, PeerError
from e2ee.nodes import DEVICE_LIST_NODES
from e2ee.openpgp.xml import PUBLIC_KEYS_NODE, public_key_node
from e2ee.results import FetchBundle, FetchDeviceList, FetchPublicKey, FetchPublicKeys, Publish, SendMessage

from .stanzas import Stanzas
from .types import Effects, FormValue

__all__ = ["Pep"]

log = logging.getLogger("e2ee.client.session")

O2, LEGACY = NAMESPACES
#: The slixmpp event name of each device-list node (``<name>_publish`` on a notification).
_DEVICE_EVENTS = {ns: f"devices_{'o2' if ns == O2 else 'legacy'}" for ns in DEVICE_LIST_NODES}
_OPENPGP_EVENT = "openpgp_keys"


class Pep:
    """Our PEP side on ``xmpp`` for ``engine``; ``stanzas`` sends what the effects ask for."""

    def __init__(self, xmpp: slixmpp.ClientXMPP, engine: Engine, stanzas: Stanzas) -> None:
        self.xmpp = xmpp
        self.engine = engine
        self.stanzas = stanzas
        self._publisher: Publisher | None = None
        self._handlers: list[tuple[str, Callable[[slixmpp.Message], Coroutine[None, None, None]]]] = []
        self._mapped: list[str] = []  # nodes whose notifications we map to events
        self._interests: list[str] = []  # nodes we announced +notify for

    @property
    def publisher(self) -> Publisher:
        """How our items are published (it remembers what the server refused)."""
        if self._publisher is None:
            self._publisher = Publisher(self.xmpp.plugin["xep_0060"], lambda: str(self.xmpp.boundjid.bare), self.form)
        return self._publisher

    # ------------------------------------------------------------------ notifications

    def install(self) -> None:
        """Follow both device-list nodes (and the OpenPGP key metadata with an OpenPGP engine)."""
        pubsub = self.xmpp.plugin["xep_0060"]
        for ns, node in DEVICE_LIST_NODES.items():
            pubsub.map_node_event(node, _DEVICE_EVENTS[ns])  # type: ignore[no-untyped-call]
            self._handlers.append((f"{_DEVICE_EVENTS[ns]}_publish", self._devices_event(ns)))
        if self.engine.has_openpgp:
            pubsub.map_node_event(PUBLIC_KEYS_NODE, _OPENPGP_EVENT)  # type: ignore[no-untyped-call]
            self._handlers.append((f"{_OPENPGP_EVENT}_publish", self._openpgp_keys_event))
        self._mapped = [*DEVICE_LIST_NODES.values(), *([PUBLIC_KEYS_NODE] if self.engine.has_openpgp else [])]
        for event, handler in self._handlers:
            self.xmpp.add_event_handler(event, handler)

    def announce_interest(self) -> None:
        """``+notify`` for our nodes (in the disco#info of our full JID: call after binding)."""
        pep = self.xmpp.plugin["xep_0163"]
        nodes = [*DEVICE_LIST_NODES.values(), *([PUBLIC_KEYS_NODE] if self.engine.has_openpgp else [])]
        for node in nodes:
            pep.add_interest(node)
            if node not in self._interests:
                self._interests.append(node)

    def uninstall(self) -> None:
        for event, handler in self._handlers:
            self.xmpp.del_event_handler(event, handler)
        self._handlers.clear()
        pubsub, pep = self.xmpp.plugin["xep_0060"], self.xmpp.plugin["xep_0163"]
        for node in self._mapped:
            pubsub.node_event_map.pop(node, None)
        self._mapped.clear()
        for node in self._interests:
            # slixmpp 1.17's remove_interest deletes a feature named after the list of nodes, not
            # "<node>+notify": delete the feature here; remove_interest then updates the caps
            self.xmpp.plugin["xep_0030"].del_feature(feature=f"{node}+notify")
            pep.remove_interest(node)
        self._interests.clear()

    def _devices_event(self, namespace: str) -> Callable[[slixmpp.Message], Coroutine[None, None, None]]:
        async def handler(msg: slixmpp.Message) -> None:
            sender = msg["from"].bare or self.xmpp.boundjid.bare  # no from: our own account
            for item in msg["pubsub_event"]["items"]:
                payload = item.xml.find("*")
                if payload is None:
                    continue
                try:
                    await self.run(self.engine.on_device_list(sender, namespace, payload))
                except E2EEError as e:
                    log.warning("device list of %s refused: %s", sender, e)

        return handler

    async def _openpgp_keys_event(self, msg: slixmpp.Message) -> None:
        sender = msg["from"].bare or self.xmpp.boundjid.bare  # no from: our own account
        for item in msg["pubsub_event"]["items"]:
            payload = item.xml.find("*")
            try:
                if payload is None:  # notification without payload: fetch
                    await self.run([FetchPublicKeys(sender)])
                else:
                    await self.run(self.engine.openpgp.on_public_keys(sender, payload))
            except E2EEError as e:
                log.warning("OpenPGP key metadata of %s refused: %s", sender, e)

    # ------------------------------------------------------------------ effects

    async def run(self, effects: Effects) -> None:
        """Carry out ``effects`` in order (consecutive publications go out together)."""
        publications: list[Publish] = []
        for effect in effects:
            if isinstance(effect, Publish):
                publications.append(effect)
                continue
            if publications:
                await self._publish_all(publications)
                publications = []
            if isinstance(effect, FetchDeviceList):
                elem = await self.first_item(effect.jid, effect.node, None)
                await self.run(self.engine.on_device_list(effect.jid, effect.namespace, elem))
            elif isinstance(effect, FetchBundle):
                elem = await self.first_item(effect.jid, effect.node, effect.item_id)
                if elem is not None:
                    try:
                        await self.run(self.engine.on_bundle(effect.jid, effect.device_id, effect.namespace, elem))
                    except PeerError as e:
                        log.warning("unusable bundle of %s/%s: %s", effect.jid, effect.device_id, e)
            elif isinstance(effect, SendMessage):
                self.stanzas.send_element(effect.jid, effect.encrypted, effect.namespace)
            elif isinstance(effect, (FetchPublicKeys, FetchPublicKey)):
                await self._fetch_openpgp(effect)
        if publications:
            await self._publish_all(publications)

    async def run_parallel(self, effects: Effects) -> None:
        """Carry out independent effects (fetches for several accounts) at once, each once."""
        await asyncio.gather(*(self.run([e]) for e in dict.fromkeys(effects)))

    async def _publish_all(self, publications: list[Publish]) -> None:
        """Consecutive publications go out together: the server handles them in the order sent,
        and we wait for the answers once instead of once each."""
        await asyncio.gather(*(self.publish(p) for p in publications))

    async def publish(self, effect: Publish) -> None:
        """With publish-options; degrades to configuring the node where the server refuses them,
        and retries ejabberd's first-creation race (client/publish.py)."""
        await self.publisher.publish(effect)

    def form(self, options: tuple[tuple[str, FormValue], ...], form_type: str) -> Form:
        """A submitted data form (XEP-0004) of ``options`` with its ``FORM_TYPE``."""
        form = self.xmpp.plugin["xep_0004"].make_form(ftype="submit")  # type: ignore[no-untyped-call]
        form.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
        for var, value in options:
            form.add_field(var=var, value=value)
        submitted: Form = form
        return submitted

    # ------------------------------------------------------------------ fetching

    async def first_item(self, jid: str, node: str, item_id: str | None) -> ET.Element | None:
        """The payload of item ``item_id`` (the newest with None) of ``jid``'s ``node``; None
        when there is none or we may not read it."""
        pubsub = self.xmpp.plugin["xep_0060"]
        try:
            if item_id is None:
                iq = await pubsub.get_items(jid, node, max_items=1)  # type: ignore[no-untyped-call]
            else:
                iq = await pubsub.get_item(jid, node, item_id)  # type: ignore[no-untyped-call]
        except IqError as e:
            if e.iq["error"]["condition"] in ("item-not-found", "forbidden", "not-authorized"):
                return None
            raise
        for item in iq["pubsub"]["items"]:
            payload: ET.Element | None = item.xml.find("*")
            if payload is not None:
                return payload
        return None

    async def fetch_device_list(self, jid: str, namespace: str) -> ET.Element | None:
        """``jid``'s device list in ``namespace`` as the server holds it (not passed to the engine)."""
        return await self.first_item(jid, DEVICE_LIST_NODES[namespace], None)

    async def fetch_bundle(self, jid: str, device_id: int, namespace: str) -> ET.Element | None:
        """The bundle ``jid`` publishes for ``device_id`` in ``namespace`` as the server holds
        it (None when there is none); nothing is passed to the engine."""
        where = FetchBundle(jid, device_id, namespace)
        return await self.first_item(jid, where.node, where.item_id)

    async def _fetch_openpgp(self, effect: FetchPublicKeys | FetchPublicKey) -> None:
        op = self.engine.openpgp
        node = PUBLIC_KEYS_NODE if isinstance(effect, FetchPublicKeys) else public_key_node(effect.fingerprint)
        try:
            elem = await self.first_item(effect.jid, node, None)
        except IqError as e:  # e.g. service-unavailable: no PEP there; asked again next time
            log.warning("fetching %s of %s failed: %s", node, effect.jid, e.iq["error"]["condition"])
            return
        try:
            if isinstance(effect, FetchPublicKeys):
                await self.run(op.on_public_keys(effect.jid, elem))
            else:
                await self.run(op.on_public_key(effect.jid, effect.fingerprint, elem))
        except PeerError as e:
            log.warning("OpenPGP key data of %s refused: %s: %s", effect.jid, type(e).__name__, e)
