"""At connect, publish only what the server does not already hold.

:meth:`e2ee.engine.Engine.publish` returns every item that announces this device (both device
lists, both bundles).  On a reconnect they are usually on the server already, byte for byte, and
republishing a bundle of 100 prekeys costs the server far more (it stores the item) than reading
it back.  :func:`drop_unchanged` reads the current items (all in one round trip) and drops the
publications whose payload the server already has; what is missing or different is published
as before.  (The node configuration is not checked: a publication that goes out still carries
its publish-options, and one that is dropped was accepted with them before.)
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import cast

from e2ee.results import Effect, Publish

__all__ = ["drop_held", "drop_unchanged", "same_element"]


def same_element(a: ET.Element, b: ET.Element) -> bool:
    """Equal tags, attributes, text (surrounding white space aside) and children, in order."""
    if a.tag != b.tag or a.attrib != b.attrib or (a.text or "").strip() != (b.text or "").strip():
        return False
    if len(a) != len(b):
        return False
    return all(
        same_element(x, y) and (x.tail or "").strip() == (y.tail or "").strip() for x, y in zip(a, b, strict=True)
    )


async def drop_unchanged(
    fetch: Callable[[str, str | None], Awaitable[ET.Element | None]], effects: Sequence[Effect]
) -> list[Effect]:
    """``effects`` without the :class:`~e2ee.results.Publish` effects whose item the server
    already holds unchanged.  ``fetch(node, item_id)`` reads one of our own items (None when
    there is none); a failed read keeps the publication."""
    publications = [e for e in effects if isinstance(e, Publish)]
    current: list[ET.Element | None | BaseException] = await asyncio.gather(
        *(fetch(p.node, p.item_id) for p in publications), return_exceptions=True
    )
    held = {
        id(p)
        for p, item in zip(publications, current, strict=True)
        if isinstance(item, ET.Element) and same_element(item, p.payload)
    }
    return [e for e in effects if id(e) not in held]


def drop_held(held: Mapping[str, ET.Element | None], effects: Sequence[Effect]) -> list[Effect]:
    """``effects`` without the :class:`~e2ee.results.Publish` effects on a node of ``held``
    (node -> the newest item's payload the server answered, already read) whose payload the
    server holds unchanged.  For nodes whose newest item is the one that counts: a device list,
    the OpenPGP key metadata, one OpenPGP key's data (its item id is the time of publication)."""
    return [
        e
        for e in effects
        if not (
            isinstance(e, Publish)
            and isinstance(held.get(e.node), ET.Element)
            and same_element(cast("ET.Element", held[e.node]), e.payload)
        )
    ]
