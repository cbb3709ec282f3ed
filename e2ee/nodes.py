"""The PEP nodes and item ids of both OMEMO namespaces: written here once.

The engine's :class:`~e2ee.results.Publish`, :class:`~e2ee.results.FetchDeviceList` and
:class:`~e2ee.results.FetchBundle` effects carry the node (and item id) from here, so an
embedder executes them without knowing either namespace.
"""

from __future__ import annotations

from typing import Final

from .legacy.wire import NAMESPACE as LEGACY
from .omemo2.wire import NAMESPACE as OMEMO2

__all__ = ["DEVICE_LIST_NODES", "bundle_node", "bundle_fetch_item", "bundle_publish_item", "LIST_ITEM_ID"]

#: The device-list node of each namespace.
DEVICE_LIST_NODES: Final = {
    OMEMO2: "urn:xmpp:omemo:2:devices",
    LEGACY: "eu.siacs.conversations.axolotl.devicelist",
}
#: The item id we publish device lists (and legacy bundles) under; what we fetch is the newest item.
LIST_ITEM_ID: Final = "current"


def bundle_node(namespace: str, device_id: int) -> str:
    """OMEMO 2 keeps every device's bundle in one node; legacy OMEMO has a node per device."""
    return "urn:xmpp:omemo:2:bundles" if namespace == OMEMO2 else f"eu.siacs.conversations.axolotl.bundles:{device_id}"


def bundle_publish_item(namespace: str, device_id: int) -> str:
    """OMEMO 2: the item id is the device id; legacy: ``current`` (as Conversations writes it)."""
    return str(device_id) if namespace == OMEMO2 else LIST_ITEM_ID


def bundle_fetch_item(namespace: str, device_id: int) -> str | None:
    """The item to fetch: OMEMO 2 the device's item; legacy the newest item, whatever its id
    (None), since deployed clients do not all publish it as ``current``."""
    return str(device_id) if namespace == OMEMO2 else None
