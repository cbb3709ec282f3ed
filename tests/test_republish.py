"""client/republish.py: at connect, a publication whose item the server already holds unchanged
is dropped; a missing, different or unreadable item is published."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from e2ee.client.republish import drop_unchanged, same_element
from e2ee.results import FetchBundle, Publish

from .xmpp_server import Accounts

SERVER_USERS = ("alice",)  # registered on this module's share of each server (tests/conftest.py)

NS = "urn:xmpp:omemo:2"


def _devices(*ids: int) -> ET.Element:
    root = ET.Element(f"{{{NS}}}devices")
    for i in ids:
        ET.SubElement(root, f"{{{NS}}}device", {"id": str(i)})
    return root


def test_same_element_compares_structure_not_formatting() -> None:
    a = _devices(1, 2)
    b = ET.fromstring(f"<devices xmlns='{NS}'>\n  <device id='1'/>\n  <device id='2'/>\n</devices>")
    assert same_element(a, b)
    assert not same_element(a, _devices(2, 1))
    assert not same_element(a, _devices(1))
    c = _devices(1, 2)
    c[0].set("label", "x")
    assert not same_element(a, c)
    d = _devices(1, 2)
    d[1].text = "text"
    assert not same_element(a, d)


def test_only_publications_the_server_holds_unchanged_are_dropped() -> None:
    same = Publish("same", "current", _devices(1), ())
    changed = Publish("changed", "current", _devices(1, 2), ())
    missing = Publish("missing", "1", _devices(3), ())
    broken = Publish("broken", "1", _devices(4), ())
    other = FetchBundle("bob@example.net", 7, NS)
    server = {"same": _devices(1), "changed": _devices(1)}
    asked: list[tuple[str, str | None]] = []

    async def fetch(node: str, item: str | None) -> ET.Element | None:
        asked.append((node, item))
        if node == "broken":
            raise ConnectionError("no answer")
        return server.get(node)

    kept = asyncio.run(drop_unchanged(fetch, [same, other, changed, missing, broken]))
    assert kept == [other, changed, missing, broken]
    assert sorted(asked) == sorted([("same", "current"), ("changed", "current"), ("missing", "1"), ("broken", "1")])


def test_a_reconnect_publishes_only_what_the_server_lacks(server: Accounts) -> None:
    """Over a real server (each kind): the first connect publishes both device lists and both bundles; a
    reconnect publishes nothing; after our OMEMO 2 bundle item was retracted on the server, the
    next connect publishes exactly that one again."""
    from e2ee.client.session import E2EESession
    from e2ee.engine import Engine
    from e2ee.storage import MemoryStorage

    engine = Engine.create(MemoryStorage(), server.jid("alice"))

    async def connect() -> tuple[list[tuple[str, str]], E2EESession]:
        session = E2EESession(engine, "alice-pw", ca_file=server.cert)
        published: list[tuple[str, str]] = []
        real = session.e2ee.pep.publish

        async def publish(effect: Publish) -> None:
            published.append((effect.node, effect.item_id))
            await real(effect)

        session.e2ee.pep.publish = publish  # type: ignore[method-assign]
        await session.start("127.0.0.1", server.port)
        return published, session

    async def run() -> None:
        first, s = await connect()
        await s.close()
        assert len(first) == 4 and {n for n, _ in first} >= {"urn:xmpp:omemo:2:bundles", "urn:xmpp:omemo:2:devices"}
        again, s = await connect()
        assert again == []
        await s.plugin["xep_0060"].retract(s.boundjid.bare, "urn:xmpp:omemo:2:bundles", str(engine.device_id))
        await s.close()
        third, s = await connect()
        await s.close()
        assert third == [("urn:xmpp:omemo:2:bundles", str(engine.device_id))]

    asyncio.run(run())
