"""client/republish.py: at connect, a publication whose item the server already holds unchanged
is dropped; a missing, different or unreadable item is published."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from client.republish import drop_unchanged, same_element
from e2ee.results import FetchBundle, Publish

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
