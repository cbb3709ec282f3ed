"""The PEP nodes and item ids of the OMEMO namespaces, by namespace.

Each backend (:mod:`e2ee.registry`) writes its own nodes once; the engine's
:class:`~e2ee.results.Publish`, :class:`~e2ee.results.FetchDeviceList` and
:class:`~e2ee.results.FetchBundle` effects carry them, so an embedder executes them without
knowing either namespace.
"""

from __future__ import annotations

from typing import Final

from .registry import BACKENDS, backend

__all__ = ["DEVICE_LIST_NODES", "bundle_node", "bundle_fetch_item", "bundle_publish_item", "LIST_ITEM_ID"]

#: The device-list node of each namespace.
DEVICE_LIST_NODES: Final = {b.namespace: b.device_list_node for b in BACKENDS}
#: The item id we publish device lists under; what we fetch is the newest item.
LIST_ITEM_ID: Final = "current"


def bundle_node(namespace: str, device_id: int) -> str:
    """The node of a device's bundle (OMEMO 2: one node for all; legacy: a node per device)."""
    return backend(namespace).bundle_node(device_id)


def bundle_publish_item(namespace: str, device_id: int) -> str:
    """The item id a bundle is published under."""
    return backend(namespace).bundle_publish_item(device_id)


def bundle_fetch_item(namespace: str, device_id: int) -> str | None:
    """The item to fetch; None: the node's newest item."""
    return backend(namespace).bundle_fetch_item(device_id)
