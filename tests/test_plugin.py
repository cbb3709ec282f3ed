"""The client as a slixmpp plugin: ``e2ee_omemo`` loads the plugins it declares, adds its stanza
handlers, event handlers, PEP node mappings, EME names and depth guard in ``plugin_init``, and
``plugin_end`` (``xmpp.plugin.disable``) takes every one of them away again; over a real server
its disco features come and go with it."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import slixmpp
from slixmpp.plugins.xep_0380 import XEP_0380
from slixmpp.xmlstream.handler.base import BaseHandler

from e2ee.client.gpg import GnuPG
from e2ee.client.plugin import e2ee_omemo
from e2ee.client.stanzas import FALLBACK_BODY, OX_FALLBACK_BODY
from e2ee.client.types import Received
from e2ee.engine import NAMESPACES, Engine
from e2ee.nodes import DEVICE_LIST_NODES
from e2ee.openpgp.xml import IM_FEATURE, PUBLIC_KEYS_NODE
from e2ee.openpgp.xml import NS as OX
from e2ee.storage import MemoryStorage

from .xmpp_server import Accounts

SERVER_USERS = ("alice",)
ME = "alice@example.org"
EVENTS = (
    "session_start",
    "disconnected",
    "failed_auth",
    "connection_failed",
    "ssl_invalid_chain",
    "carbon_received",
    "carbon_sent",
    "devices_o2_publish",
    "devices_legacy_publish",
    "openpgp_keys_publish",
)


@pytest.fixture(params=["omemo", "omemo+openpgp"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "omemo":
        yield Engine.create(MemoryStorage(), ME)
        return
    with GnuPG() as gpg:
        yield Engine.create(MemoryStorage(), ME, openpgp=gpg)


class _Recording(slixmpp.ClientXMPP):
    """A plain client that remembers the names of the stanza handlers registered on it."""

    handler_names: list[str]

    def __init__(self) -> None:
        self.handler_names = []
        super().__init__(ME, "pw")

    def register_handler(
        self, handler: BaseHandler, before: BaseHandler | None = None, after: BaseHandler | None = None
    ) -> None:
        self.handler_names.append(handler.name)
        super().register_handler(handler, before, after)


def _register(xmpp: slixmpp.ClientXMPP, engine: Engine, inbox: list[Received]) -> e2ee_omemo:
    xmpp.register_plugin("e2ee_omemo", {"engine": engine, "on_received": inbox.append}, module="e2ee.client.plugin")
    plugin = xmpp.plugin.get("e2ee_omemo", None)
    assert isinstance(plugin, e2ee_omemo)
    return plugin


def test_the_declared_dependencies_are_loaded_with_the_plugin(engine: Engine) -> None:
    xmpp = slixmpp.ClientXMPP(ME, "pw")
    assert not any(xmpp.plugin.enabled(d) for d in ("xep_0280", "xep_0313", "xep_0380", "xep_0045"))
    plugin = _register(xmpp, engine, [])
    assert {"xep_0060", "xep_0163", "xep_0280", "xep_0313", "xep_0380", "xep_0334", "xep_0045"} <= plugin.dependencies
    assert all(xmpp.plugin.enabled(d) for d in plugin.dependencies)
    assert plugin.engine is engine and plugin.rooms.engine is engine


def test_plugin_end_removes_everything_plugin_init_added(engine: Engine) -> None:
    xmpp = _Recording()
    before = {e: xmpp.event_handled(e) for e in EVENTS}
    spawn_event = xmpp._spawn_event
    names_before = dict(XEP_0380.mechanisms)
    _register(xmpp, engine, [])
    bind_handlers = xmpp.event_handled("session_bind")  # ours and those of the plugins it loaded
    ours = [n for n in xmpp.handler_names if n.startswith("e2ee")]
    expected = {f"e2ee {ns}" for ns in NAMESPACES} | {f"e2ee muc {ns}" for ns in NAMESPACES}
    expected |= {"e2ee carbon received", "e2ee carbon sent", "e2ee muc presence", "e2ee muc notice"}
    assert expected <= set(ours)
    assert ("e2ee openpgp" in ours) == engine.has_openpgp
    added = {e for e in EVENTS if xmpp.event_handled(e) > before[e]}
    assert {"session_start", "disconnected", "failed_auth", "carbon_received", "devices_o2_publish"} <= added
    assert ("openpgp_keys_publish" in added) == engine.has_openpgp
    node_map = xmpp.plugin["xep_0060"].node_event_map
    assert set(DEVICE_LIST_NODES.values()) <= set(node_map)
    assert (PUBLIC_KEYS_NODE in node_map) == engine.has_openpgp
    assert xmpp.plugin["xep_0380"].mechanisms[NAMESPACES[0]] == "OMEMO"
    assert xmpp._spawn_event is not spawn_event  # the depth guard

    xmpp.plugin.disable("e2ee_omemo")

    assert not xmpp.plugin.enabled("e2ee_omemo")
    assert {e: xmpp.event_handled(e) for e in EVENTS} == before
    assert xmpp.event_handled("session_bind") == bind_handlers - 1
    assert [n for n in ours if xmpp.remove_handler(n)] == []  # none of them was left to remove
    assert not set(DEVICE_LIST_NODES.values()) & set(node_map) and PUBLIC_KEYS_NODE not in node_map
    assert xmpp.plugin["xep_0380"].mechanisms == names_before
    assert xmpp._spawn_event == spawn_event
    # what it depended on stays for the application's other uses
    assert xmpp.plugin.enabled("xep_0280") and xmpp.plugin.enabled("xep_0380")


def test_messages_carry_an_eme_per_namespace_and_the_store_hint_through_slixmpp_plugins() -> None:
    xmpp = slixmpp.ClientXMPP(ME, "pw")
    plugin = _register(xmpp, Engine.create(MemoryStorage(), ME), [])
    sent: list[slixmpp.Message] = []
    xmpp.send = sent.append  # type: ignore[method-assign,assignment]  # (not connected: what would go out)
    elements = {ns: ET.Element(f"{{{ns}}}encrypted") for ns in NAMESPACES}
    msg_id = plugin.stanzas.send_encrypted("bob@example.net", elements, body=FALLBACK_BODY)
    plugin.stanzas.send_openpgp("bob@example.net", ET.Element(f"{{{OX}}}openpgp"))
    omemo, openpgp = sent
    assert omemo["id"] == msg_id and omemo["body"] == FALLBACK_BODY and omemo["eme"]["namespace"] == NAMESPACES[0]
    marks = [(e.get("namespace"), e.get("name")) for e in omemo.xml.findall("{urn:xmpp:eme:0}encryption")]
    assert marks == [(ns, "OMEMO") for ns in NAMESPACES]
    assert [e.tag for e in omemo.xml if e.tag.endswith("encrypted")] == [f"{{{ns}}}encrypted" for ns in NAMESPACES]
    assert (openpgp["eme"]["namespace"], openpgp["eme"]["name"]) == (OX, "OpenPGP for XMPP")
    assert openpgp["body"] == OX_FALLBACK_BODY
    for msg in sent:
        assert msg.xml.find("{urn:xmpp:hints}store") is not None


def test_the_plugin_refuses_to_start_without_an_engine() -> None:
    xmpp = slixmpp.ClientXMPP(ME, "pw")
    with pytest.raises(ValueError, match="pconfig"):
        xmpp.register_plugin("e2ee_omemo", {"engine": "not an engine"}, module="e2ee.client.plugin")


def test_over_a_server_the_plugin_announces_its_interests_and_takes_them_back(server: Accounts) -> None:
    """Registered on a plain client: published and caught up (``ready``); our full JID's disco
    features hold the ``+notify`` interests; disabled, they are gone and the connection goes on."""

    async def run() -> None:
        xmpp = slixmpp.ClientXMPP(server.jid("alice"), "alice-pw")
        xmpp.ca_certs, xmpp.enable_direct_tls = server.cert, False
        inbox: list[Received] = []
        plugin = _register(xmpp, Engine.create(MemoryStorage(), server.jid("alice")), inbox)
        xmpp.connect("127.0.0.1", server.port)
        try:
            await asyncio.wait_for(plugin.ready.wait(), 20)
            assert plugin.failed is None
            disco = xmpp.plugin["xep_0030"]
            notify = {f"{node}+notify" for node in DEVICE_LIST_NODES.values()}

            async def features() -> set[str]:
                info = await disco.get_info(jid=xmpp.boundjid, local=True)
                return set(info["features"])  # (the local answer is the disco#info element)

            assert notify <= await features()
            assert IM_FEATURE not in await features()  # no OpenPGP backend
            xmpp.plugin.disable("e2ee_omemo")
            assert not notify & await features()
            # the connection goes on: a round trip to our own account
            assert "urn:xmpp:mam:2" in (await disco.get_info(jid=xmpp.boundjid.bare))["disco_info"]["features"]
        finally:
            xmpp.disconnect()
            await asyncio.wait_for(xmpp.disconnected, 5)

    asyncio.run(run())
