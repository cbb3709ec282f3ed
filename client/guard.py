"""A depth limit for incoming stanzas (security catalogue I3).

slixmpp's parser has no nesting limit: a stanza nested thousands of levels deep is built into a
tree and then handed to code that walks it recursively (stanza plugins, ``copy``, ``tostring`` in
log lines), which ends in ``RecursionError`` somewhere in the event loop.  The guard looks at
each stanza once, iteratively, before slixmpp builds a stanza object from it, and drops one that
is nested deeper than :data:`MAX_STANZA_DEPTH` levels below the stanza element, with one warning.

The deepest stanza this client handles is a MAM result or carbon of an OMEMO message
(``message/result/forwarded/message/encrypted/header/keys/key``: 8 levels), so the limit leaves
a wide margin.  A server limits the stanza size (Prosody: 256 KiB on c2s by default), which bounds
the memory such a stanza takes before the guard sees it.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_STANZA_DEPTH", "depth_exceeds", "install_depth_guard", "remove_depth_guard"]

log = logging.getLogger("e2ee.client.session")

#: Element levels allowed below a stanza (the stanza element itself is level 0).
MAX_STANZA_DEPTH = 64


def depth_exceeds(elem: ET.Element, limit: int = MAX_STANZA_DEPTH) -> bool:
    """Whether ``elem`` has a descendant more than ``limit`` levels below it (no recursion)."""
    level: list[ET.Element] = [elem]
    for _ in range(limit):
        level = [child for parent in level for child in parent]
        if not level:
            return False
    return any(len(e) for e in level)


def install_depth_guard(xmpp: Any) -> None:
    """Wrap ``xmpp._spawn_event`` (where slixmpp turns a parsed element into a stanza) so that
    stanzas nested too deeply are dropped and logged once each.  Idempotent."""
    original: Callable[[ET.Element], None] = xmpp._spawn_event
    if getattr(original, "_e2ee_depth_guard", False):
        return

    def spawn_event(xml: ET.Element) -> None:
        if depth_exceeds(xml):
            kind = xml.tag.rpartition("}")[2]
            log.warning(
                "dropped a %s from %s nested deeper than %d levels",
                kind,
                xml.get("from", "the server"),
                MAX_STANZA_DEPTH,
            )
            return
        original(xml)

    spawn_event._e2ee_depth_guard = True  # type: ignore[attr-defined]
    spawn_event._e2ee_original = original  # type: ignore[attr-defined]
    xmpp._spawn_event = spawn_event


def remove_depth_guard(xmpp: Any) -> None:
    """Undo :func:`install_depth_guard` (nothing happens when it is not installed)."""
    original = getattr(xmpp._spawn_event, "_e2ee_original", None)
    if original is not None:
        xmpp._spawn_event = original
