"""The stanza depth guard (catalogue I3) without a server: the boundary and the wrapping."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from e2ee.client.guard import MAX_STANZA_DEPTH, depth_exceeds, install_depth_guard


def _nested(levels: int) -> ET.Element:
    root = ET.Element("message")
    node = root
    for _ in range(levels):
        node = ET.SubElement(node, "x")
    return root


def test_the_limit_is_counted_below_the_stanza() -> None:
    assert not depth_exceeds(_nested(0))
    assert not depth_exceeds(_nested(MAX_STANZA_DEPTH))
    assert depth_exceeds(_nested(MAX_STANZA_DEPTH + 1))
    assert depth_exceeds(_nested(100_000))  # no recursion involved


def test_wide_stanzas_are_not_deep() -> None:
    root = ET.Element("message")
    for _ in range(10_000):
        ET.SubElement(ET.SubElement(root, "key"), "y")
    assert not depth_exceeds(root)


class _Stream:
    def __init__(self) -> None:
        self.spawned: list[ET.Element] = []

    def _spawn_event(self, xml: ET.Element) -> None:
        self.spawned.append(xml)


def test_the_guard_drops_deep_stanzas_and_passes_the_rest_once_installed_twice() -> None:
    stream = _Stream()
    install_depth_guard(stream)
    install_depth_guard(stream)
    ok, deep = _nested(8), _nested(MAX_STANZA_DEPTH + 1)
    stream._spawn_event(ok)
    stream._spawn_event(deep)
    assert stream.spawned == [ok]
