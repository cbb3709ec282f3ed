"""client/followed.py: what was fetched and followed is fresh for FRESH_WINDOW only; a damaged
record reads as nothing fresh; the record stays bounded."""

from __future__ import annotations

from typing import Any, cast

import slixmpp

from e2ee.client.followed import FRESH_WINDOW, MAX_FOLLOWED, Followed
from e2ee.storage import MemoryStorage

NODES = ["urn:xmpp:omemo:2:devices", "eu.siacs.conversations.axolotl.devicelist"]


def _followed(storage: MemoryStorage) -> Followed:
    return Followed(cast("slixmpp.ClientXMPP", cast("Any", None)), storage)


def test_fresh_within_the_window_for_every_node_only() -> None:
    storage = MemoryStorage()
    f = _followed(storage)
    assert not f.fresh("a@x", NODES, now=1000.0)
    f.fetched("a@x", NODES[:1], 1000.0)  # one node's subscription was refused
    assert not f.fresh("a@x", NODES, now=1001.0)
    assert f.fresh("a@x", NODES[:1], now=1001.0)
    f.fetched("a@x", NODES, 1000.0)
    assert f.fresh("a@x", NODES, now=1000.0 + FRESH_WINDOW - 1)
    assert not f.fresh("a@x", NODES, now=1000.0 + FRESH_WINDOW)
    assert not f.fresh("a@x", NODES, now=999.0)  # the clock was set back
    assert _followed(storage).fresh("a@x", NODES, now=1001.0)  # kept in the storage
    f.forget("a@x")
    assert not f.fresh("a@x", NODES, now=1001.0)


def test_a_damaged_record_is_nothing_fresh_and_is_replaced() -> None:
    storage = MemoryStorage()
    f = _followed(storage)
    for raw in (b"\xff", b"[1]", b'{"jids": 3}', b'{"jids": {"a@x": {"n": "t"}}}'):
        with storage.transaction():
            storage.put("own", "followed", raw)
        assert not f.fresh("a@x", ["n"], now=1.0)
    f.fetched("a@x", ["n"], 1.0)
    assert f.fresh("a@x", ["n"], now=2.0)


def test_the_record_keeps_the_most_recently_fetched() -> None:
    f = _followed(MemoryStorage())
    for i in range(MAX_FOLLOWED + 5):
        f.fetched(f"c{i}@x", NODES, 100.0)
    f.fetched("c0@x", NODES, 100.0)  # fetched again: the newest now
    assert f.fresh("c0@x", NODES, now=101.0)
    assert not f.fresh("c5@x", NODES, now=101.0)  # c1..c4 went first, then c5 for c0
    assert f.fresh("c6@x", NODES, now=101.0) and f.fresh(f"c{MAX_FOLLOWED + 4}@x", NODES, now=101.0)
    assert len(f._load()) == MAX_FOLLOWED
